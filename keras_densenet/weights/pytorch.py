"""PyTorch DenseNet weights: ``torch.save`` state dicts (``.pth``) and ``.safetensors``.

Keys as torchvision and timm name them (``features.conv0``,
``features.denseblock1.denselayer1.norm1`` ..., ``classifier``); checkpoints
from before 2019 spell ``norm.1`` what later ones call ``norm1``. timm's deep
stem (``densenetblur121d``, ``densenet264d``) is ``features.conv0/norm0``,
``conv1/norm1``, ``conv2/norm2`` (our ``stem_conv1..3``/``stem_bn1..3``); a
BlurPool ``filt`` buffer, if a checkpoint carries one, must be the fixed 3x3
binomial filter and is not a weight. BN epsilon 1e-5, symmetric stem padding,
``torch`` preprocessing.
"""

import collections
import pickle
import re
import struct
import zipfile

import numpy as np

from keras_densenet.weights.base import WeightFormat


class StateDictFormat(WeightFormat):
    def detect(self, path, head):
        if head[:2] == b"\x80\x02":  # torch.save's legacy (pre-1.6) pickle format
            return True
        if not head.startswith(b"PK\x03\x04"):
            return False
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile as error:
            raise ValueError(f"{path!r} is a zip archive that cannot be opened: it is truncated "
                             f"or corrupt ({error}).") from error
        if any(name.endswith("/data.pkl") for name in names):
            return True
        raise ValueError(
            f"{path!r} is a zip archive but not a PyTorch state dict (no data.pkl); for a "
            ".keras model file, use keras.saving.load_model or pass a .weights.h5 file.")

    def read(self, path, weighted_layer_names):
        return state_dict_to_table(read_state_dict(path))


class SafetensorsFormat(WeightFormat):
    def detect(self, path, head):
        if len(head) < 9:
            return False
        (header_size,) = struct.unpack("<Q", head[:8])
        return head[8:9] == b"{" and 0 < header_size < 100_000_000

    def read(self, path, weighted_layer_names):
        from safetensors.numpy import load_file

        return state_dict_to_table(load_file(path))


STATE_DICT = StateDictFormat("torch", "PyTorch state dict (torchvision/timm keys)",
                             bn_epsilon=1e-5, stem_padding="symmetric", preprocessing="torch")
SAFETENSORS = SafetensorsFormat("safetensors", "safetensors (torchvision/timm keys)",
                                bn_epsilon=1e-5, stem_padding="symmetric", preprocessing="torch")


CHECKPOINT_KEYS = ("state_dict", "model", "model_state_dict", "state_dict_ema", "model_ema",
                   "net", "network")
"""Keys under which training checkpoints keep the state dict (timm, DeiT, Lightning, ...)."""


def read_state_dict(path):
    """The state dict (name -> tensor) saved in a ``.pth`` file; needs torch.

    Unwraps the common checkpoint wrappers: ``{"model": state_dict, "epoch": ...}``
    and the other ``CHECKPOINT_KEYS``, and the ``module.`` prefix of
    ``DataParallel``. Anything else (a list, a tensor, a pickled module) raises a
    ``ValueError`` that says what the file holds.
    """
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            f"Reading the PyTorch file {path!r} needs torch: pip install 'keras-densenet[torch]', "
            "or convert it once with `keras-densenet port` where torch is installed.") from error
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = str(error).strip().splitlines()
        raise ValueError(
            f"{path!r} holds pickled Python objects besides tensors (e.g. a whole nn.Module "
            "saved with torch.save(model)), which are not loaded because unpickling can run "
            "code; save model.state_dict() instead"
            f"{' (' + found[-1] + ')' if found else ''}.") from None
    return unwrap_state_dict(state, path)


def unwrap_state_dict(state, path):
    """The ``name -> tensor`` dict in ``state`` (what ``torch.load`` returned for ``path``)."""
    if _is_state_dict(state):
        return _strip_prefix(state, "module.")
    if isinstance(state, dict):
        for key in CHECKPOINT_KEYS:
            if _is_state_dict(state.get(key)):
                return _strip_prefix(state[key], "module.")
        raise ValueError(
            f"{path!r} holds a dict with keys {sorted(map(str, state))[:8]} but no state dict "
            f"of tensors, neither at the top nor under {list(CHECKPOINT_KEYS)}.")
    raise ValueError(f"{path!r} holds a {type(state).__name__}, not a state dict "
                     "(a dict of parameter name -> tensor).")


def _is_state_dict(value):
    return (isinstance(value, dict) and bool(value)
            and all(isinstance(k, str) and hasattr(v, "shape") for k, v in value.items()))


def _strip_prefix(state_dict, prefix):
    if all(key.startswith(prefix) for key in state_dict):
        return {key[len(prefix):]: value for key, value in state_dict.items()}
    return state_dict


# torchvision checkpoints before 2019 name "norm.1" what later ones call "norm1"
_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def normalize_keys(state_dict):
    """The state dict with old torchvision keys (``norm.1``) renamed to current ones (``norm1``)."""
    return {_OLD_KEY.sub(r"\1\2", key): value for key, value in state_dict.items()}


RDNET_KEY_PREFIXES = ("dense_stages.", "stem.stem.")
"""Keys only an RDNet state dict has (timm's ``dense_stages``, NAVER's ``stem.stem``)."""


def state_dict_to_table(state_dict):
    """A torchvision/timm DenseNet state dict -> ``WeightTable`` (OIHW kernels transposed)."""
    if any(key.startswith(RDNET_KEY_PREFIXES) for key in state_dict):
        raise ValueError("This is an RDNet state dict (timm's rdnet_*), not a DenseNet one: "
                         "build it with keras_densenet.RDNet(variant, weights=PATH).")
    tensors = {key: np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
               for key, value in normalize_keys(state_dict).items()}
    deep_stem = "features.conv1.weight" in tensors
    modules = collections.OrderedDict()
    for key in tensors:
        module, _, leaf = key.rpartition(".")
        if leaf == "filt":
            _check_blur_filter(key, tensors[key])
        elif leaf != "num_batches_tracked":
            modules.setdefault(module, None)
    table = {}
    for module in modules:
        ours = layer_name(module, deep_stem)
        if module + ".running_mean" in tensors:  # BatchNorm2d
            table[ours] = [tensors[f"{module}.{leaf}"] for leaf in
                           ("weight", "bias", "running_mean", "running_var")]
        elif tensors[module + ".weight"].ndim == 4:  # Conv2d, no bias
            table[ours] = [tensors[module + ".weight"].transpose(2, 3, 1, 0)]
        else:  # Linear
            table[ours] = [tensors[module + ".weight"].T, tensors[module + ".bias"]]
    return table


def _check_blur_filter(key, filt):
    """A BlurPool buffer holds no learned values: it must be the 3x3 binomial filter ours uses."""
    taps = np.array([1.0, 2.0, 1.0]) / 4.0
    if filt.shape[-2:] != (3, 3) or not np.allclose(filt, np.outer(taps, taps), atol=1e-6):
        raise ValueError(f"{key} is not the 3x3 binomial blur filter ([1, 2, 1] / 4 outer "
                         f"itself) that keras_densenet's BlurPool2D applies; shape {filt.shape}.")


def layer_name(module, deep_stem=False):
    """torchvision/timm module name -> ours (``features.transition1.norm`` -> ``transition1_bn``).

    ``deep_stem``: the state dict has timm's 3-conv stem, whose ``features.conv{0,1,2}`` /
    ``norm{0,1,2}`` are our ``stem_conv{1,2,3}`` / ``stem_bn{1,2,3}``.
    """
    match = re.fullmatch(r"features\.(conv|norm)([012])", module)
    if deep_stem and match:
        kind, index = match.groups()
        return f"stem_{'conv' if kind == 'conv' else 'bn'}{int(index) + 1}"
    fixed = {"features.conv0": "stem_conv", "features.norm0": "stem_bn", "classifier": "predictions"}
    if module in fixed:
        return fixed[module]
    match = re.fullmatch(r"features\.denseblock(\d+)\.denselayer(\d+)\.(norm|conv)([12])", module)
    if match:
        block, layer, kind, index = match.groups()
        return f"block{block}_layer{layer}_{'bn' if kind == 'norm' else 'conv'}{index}"
    match = re.fullmatch(r"features\.transition(\d+)\.(norm|conv)", module)
    if match:
        return f"transition{match.group(1)}_{'bn' if match.group(2) == 'norm' else 'conv'}"
    if module == "features.norm5":
        return "final_bn"
    return module
