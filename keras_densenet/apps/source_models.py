"""The implementations published weights come from, to check converted weights against.

``REFERENCES`` maps each weight format (``keras_densenet.weights.FORMATS``) to a
function ``(path, architecture, include_top, images) -> outputs`` that runs the
source implementation on ``(batch, H, W, 3)`` float32 images with the file's
weights: logits ``(batch, 1000)`` with the top, else ``(batch, h, w, C)``
features after the final BN-ReLU. ``keras-densenet port`` prints its largest
difference from ours; the tests use the same functions. Two of the sources
cannot be installed, so they are rebuilt here (the tests write their
reference files with them too):

* ``original_keras_densenet``: the original Keras (2) DenseNet of the v3.0
  weight release, rebuilt in ``tf_keras`` with auto-named layers, BN epsilon
  1.1e-5 and 'same' stem padding, so it writes and reads the release's h5 layout.
* ``torch_densenet``: torchvision's DenseNet (module names, epsilon 1e-5,
  symmetric stem); ``torchvision.models`` is used instead when it is installed.

keras.applications needs no copy: ``tf_keras.applications`` is the real thing;
nor do timm (``timm.create_model``, for ``densenetblur121d`` and any timm
state dict) and keras-hub (``DenseNetBackbone`` / ``DenseNetImageClassifier``
``.from_preset``).
"""

import numpy as np

from keras_densenet.architectures import RDNET_VARIANTS, VARIANTS


def _sizes(architecture):
    """``(layers per block, growth rate, stem filters)`` of an ImageNet variant."""
    variant = VARIANTS[architecture]
    return variant.nb_layers_per_block, variant.growth_rate, variant.nb_filter


def original_keras_densenet(architecture, include_top=True, input_shape=(224, 224, 3),
                            classes=1000):
    """The original Keras DenseNet-BC ImageNet model, in ``tf_keras`` (logits out)."""
    import tf_keras
    from tf_keras import layers

    blocks, growth_rate, nb_filter = _sizes(architecture)

    def bn_relu(x):
        x = layers.BatchNormalization(axis=-1, epsilon=1.1e-5)(x)
        return layers.Activation("relu")(x)

    inputs = layers.Input(input_shape)
    x = layers.Conv2D(nb_filter, 7, strides=2, padding="same", use_bias=False)(inputs)
    x = layers.MaxPooling2D(3, strides=2, padding="same")(bn_relu(x))
    for index, count in enumerate(blocks):
        for _ in range(count):
            y = layers.Conv2D(4 * growth_rate, 1, use_bias=False)(bn_relu(x))
            y = layers.Conv2D(growth_rate, 3, padding="same", use_bias=False)(bn_relu(y))
            x = layers.concatenate([x, y], axis=-1)
            nb_filter += growth_rate
        if index < len(blocks) - 1:
            nb_filter = int(nb_filter * 0.5)
            x = layers.Conv2D(nb_filter, 1, use_bias=False)(bn_relu(x))
            x = layers.AveragePooling2D(2, strides=2)(x)
    x = bn_relu(x)
    if include_top:
        x = layers.GlobalAveragePooling2D()(x)
        x = layers.Dense(classes)(x)
    return tf_keras.Model(inputs, x)


def torch_densenet(architecture, classes=1000):
    """torchvision's DenseNet for ``architecture`` (torchvision's own when installed)."""
    try:
        import torchvision

        return getattr(torchvision.models, architecture)(weights=None, num_classes=classes)
    except (ImportError, AttributeError, RuntimeError):
        return _torch_densenet(*_sizes(architecture), classes=classes)


def timm_model(name, state_dict=None, classes=1000):
    """timm's own DenseNet ``name`` (e.g. ``"densenetblur121d"``), in eval mode, with
    ``state_dict`` loaded (strictly) when given, else timm's random initialization.

    Raises ``ImportError`` when timm does not import (not installed, or a
    torchvision built for another torch, which fails with a ``RuntimeError``).
    """
    try:
        import timm
    except RuntimeError as error:
        raise ImportError(f"timm does not import: {' '.join(str(error).split())}") from None
    model = timm.create_model(name, pretrained=False, num_classes=classes)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return model.eval()


def timm_outputs(path, architecture, include_top, images):
    """timm's DenseNet ``architecture`` with the state dict of a ``.pth``/``.safetensors`` file."""
    import torch

    from keras_densenet.weights import pytorch

    state = _read_state_dict(path)
    reference = timm_model(architecture, pytorch.normalize_keys(state))
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        if include_top:
            return reference(x).numpy()
        return reference.forward_features(x).numpy().transpose(0, 2, 3, 1)


def _read_state_dict(path):
    from keras_densenet.weights import pytorch

    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    return pytorch.read_state_dict(path)


def keras_hub_outputs(path, architecture, include_top, images):
    """keras-hub's own DenseNet loaded from the preset directory ``path`` (logits or features)."""
    from keras_densenet.weights import keras_hub

    import keras

    reference = keras_hub._load(path)
    if not include_top and hasattr(reference, "backbone"):
        reference = reference.backbone
    return keras.ops.convert_to_numpy(reference(images, training=False))


def _torch_densenet(blocks, growth_rate, nb_filter, classes):
    import collections

    import torch
    from torch import nn

    class DenseLayer(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.norm1 = nn.BatchNorm2d(channels)
            self.relu1 = nn.ReLU()
            self.conv1 = nn.Conv2d(channels, 4 * growth_rate, 1, bias=False)
            self.norm2 = nn.BatchNorm2d(4 * growth_rate)
            self.relu2 = nn.ReLU()
            self.conv2 = nn.Conv2d(4 * growth_rate, growth_rate, 3, padding=1, bias=False)

        def forward(self, x):
            y = self.conv1(self.relu1(self.norm1(x)))
            return torch.cat([x, self.conv2(self.relu2(self.norm2(y)))], 1)

    class DenseNet(nn.Module):
        def __init__(self):
            super().__init__()
            modules = [("conv0", nn.Conv2d(3, nb_filter, 7, 2, 3, bias=False)),
                       ("norm0", nn.BatchNorm2d(nb_filter)), ("relu0", nn.ReLU()),
                       ("pool0", nn.MaxPool2d(3, 2, 1))]
            channels = nb_filter
            for index, count in enumerate(blocks, start=1):
                layers = []
                for i in range(count):
                    layers.append((f"denselayer{i + 1}", DenseLayer(channels)))
                    channels += growth_rate
                modules.append((f"denseblock{index}", nn.Sequential(collections.OrderedDict(layers))))
                if index < len(blocks):
                    modules.append((f"transition{index}", nn.Sequential(collections.OrderedDict([
                        ("norm", nn.BatchNorm2d(channels)), ("relu", nn.ReLU()),
                        ("conv", nn.Conv2d(channels, channels // 2, 1, bias=False)),
                        ("pool", nn.AvgPool2d(2, 2))]))))
                    channels //= 2
            modules.append(("norm5", nn.BatchNorm2d(channels)))
            self.features = nn.Sequential(collections.OrderedDict(modules))
            self.classifier = nn.Linear(channels, classes)

        def forward(self, x):
            x = torch.relu(self.features(x))
            return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    return DenseNet()


def keras_applications_outputs(path, architecture, include_top, images):
    """keras.applications of Keras 2 (``tf_keras.applications``) with the file's weights."""
    import tf_keras

    constructor = getattr(tf_keras.applications, "DenseNet" + architecture[len("densenet"):])
    reference = constructor(weights=None, include_top=include_top, input_shape=images.shape[1:],
                            classifier_activation=None)
    reference.load_weights(path)
    return reference(images, training=False).numpy()


def original_keras_outputs(path, architecture, include_top, images):
    """The original Keras release's model (``original_keras_densenet``) with the file's weights."""
    reference = original_keras_densenet(architecture, include_top, images.shape[1:])
    reference.load_weights(path)
    return reference(images, training=False).numpy()


def torch_outputs(path, architecture, include_top, images):
    """torchvision's DenseNet with the state dict of a ``.pth`` or ``.safetensors`` file
    (timm's, via ``timm_outputs``, for architectures torchvision lacks: the deep stems, RDNet)."""
    import torch

    from keras_densenet.weights import pytorch

    if architecture in RDNET_VARIANTS or VARIANTS[architecture].stem_type != "standard":
        return timm_outputs(path, architecture, include_top, images)
    state = _read_state_dict(path)
    reference = torch_densenet(architecture)
    reference.load_state_dict(pytorch.normalize_keys(state))
    reference.eval()
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        if include_top:
            return reference(x).numpy()
        return torch.relu(reference.features(x)).numpy().transpose(0, 2, 3, 1)


REFERENCES = {
    "keras_applications": keras_applications_outputs,
    "original_keras": original_keras_outputs,
    "torch": torch_outputs,
    "safetensors": torch_outputs,
    "keras_hub": keras_hub_outputs,
}
"""Weight format -> the source implementation's outputs for a file of that format."""
