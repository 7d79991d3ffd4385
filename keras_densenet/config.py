"""Reading what a model records about itself: ``model_config`` and its keys.

Every model this package builds is a ``model.DenseNetModel`` holding a
``densenet_config`` dict (see ``CONFIG_KEYS``); ``model_config`` reads it from
that model, from a model that wraps one (a fine-tuned backbone with a new
head), or derives one from the layers of a model saved before configs existed.
"""

import re

from keras_densenet.architectures import DEFAULT_EVAL
from keras_densenet.arguments import Architecture

CONFIG_KEYS = ("architecture", "published_name", "data_format", "input_shape", "preprocessing",
               "weights_source", "class_names", "crop_pct", "interpolation", "pyramid",
               "input_normalization", "cam_layer", "multi_label", "thresholds", "memory_efficient")
"""The keys of ``DenseNetModel.densenet_config``:

* ``architecture``: the checked ``arguments.Architecture`` fields (``None`` when not recorded);
* ``published_name``: ``"densenet121"`` etc. (``architectures.VARIANTS``), or ``None``;
* ``data_format``, ``input_shape`` (``H``/``W`` may be ``None``);
* ``preprocessing``: the ``preprocess_input`` mode the weights expect
  (``"torch"``, ``"caffe_bgr"``), ``None`` if unknown;
* ``weights_source``: ``None`` (random), a ``weights.SOURCES`` name, or ``"file"``;
* ``class_names``: list of names, or ``None`` (ImageNet's with 1000 classes);
* ``crop_pct``, ``interpolation``: the eval transform (resize the shorter side to
  ``size / crop_pct`` with ``interpolation``, center-crop ``size``);
* ``pyramid``: ``{"P2": layer name, ...}`` of every dense block's output by stride
  (with ``memory_efficient="full"`` only the last block's; ``keras_densenet.features``);
* ``input_normalization``: what ``preprocess_input`` does for the input's channel count
  (``preprocessing.normalization``: ``reverse_channels``, ``scale``, ``offset``), or ``None``;
* ``cam_layer``: the last activation before pooling (``"final_relu"``), for Grad-CAM;
* ``multi_label``: ``True`` for independent sigmoid outputs (one per class), else ``False``;
* ``thresholds``: with ``multi_label``, one decision threshold per class, or ``None``;
* ``memory_efficient``: an RDNet's memory mode (``rdnet.RDNet``); only RDNets record it
  here, a DenseNet's is a field of ``architecture``.
"""
DEFAULTS = {"input_normalization": None, "cam_layer": "final_relu", "multi_label": False,
            "thresholds": None}
"""Values of the keys that models saved by keras-densenet 0.2 do not record."""


def model_config(model):
    """The ``densenet_config`` of ``model`` (a copy, every ``CONFIG_KEYS`` key), for any
    model this package made.

    A ``DenseNetModel`` returns what it recorded. A functional model that
    wraps one (e.g. a fine-tuned backbone with a new head) returns the inner
    config with the outer input shape. A model saved by keras-densenet 0.1
    (before configs were recorded) gets one derived from its layers: data
    format from its convolutions, pyramid from its block names, preprocessing
    ``None``.
    """
    config = getattr(model, "densenet_config", None)
    if config:
        return {**DEFAULTS, **config}
    inner = [layer for layer in model.layers if getattr(layer, "densenet_config", None)]
    if inner:
        config = model_config(inner[0])
        config["input_shape"] = list(model.inputs[0].shape[1:])
        return config
    return _legacy_config(model)


def min_image_size(config):
    """Smallest height/width the recorded architecture takes (``2 ** downsamplings``),
    or ``None`` when ``config`` records no architecture."""
    architecture = (config or {}).get("architecture")
    return 2 ** Architecture(**architecture).downsamplings if architecture else None


def _legacy_config(model):
    import keras

    data_format = next((layer.data_format for layer in model.layers
                        if isinstance(layer, keras.layers.Conv2D)), None)
    if data_format is None:
        raise ValueError(f"Model {model.name!r} has no convolution: is it a keras_densenet "
                         "DenseNet?")
    last_layer = {}
    for layer in model.layers:
        match = re.fullmatch(r"block(\d+)_(?:layer(\d+)_concat|concat)", layer.name)
        if match:
            block, index = int(match.group(1)), int(match.group(2) or 10**9)
            if index >= last_layer.get(block, (0, ""))[0]:
                last_layer[block] = (index, layer.name)
    first_level = 2 if any(layer.name == "stem_pool" for layer in model.layers) else 0
    names = {layer.name for layer in model.layers}
    return {
        "architecture": None, "published_name": None, "data_format": data_format,
        "input_shape": list(model.inputs[0].shape[1:]), "preprocessing": None,
        "weights_source": None, "class_names": None, **DEFAULT_EVAL,
        "pyramid": {f"P{first_level + block - 1}": name
                    for block, (_, name) in sorted(last_layer.items())},
        **DEFAULTS, "cam_layer": DEFAULTS["cam_layer"] if DEFAULTS["cam_layer"] in names else None,
    }
