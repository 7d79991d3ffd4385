"""Readers for the weight files DenseNets are published in.

Each reader turns a file into a ``WeightTable``: our layer names (see
``keras_densenet.blocks``) mapped to lists of NumPy arrays in Keras order
(conv: kernel ``(kh, kw, in, out)``; BN: gamma, beta, moving mean, moving
variance; Dense: kernel ``(in, out)``, bias). ``detect`` tells the format of a
file from its content, and ``FORMATS`` holds what each format needs of the
model (BN epsilon, stem padding, preprocessing).
"""

import collections
import re
import struct
import zipfile

import numpy as np

Format = collections.namedtuple("Format", "name description bn_epsilon stem_padding preprocessing")
FORMATS = {
    "keras3": Format("keras3", "Keras 3 .weights.h5 (keras-densenet's own)", None, None, None),
    "keras_applications": Format(
        "keras_applications", "Keras 2 h5 of keras.applications (named layers)",
        1.001e-5, "symmetric", "torch"),
    "original_keras": Format(
        "original_keras", "Keras 2 h5 of the original Keras DenseNet release (auto-named layers)",
        1.1e-5, "same", "caffe_bgr"),
    "torch": Format("torch", "PyTorch state dict (torchvision/timm keys)", 1e-5, "symmetric",
                    "torch"),
    "safetensors": Format("safetensors", "safetensors (torchvision/timm keys)", 1e-5,
                          "symmetric", "torch"),
}

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
KERAS_APPLICATIONS_LAYER = re.compile(r"^(conv1/(conv|bn)|conv\d+_block\d+_\d_(conv|bn)|pool\d+_(conv|bn)|bn)$")


def detect(path):
    """The ``FORMATS`` key of the weights file at ``path``; ``ValueError`` if unknown."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head.startswith(HDF5_SIGNATURE):
        names = _h5_layer_names(path)
        if names is None:
            return "keras3"
        if any(KERAS_APPLICATIONS_LAYER.match(n) for n in names):
            return "keras_applications"
        return "original_keras"
    if head.startswith(b"PK\x03\x04"):
        return _zip_format(path)
    if head[:2] == b"\x80\x02":  # torch.save's legacy (pre-1.6) pickle format
        return "torch"
    if len(head) >= 9:
        (header_size,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and 0 < header_size < 100_000_000:
            return "safetensors"
    raise ValueError(
        f"{path!r} is not a weights file this package reads: expected a Keras h5 "
        "(.h5/.weights.h5), a PyTorch state dict (.pth) or a .safetensors file.")


def _zip_format(path):
    """``"torch"`` for a zip written by ``torch.save``; ``ValueError`` for any other zip."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile as error:
        raise ValueError(f"{path!r} is a zip archive that cannot be opened: it is truncated "
                         f"or corrupt ({error}).") from error
    if any(name.endswith("/data.pkl") for name in names):
        return "torch"
    raise ValueError(
        f"{path!r} is a zip archive but not a PyTorch state dict (no data.pkl); for a "
        ".keras model file, use keras.saving.load_model or pass a .weights.h5 file.")


def read(path, file_format, weighted_layer_names):
    """The ``WeightTable`` (dict name -> arrays) of a non-Keras-3 file.

    ``weighted_layer_names`` (our model's weighted layers, in topological order)
    is needed for the original Keras release, whose layers are matched by order.
    Raises ``ValueError`` when the file cannot be parsed (truncated, corrupt).
    """
    readers = {"keras_applications": _read_keras_applications,
               "original_keras": _read_original_keras, "torch": _read_torch,
               "safetensors": _read_safetensors}
    try:
        return readers[file_format](path, weighted_layer_names)
    except ImportError:
        raise
    except Exception as error:  # h5py, torch and safetensors each raise their own types
        raise ValueError(
            f"{path!r} could not be read as {FORMATS[file_format].description}: the file is "
            f"truncated or corrupt ({type(error).__name__}: {error}).") from error


def _read_keras_applications(path, weighted_layer_names):
    return _rename(_legacy_h5_layers(path), _keras_applications_name)


def _read_original_keras(path, weighted_layer_names):
    """Auto-named layers, paired with ours in topological order.

    A file with one layer more than the model, a Dense last, is a file with
    the classifier for a model without; layers beyond ours keep a
    ``file layer N`` name so that the loader reports them.
    """
    layers = [arrays for arrays in _legacy_h5_layers(path).values() if arrays]
    names = list(weighted_layer_names)
    if len(layers) == len(names) + 1 and len(layers[-1]) == 2 and layers[-1][0].ndim == 2:
        names.append("predictions")
    names += [f"file layer {index + 1}" for index in range(len(names), len(layers))]
    return dict(zip(names, layers))


def _read_torch(path, weighted_layer_names):
    return torch_state_dict_to_table(_load_torch(path))


def _read_safetensors(path, weighted_layer_names):
    from safetensors.numpy import load_file

    return torch_state_dict_to_table(load_file(path))


def _h5_layer_names(path):
    """The ``layer_names`` of a Keras 2 h5 file, or ``None`` for a Keras 3 one."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            root = _keras2_root(h5)
            if "layer_names" not in root.attrs:
                return None
            return [_text(name) for name in root.attrs["layer_names"]]
    except OSError as error:
        raise ValueError(f"{path!r} is an HDF5 file that cannot be opened: it is truncated "
                         f"or corrupt ({error}).") from error


def _legacy_h5_layers(path):
    """Keras 2 h5: layer name -> weight arrays, in the file's (topological) layer order."""
    import h5py

    layers = {}
    with h5py.File(path, "r") as h5:
        root = _keras2_root(h5)
        for name in (_text(n) for n in root.attrs["layer_names"]):
            group = root[name]
            layers[name] = [np.asarray(group[_text(w)]) for w in group.attrs["weight_names"]]
    return layers


def _keras2_root(h5):
    """The group holding the layers: full-model files nest them under ``model_weights``."""
    return h5["model_weights"] if "model_weights" in h5 else h5


def _keras_applications_name(name):
    """keras.applications layer name -> ours (``conv3_block2_1_conv`` -> ``block2_layer2_conv1``)."""
    fixed = {"conv1/conv": "stem_conv", "conv1/bn": "stem_bn",  # Keras 2 names
             "conv1_conv": "stem_conv", "conv1_bn": "stem_bn",  # Keras 3 names
             "bn": "final_bn", "predictions": "predictions"}
    if name in fixed:
        return fixed[name]
    match = re.fullmatch(r"conv(\d+)_block(\d+)_(\d)_(conv|bn)", name)
    if match:
        stage, layer, part, kind = match.groups()
        ours = {("0", "bn"): "bn1", ("1", "conv"): "conv1", ("1", "bn"): "bn2",
                ("2", "conv"): "conv2"}[(part, kind)]
        return f"block{int(stage) - 1}_layer{layer}_{ours}"
    match = re.fullmatch(r"pool(\d+)_(conv|bn)", name)
    if match:
        return f"transition{int(match.group(1)) - 1}_{match.group(2)}"
    return name  # weightless or unknown layers: reported by the loader if they hold weights


# torchvision checkpoints before 2019 name "norm.1" what later ones call "norm1"
_OLD_TORCH_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def normalize_torch_keys(state_dict):
    """The state dict with old torchvision keys (``norm.1``) renamed to current ones (``norm1``)."""
    return {_OLD_TORCH_KEY.sub(r"\1\2", key): value for key, value in state_dict.items()}


def torch_state_dict_to_table(state_dict):
    """A torchvision/timm DenseNet state dict -> ``WeightTable`` (OIHW kernels transposed)."""
    tensors = {key: np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
               for key, value in normalize_torch_keys(state_dict).items()}
    modules = collections.OrderedDict()
    for key in tensors:
        module, _, leaf = key.rpartition(".")
        if leaf != "num_batches_tracked":
            modules.setdefault(module, None)
    table = {}
    for module in modules:
        ours = _torch_module_name(module)
        if module + ".running_mean" in tensors:  # BatchNorm2d
            table[ours] = [tensors[f"{module}.{leaf}"] for leaf in
                           ("weight", "bias", "running_mean", "running_var")]
        elif tensors[module + ".weight"].ndim == 4:  # Conv2d, no bias
            table[ours] = [tensors[module + ".weight"].transpose(2, 3, 1, 0)]
        else:  # Linear
            table[ours] = [tensors[module + ".weight"].T, tensors[module + ".bias"]]
    return table


def _torch_module_name(module):
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
    match = re.fullmatch(r"features\.norm(\d+)", module)
    if match:
        return "final_bn"
    return module


def _rename(layers, rename):
    return {rename(name): arrays for name, arrays in layers.items() if arrays}


def _load_torch(path):
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            f"Reading the PyTorch file {path!r} needs torch: pip install 'keras-densenet[torch]', "
            "or convert it once with `keras-densenet port` where torch is installed.") from error
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def _text(value):
    return value.decode("utf8") if isinstance(value, bytes) else str(value)
