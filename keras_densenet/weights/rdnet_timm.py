"""timm's RDNet state dicts (``naver-ai/rdnet_*`` on the Hugging Face hub) -> our RDNet layers.

timm's keys name the modules of ``timm.models.rdnet.RDNet``: ``stem.{0,1}`` (patch
conv, LayerNorm), ``dense_stages.{i}.{0,1}`` (transition LayerNorm and conv, stages
after the first), ``dense_stages.{i}.{k}.dense_block{j}.gamma`` (layer scale) and
``.layers.layers.{0,1,2,4,5.fc}`` (depthwise conv, LayerNorm, 1x1 convs, the
squeeze-excitation conv), ``head.norm`` and ``head.fc``. The original NAVER
checkpoints (``stem.stem.*``, wrapped in ``{"model": ...}``) are read too, as timm
reads them.
"""

import os
import re

import numpy as np

from keras_densenet.utils import check_input_path
from keras_densenet.weights.assignment import assign, weighted_layers
from keras_densenet.weights.pytorch import (RDNET_KEY_PREFIXES, SAFETENSORS, STATE_DICT,
                                           read_state_dict)

_BLOCK_PARTS = {"0": "dwconv", "1": "norm", "2": "conv1", "4": "conv2", "5.fc": "se_conv"}
_KEY = re.compile(
    r"(?P<stem>stem\.(?P<stem_index>[01]))"
    r"|dense_stages\.(?P<stage>\d+)\.(?:(?P<transition>[01])|\d+\.dense_block(?P<block>\d+)\."
    r"(?:(?P<gamma>gamma)|layers\.layers\.(?P<part>[0-5](?:\.fc)?)))"
    r"|head\.(?P<head>norm|fc)")
HEAD_LAYERS = ("head_norm", "predictions")
"""Layers of the head, which a model built without it (include_top=False) lacks."""


def is_rdnet_state_dict(keys):
    """Whether the state dict ``keys`` are timm's (or NAVER's) RDNet keys."""
    return any(key.startswith(RDNET_KEY_PREFIXES) for key in keys)


def state_dict_to_table(state_dict):
    """timm's RDNet state dict -> ``{layer name: [arrays in Keras weight order]}``.

    Convs ``(out, in, kh, kw)`` -> ``(kh, kw, in, out)``, depthwise
    ``(C, 1, kh, kw)`` -> ``(kh, kw, C, 1)``, each followed by its bias;
    LayerNorm weight, bias; layer scale gamma; ``head.fc`` ``(classes, C)`` ->
    ``(C, classes)``, bias. ``ValueError`` for a state dict of another net, a key
    that is not RDNet's, or a layer missing its weight or bias.
    """
    if not is_rdnet_state_dict(state_dict):
        raise ValueError(f"The state dict is not timm's RDNet: it has no dense_stages.* keys "
                         f"(its first keys: {', '.join(sorted(state_dict)[:3])}).")
    tensors = {}
    for key, value in state_dict.items():
        key = key.replace("stem.stem.", "stem.")
        tensors[key] = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach")
                                  else value)
    parts = {}
    for key in tensors:
        module, _, leaf = key.rpartition(".")
        name = layer_name(key if leaf == "gamma" else module)
        if name is None or leaf not in ("weight", "bias", "gamma"):
            raise ValueError(f"{key} is not a key of timm's RDNet state dict (stem.*, "
                             "dense_stages.*, head.*).")
        parts.setdefault(name, {})[leaf] = tensors[key]
    table = {}
    for name, leaves in parts.items():
        expected = ("gamma",) if name.endswith("_layer_scale") else ("weight", "bias")
        missing = [leaf for leaf in expected if leaf not in leaves]
        if missing:
            raise ValueError(f"timm's RDNet state dict lacks the {' and '.join(missing)} of "
                             f"the layer {name}.")
        arrays = [leaves[leaf] for leaf in expected]
        if arrays[0].ndim == 4:
            order = (2, 3, 0, 1) if name.endswith("_dwconv") else (2, 3, 1, 0)
            arrays[0] = arrays[0].transpose(order)
        elif name == "predictions":
            arrays[0] = arrays[0].T
        table[name] = arrays
    return table


def layer_name(module):
    """timm's RDNet module (or gamma parameter) path -> our layer name, ``None`` if not RDNet's.

    ``stem.0`` -> ``stem_conv``; ``dense_stages.1.0`` -> ``stage1_transition_norm``;
    ``dense_stages.1.2.dense_block0.layers.layers.5.fc`` -> ``stage1_block0_se_conv``;
    ``dense_stages.0.0.dense_block2.gamma`` -> ``stage0_block2_layer_scale``;
    ``head.fc`` -> ``predictions``.
    """
    match = _KEY.fullmatch(module)
    if match is None:
        return None
    found = match.groupdict()
    if found["stem"]:
        return "stem_conv" if found["stem_index"] == "0" else "stem_norm"
    if found["head"]:
        return "head_norm" if found["head"] == "norm" else "predictions"
    stage = f"stage{found['stage']}"
    if found["transition"]:
        return f"{stage}_transition_{'norm' if found['transition'] == '0' else 'conv'}"
    block = f"{stage}_block{found['block']}"
    if found["gamma"]:
        return f"{block}_layer_scale"
    part = _BLOCK_PARTS.get(found["part"])
    return f"{block}_{part}" if part else None


def read_rdnet_state_dict(path):
    """The state dict of a ``.safetensors``, ``.pth`` or ``pytorch_model.bin`` file (by content).

    Pickles are read with ``torch.load(weights_only=True)`` only (needs torch);
    safetensors with the ``safetensors`` package. ``ValueError`` for a missing
    file, one of another format or a corrupt one.
    """
    check_input_path(path, "path")
    path = os.fspath(path)
    with open(path, "rb") as handle:
        head = handle.read(16)
    try:
        if SAFETENSORS.detect(path, head):
            from safetensors.numpy import load_file

            return load_file(path)
        if STATE_DICT.detect(path, head):
            return read_state_dict(path)
    except (ImportError, ValueError):
        raise
    except Exception as error:  # torch and safetensors raise their own types
        raise ValueError(f"{path!r} could not be read as a timm state dict: the file is "
                         f"truncated or corrupt ({type(error).__name__}: {error}).") from error
    raise ValueError(f"{path!r} is neither a .safetensors file nor a PyTorch state dict "
                     "(.pth, pytorch_model.bin).")


def load_rdnet_weights(model, path):
    """Assign the timm RDNet state dict in ``path`` to ``model`` (an ``RDNet``), by layer name.

    All or nothing: ``ValueError`` (the model left untouched) when a layer of the
    model is missing from the file, a shape differs, or the file has layers the
    model lacks, except the head (``HEAD_LAYERS``) of a model built without it.
    """
    table = state_dict_to_table(read_rdnet_state_dict(path))
    present = set(weighted_layers(model))
    table = {name: arrays for name, arrays in table.items()
             if name in present or name not in HEAD_LAYERS}
    assign(model, table, source=f"{path!r} (timm RDNet state dict)")
