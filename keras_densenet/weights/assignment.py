"""Assigning a weight table to a model: the one gate every weight format goes through.

A ``WeightTable`` is ``{layer name: [arrays in Keras weight order]}``. ``assign``
adapts the input convolution to the model's channel count, checks that every
weighted layer fits and every value is finite, and only then sets the
weights: all or nothing. Nothing here imports Keras at import time.
"""

import math

import numpy as np


def assign(model, table, source="the weights file"):
    """Set every weighted layer of ``model`` from ``table`` (name -> arrays), all or nothing.

    The kernel of the input convolution (``input_convolution``) is adapted to
    the model's input channels when the file's has 3 and the model's another
    count (``adapt_input_kernel``). Only the classifier (``predictions``) may
    be missing from the model (include_top=False); any other difference, or
    a NaN or infinity among the values to assign, raises ``ValueError``
    before any weight is set.
    """
    weighted = list(weighted_layers(model).values())
    table = _adapted_to_input(model, table)
    problems = []
    for layer in weighted:
        expected = [tuple(w.shape) for w in layer.get_weights()]
        found = [tuple(a.shape) for a in table.get(layer.name, [])]
        if layer.name not in table:
            problems.append(f"{layer.name}: missing from the file")
        elif found != expected:
            problems.append(f"{layer.name}: model has {expected}, file has {found}")
    extra = sorted(set(table) - {layer.name for layer in weighted} - {"predictions"})
    if problems or extra:
        raise ValueError(
            f"The weights in {source} do not fit model {model.name!r}: the model has "
            f"{describe(model)}, the file {len(table)} ({_count(table.values())} values). "
            + ("First mismatches: " + "; ".join(problems[:3]) + ". " if problems else "")
            + (f"Layers the model lacks: {', '.join(extra[:5])}. " if extra else "")
            + "Build the architecture the file was made for.")
    for layer in weighted:
        for variable, array in zip(layer.weights, table[layer.name]):
            bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
            if bad:
                raise ValueError(
                    f"The weights in {source} hold {bad} non-finite value{'s' * (bad > 1)} "
                    f"(NaN or infinity) in {layer.name}/{variable.name} "
                    f"{tuple(array.shape)}: the file is damaged or its training diverged; "
                    "nothing was loaded.")
    for layer in weighted:
        layer.set_weights(table[layer.name])


def weighted_layers(model):
    """``{name: layer}`` of every layer of ``model`` holding weights, nested ones included
    (a nested model is not one itself: its layers are), in topological order."""
    import keras

    return {layer.name: layer for layer in model._flatten_layers(include_self=False)
            if layer.weights and not isinstance(layer, keras.Model)}


def input_convolution(model):
    """The weighted layer that receives ``model``'s input image (through weightless
    layers such as the stem's padding), found in the model's graph; ``None`` if
    that is not one convolution (a 4-D kernel)."""
    weighted = weighted_layers(model)
    frontier = [tensor._keras_history.operation for tensor in model.inputs]
    seen = set()
    while frontier:
        operation = frontier.pop(0)
        for node in operation._outbound_nodes:
            consumer = node.operation
            if id(consumer) in seen:
                continue
            seen.add(id(consumer))
            if consumer.weights:
                is_conv = (weighted.get(consumer.name) is consumer
                           and len(consumer.weights[0].shape) == 4)
                return consumer if is_conv else None
            frontier.append(consumer)
    return None


def adapt_input_kernel(kernel, channels):
    """A Keras conv kernel ``(kh, kw, 3, filters)`` for ``channels`` input channels, as timm's
    ``adapt_input_conv`` adapts pretrained weights.

    1 channel: the sum over the RGB axis (a gray image then gives exactly what its
    RGB copy gives). Any other count: the RGB kernel repeated ``ceil(channels / 3)``
    times along the input axis, cut to ``channels``, scaled by ``3 / channels``
    (2 channels: R and G, times 1.5). Computed in float32, returned in the
    kernel's dtype.
    """
    dtype = kernel.dtype
    kernel = np.asarray(kernel, dtype="float32")
    base = kernel.shape[2]
    if channels == base:
        return kernel.astype(dtype)
    if channels == 1:
        return kernel.sum(axis=2, keepdims=True).astype(dtype)
    repeated = np.tile(kernel, (1, 1, math.ceil(channels / base), 1))[:, :, :channels]
    return (repeated * (base / channels)).astype(dtype)


def _adapted_to_input(model, table):
    """``table`` with the input convolution's kernel adapted to the model's input
    channels, where the file's kernel has 3 and the model's another count."""
    layer = input_convolution(model)
    if layer is None or not table.get(layer.name):
        return table
    kernel, *rest = table[layer.name]
    channels = layer.weights[0].shape[2]
    if kernel.ndim != 4 or kernel.shape[2] != 3 or channels == 3:
        return table
    return {**table, layer.name: [adapt_input_kernel(kernel, channels), *rest]}


def describe(model):
    """``"N weighted layers (V values)"`` of ``model``."""
    weighted = weighted_layers(model).values()
    return f"{len(weighted)} weighted layers ({_count(l.get_weights() for l in weighted)} values)"


def _count(arrays_lists):
    return sum(int(np.prod(a.shape)) for arrays in arrays_lists for a in arrays)
