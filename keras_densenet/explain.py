"""Grad-CAM: where a model looked for a class, as one heatmap per image.

    from keras_densenet.explain import grad_cam, overlay
    maps = grad_cam(model, images)                 # (batch, H, W) float32 in [0, 1]
    picture = overlay(pixels[0], maps[0])          # (H, W, 3) uint8

Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization" (ICCV 2017): with ``A`` the activations of a
convolutional layer and ``y_c`` the score of class ``c`` *before the softmax*,
each channel's weight is the spatial mean of ``dy_c / dA_k`` and the map is
``relu(sum_k w_k A_k)``. Here ``y_c`` is the top's output before its softmax or
sigmoid (the logit: a probability's gradient also carries the other classes'
scores, and vanishes where it saturates); any other top is taken as it is.
The layer is the one the model's config names (``cam_layer``: the last
activation before pooling), also inside a transfer-learned wrapper (a
Sequential or functional model with a DenseNet backbone); a config that
names none (a model saved before configs recorded it) means ``final_relu``.

Gradients are taken with the backend Keras runs on: TensorFlow's
``GradientTape``, ``jax.vjp`` or ``torch.autograd``.
"""

import numbers

import keras
import numpy as np

from keras_densenet.checks import check_number
from keras_densenet.config import model_config

FINAL_ACTIVATION = "final_relu"
"""The last activation before pooling in every DenseNet (``blocks``' layer table)."""
PROBABILITY_ACTIVATIONS = ("softmax", "sigmoid")
"""Top activations whose input (the logit) is the score that Grad-CAM differentiates."""


def grad_cam(model, images, class_index=None, layer=None):
    """One Grad-CAM heatmap per image.

    Args:
        model: a Keras model with one image input: a ``DenseNetModel``, or a
            Sequential / functional model holding one (a new head on a backbone).
        images: ``(batch, H, W, C)`` (``(batch, C, H, W)`` for a
            channels_first model), preprocessed as the model expects.
        class_index: ``None`` (default: each image's top class), an int for
            every image, or one int per image.
        layer: the name of the layer whose activations are weighted, in
            ``model`` or a model inside it; default: the ``cam_layer`` that
            the model's config records.

    Returns:
        float32 ``(batch, H, W)``: each map resized to its image (bilinear)
        and scaled to [0, 1] (a constant map gives zeros).
    """
    images = _image_batch(images)
    return heatmaps(cam_models(model, layer), images, class_index)


def heatmaps(models, images, class_index=None):
    """``grad_cam`` with the ``cam_models(model, layer)`` built once, for many batches."""
    features, head, data_format = models
    images = _image_batch(images)
    classes = int(head.output.shape[-1])
    class_index = _class_indices(class_index, len(images), classes)
    activations = keras.ops.convert_to_numpy(features(images, training=False))
    scores, pullback = vjp(lambda a: head(a, training=False), activations)
    if class_index is None:
        class_index = np.argmax(scores, axis=-1)
    gradients = pullback(np.eye(classes, dtype=scores.dtype)[class_index])
    last = data_format == "channels_last"
    weights = gradients.mean(axis=(1, 2) if last else (2, 3))  # (batch, channels)
    cams = np.maximum(np.einsum("bhwc,bc->bhw" if last else "bchw,bc->bhw", activations,
                                weights), 0)
    size = images.shape[1:3] if last else images.shape[2:]
    cams = keras.ops.convert_to_numpy(keras.ops.image.resize(
        cams[..., None], size, interpolation="bilinear", data_format="channels_last"))[..., 0]
    return _unit_range(cams.astype("float32"))


def cam_models(model, layer=None):
    """``(features, head, data_format)`` for Grad-CAM on ``model``.

    ``features``: a Keras model mapping ``model``'s images to the activations
    of ``layer`` (default: the config's ``cam_layer``); ``head``: one mapping
    those activations to the class scores before the top's softmax or sigmoid.
    Both share ``model``'s layers (and weights); a model inside ``model``
    that holds ``layer`` has its layers called one by one, so that the
    activations are a tensor of the one graph.
    """
    config = model_config(_backbone(model))
    name = layer if layer is not None else config.get("cam_layer") or (
        FINAL_ACTIVATION if _holding(model, FINAL_ACTIVATION) else None)
    if name is None:
        raise ValueError(f"model {model.name!r} records no cam_layer; pass layer=NAME.")
    if not isinstance(name, str) or not _holding(model, name):
        raise ValueError(f"layer={name!r}: no such layer in model {model.name!r} or the models "
                         "inside it.")
    if len(model.inputs) != 1:
        raise ValueError(f"grad_cam needs a model with one image input; {model.name!r} has "
                         f"{len(model.inputs)}.")
    images, (activations, scores) = _traced(model, name, strip_top=True)
    return (keras.Model(images, activations), keras.Model(activations, scores),
            config["data_format"])


def vjp(function, x):
    """``(function(x), pullback)`` as NumPy, on the backend Keras runs on.

    ``pullback(cotangent)`` (an array shaped as ``function(x)``) returns
    ``cotangent``'s vector-Jacobian product: the gradient with respect to
    ``x`` of ``sum(cotangent * function(x))``, shaped as ``x``; call it once.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = function(x)
        return y.numpy(), lambda cotangent: tape.gradient(
            y, x, output_gradients=tf.convert_to_tensor(cotangent)).numpy()
    if backend == "jax":
        import jax

        y, pullback = jax.vjp(function, jax.numpy.asarray(x))
        return np.asarray(y), lambda cotangent: np.asarray(pullback(
            jax.numpy.asarray(cotangent))[0])
    if backend == "torch":
        import torch

        x = keras.ops.convert_to_tensor(x).requires_grad_()  # on the device Keras uses
        y = function(x)
        return y.detach().cpu().numpy(), lambda cotangent: torch.autograd.grad(
            y, x, keras.ops.convert_to_tensor(cotangent))[0].cpu().numpy()
    raise ValueError(f"grad_cam runs on the tensorflow, jax and torch backends; Keras runs "
                     f"on {backend!r}.")


def overlay(image, heatmap, opacity=0.4):
    """``image`` with ``heatmap`` blended over it in ``JET`` colours, as uint8 RGB ``(H, W, 3)``.

    ``image``: uint8 ``(H, W, 3)``, or grayscale ``(H, W)`` / ``(H, W, 1)``;
    ``heatmap``: ``(H, W)`` in [0, 1] (``grad_cam``'s); ``opacity`` in [0, 1]
    (default 0.4) is the heatmap's share of each pixel.
    """
    check_number("opacity", opacity, "[0, 1]", lambda v: 0 <= v <= 1)
    image, heatmap = np.asarray(image), np.asarray(heatmap, dtype="float32")
    if image.ndim == 2:
        image = image[..., None]
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(f"image must be uint8 (H, W, 3), (H, W, 1) or (H, W); got "
                         f"{image.dtype} {image.shape}.")
    if heatmap.shape != image.shape[:2]:
        raise ValueError(f"heatmap {heatmap.shape} must have the image's height and width "
                         f"{image.shape[:2]}.")
    colours = jet(heatmap) * 255.0
    blended = (1.0 - opacity) * image.astype("float32") + opacity * colours
    return np.clip(np.rint(blended), 0, 255).astype("uint8")


def jet(values):
    """The jet colour map (blue, cyan, yellow, red) of ``values`` in [0, 1]: float ``(..., 3)``."""
    values = np.clip(np.asarray(values, dtype="float32"), 0.0, 1.0)[..., None]
    centres = np.array([0.75, 0.5, 0.25], dtype="float32")  # where red, green, blue peak
    return np.clip(1.5 - np.abs(4.0 * (values - centres)), 0.0, 1.0)


def _traced(model, name, strip_top):
    """``(inputs, [activations of layer name, outputs])``: ``model`` called layer by layer
    on new inputs; a model inside it that holds ``name`` is traced in turn, and the top's
    softmax or sigmoid is left out when ``strip_top``."""
    top = model.layers[-1] if strip_top else None
    found = []

    def call(layer, *args, **kwargs):
        if isinstance(layer, keras.Model) and _holding(layer, name):
            inputs, (activations, outputs) = _traced(layer, name, strip_top=layer is top)
            # call, not __call__: its layers join this graph one by one, not as one node
            activations, outputs = keras.Model(inputs, [activations, outputs]).call(*args)
            found.append(activations)
            return outputs
        outputs = _pre_activation(layer, *args) if layer is top else layer(*args, **kwargs)
        if layer.name == name:
            found.append(outputs)
        return outputs

    if isinstance(model, keras.Sequential):
        inputs = outputs = keras.Input(batch_shape=model.inputs[0].shape,
                                       dtype=model.inputs[0].dtype)
        for layer in model.layers:
            outputs = call(layer, outputs)
    else:
        traced = keras.models.clone_model(model, clone_function=lambda layer: layer,
                                          call_function=call)
        inputs, outputs = traced.inputs[0], traced.outputs[0]
    return inputs, (found[0], outputs)


def _pre_activation(top, inputs):
    """What ``top`` computes on ``inputs`` before a softmax or sigmoid, else its output:
    a ``Dense``'s logits (a linear copy holding its weights), a ``Softmax`` or such an
    ``Activation`` layer's input."""
    activation = top.get_config().get("activation")
    if isinstance(top, keras.layers.Softmax) or (
            isinstance(top, keras.layers.Activation) and activation in PROBABILITY_ACTIVATIONS):
        return inputs
    if isinstance(top, keras.layers.Dense) and activation in PROBABILITY_ACTIVATIONS:
        linear = keras.layers.Dense.from_config({**top.get_config(), "activation": None,
                                                 "name": f"{top.name}_logits"})
        linear.build(inputs.shape)
        linear.set_weights(top.get_weights())
        return linear(inputs)
    return top(inputs)


def _backbone(model):
    """``model`` if it records a ``densenet_config``, else the first model inside it that
    does (a transfer-learned wrapper's DenseNet), else ``model``."""
    if getattr(model, "densenet_config", None):
        return model
    inner = (_backbone(layer) for layer in model.layers if isinstance(layer, keras.Model))
    return next((found for found in inner if getattr(found, "densenet_config", None)), model)


def _holding(model, name):
    """Whether ``model`` or a model inside it has a layer named ``name``."""
    return any(layer.name == name or (isinstance(layer, keras.Model) and _holding(layer, name))
               for layer in model.layers)


def _image_batch(images):
    """``images`` as a float32 array, checked to be a batch of images."""
    images = np.asarray(images, dtype="float32")
    if images.ndim != 4:
        raise ValueError(f"images must be a batch (batch, H, W, C) or (batch, C, H, W); got "
                         f"shape {images.shape}.")
    return images


def _class_indices(class_index, batch, classes):
    """``None``, or an int array of ``batch`` class indices in [0, classes) (checked)."""
    if class_index is None:
        return None
    indices = [class_index] * batch if isinstance(class_index, numbers.Integral) else (
        list(class_index) if isinstance(class_index, (list, tuple, np.ndarray)) else None)
    if indices is None or len(indices) != batch or not all(
            isinstance(i, numbers.Integral) and not isinstance(i, bool) and 0 <= i < classes
            for i in indices):
        raise ValueError(f"class_index must be None, an int in [0, {classes}) or {batch} such "
                         f"ints (one per image); got {class_index!r}.")
    return np.asarray(indices, dtype="int64")


def _unit_range(maps):
    """Each ``(H, W)`` map of ``maps`` scaled to [0, 1]; a constant map becomes zeros."""
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1), 0).astype("float32")
