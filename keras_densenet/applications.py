"""A drop-in for ``keras.applications.densenet``: same functions, same signatures.

    # from keras.applications.densenet import DenseNet121, preprocess_input, decode_predictions
    from keras_densenet.applications import DenseNet121, preprocess_input, decode_predictions

``DenseNet121/169/201(include_top, weights, input_tensor, input_shape, pooling,
classes, classifier_activation, name)`` take keras.applications' arguments
with its defaults: ``weights="imagenet"`` loads the very same keras.applications
file, the default input is 224x224 with the top, and with ImageNet weights and
the top the input must be 224x224x3. ``DenseNet161`` (torchvision's weights,
same preprocessing) and ``DenseNet264`` (no published weights: default
``weights=None``) follow the same signature.

What differs from keras.applications: the layer names are this package's
(``block1_layer1_conv1`` rather than ``conv2_block1_1_conv``), the model is a
``DenseNetModel`` that records its serving facts, and
``keras.config.image_data_format() == "channels_first"`` works (keras.applications'
weights are converted on load).
"""

from keras_densenet.checks import check_activation
from keras_densenet.preprocessing import decode_predictions as _decode_predictions
from keras_densenet.preprocessing import preprocess_input as _preprocess_input
from keras_densenet.presets import DenseNetImageNet

DEFAULT_SIZE = 224
MIN_SIZE = 32
IMAGENET_SOURCES = {"densenet121": "keras_applications", "densenet169": "keras_applications",
                    "densenet201": "keras_applications", "densenet161": "torchvision"}
"""Which published file ``weights="imagenet"`` means, per architecture."""


def _application(architecture, include_top, weights, input_tensor, input_shape, pooling,
                 classes, classifier_activation, name):
    import keras

    data_format = keras.config.image_data_format()
    if input_shape is None and input_tensor is None:
        size = DEFAULT_SIZE if include_top else None
        input_shape = (size, size, 3) if data_format == "channels_last" else (3, size, size)
    classifier_activation = check_activation("classifier_activation", classifier_activation)
    if weights == "imagenet" and include_top:
        if classes != 1000:
            raise ValueError('If using weights="imagenet" with include_top=True, classes should '
                             f"be 1000; got classes={classes}.")
        expected = (DEFAULT_SIZE, DEFAULT_SIZE, 3) if data_format == "channels_last" else (
            3, DEFAULT_SIZE, DEFAULT_SIZE)
        shape = tuple(input_shape) if input_shape is not None else tuple(input_tensor.shape[1:])
        if shape != expected:
            raise ValueError(f'With weights="imagenet" and include_top=True the input shape must '
                             f"be {expected}; got {shape}. Use include_top=False for other sizes.")
        if classifier_activation not in (None, "softmax"):
            raise ValueError('With weights="imagenet" and include_top=True, '
                             'classifier_activation must be None or "softmax"; got '
                             f"{classifier_activation!r}.")
    return DenseNetImageNet(
        architecture, include_top=include_top, weights=weights, input_tensor=input_tensor,
        input_shape=input_shape, pooling=pooling, classes=classes,
        activation=classifier_activation, data_format=data_format, name=name,
        weights_source=IMAGENET_SOURCES.get(architecture) if weights == "imagenet" else None)


def DenseNet121(include_top=True, weights="imagenet", input_tensor=None, input_shape=None,
                pooling=None, classes=1000, classifier_activation="softmax", name="densenet121"):
    """keras.applications.DenseNet121 (7,978,856 parameters with the top)."""
    return _application("densenet121", include_top, weights, input_tensor, input_shape, pooling,
                        classes, classifier_activation, name)


def DenseNet169(include_top=True, weights="imagenet", input_tensor=None, input_shape=None,
                pooling=None, classes=1000, classifier_activation="softmax", name="densenet169"):
    """keras.applications.DenseNet169 (14,149,480 parameters with the top)."""
    return _application("densenet169", include_top, weights, input_tensor, input_shape, pooling,
                        classes, classifier_activation, name)


def DenseNet201(include_top=True, weights="imagenet", input_tensor=None, input_shape=None,
                pooling=None, classes=1000, classifier_activation="softmax", name="densenet201"):
    """keras.applications.DenseNet201 (20,013,928 parameters with the top)."""
    return _application("densenet201", include_top, weights, input_tensor, input_shape, pooling,
                        classes, classifier_activation, name)


def DenseNet161(include_top=True, weights="imagenet", input_tensor=None, input_shape=None,
                pooling=None, classes=1000, classifier_activation="softmax", name="densenet161"):
    """DenseNet-161 (k=48, 28,681,000 parameters) in keras.applications' form; torchvision's weights."""
    return _application("densenet161", include_top, weights, input_tensor, input_shape, pooling,
                        classes, classifier_activation, name)


def DenseNet264(include_top=True, weights=None, input_tensor=None, input_shape=None,
                pooling=None, classes=1000, classifier_activation="softmax", name="densenet264"):
    """DenseNet-264 (k=32) in keras.applications' form; no weights are published."""
    return _application("densenet264", include_top, weights, input_tensor, input_shape, pooling,
                        classes, classifier_activation, name)


def preprocess_input(x, data_format=None):
    """keras.applications.densenet.preprocess_input: ``[0, 255]`` RGB -> ImageNet-normalized."""
    return _preprocess_input(x, mode="torch", data_format=data_format)


def decode_predictions(preds, top=5):
    """keras.applications.densenet.decode_predictions: ``(wordnet_id, name, score)`` per image."""
    return _decode_predictions(preds, top=top)
