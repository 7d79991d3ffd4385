"""Inference-optimized DenseNets: fold each BatchNormalization into the conv before it.

DenseNet is pre-activation (BN-ReLU-Conv), so most BNs follow a concatenation
and cannot be folded. Two kinds do follow a convolution directly and fold
exactly (``W' = W * s``, ``b' = beta - mean * s`` with
``s = gamma / sqrt(var + eps)``):

* ``block{b}_layer{l}_bn2`` after the 1x1 bottleneck ``block{b}_layer{l}_conv1``
  (half of all BNs in a DenseNet-BC);
* ``stem_bn`` after ``stem_conv`` (ImageNet stem).

The result is a new functional model (the original is untouched) in which
each such conv has a bias and the BN is gone; its outputs equal the
original's in inference mode up to float rounding. It is for inference only:
training it would train a different model.
"""

import keras
import numpy as np

from keras_densenet.config import model_config


def foldable_pairs(model):
    """``{bn_layer_name: conv_layer_name}`` for every BN fed directly by a bias-less conv."""
    pairs = {}
    for layer in model.layers:
        # Exact classes: the memory_efficient subclasses read lists of maps and are not folded.
        if type(layer) is not keras.layers.BatchNormalization:
            continue
        source = layer.input._keras_history.operation
        if (type(source) is keras.layers.Conv2D and not source.use_bias
                and len(source._outbound_nodes) == 1):
            pairs[layer.name] = source.name
    return pairs


def fold_batch_norms(model):
    """A copy of ``model`` with every foldable BN folded into its conv (see module doc).

    Args:
        model: a functional DenseNet (any data format, any backend).

    Returns:
        A new ``keras.Model`` with the same inputs/outputs shapes and layer
        names, minus the folded BN layers, whose convs gain a bias.
    """
    pairs = foldable_pairs(model)
    folded_convs = {conv: model.get_layer(bn) for bn, conv in pairs.items()}

    def clone(layer):
        config = layer.get_config()
        if layer.name in folded_convs:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    def call(layer, *args, **kwargs):
        if layer.name in pairs:  # the BN disappears: its effect lives in the conv
            return args[0]
        return layer(*args, **kwargs)

    fused = keras.models.clone_model(model, clone_function=clone, call_function=call)
    if getattr(model, "densenet_config", None):
        fused.update_config(**model_config(model))
    for layer in model.layers:
        if layer.name in pairs or not layer.weights:
            continue
        target = fused.get_layer(layer.name)
        if layer.name in folded_convs:
            target.set_weights(_fold(layer, folded_convs[layer.name]))
        else:
            target.set_weights(layer.get_weights())
    return fused


def _fold(conv, bn):
    (kernel,) = conv.get_weights()
    gamma, beta, mean, variance = (np.asarray(w, dtype="float64") for w in bn.get_weights())
    scale = gamma / np.sqrt(variance + bn.epsilon)
    return [(kernel * scale).astype(kernel.dtype), (beta - mean * scale).astype(kernel.dtype)]
