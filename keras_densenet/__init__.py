"""keras-densenet: DenseNet and DenseNet-BC for Keras 3.

    from keras_densenet import DenseNet, DenseNetImageNet121
    model = DenseNetImageNet121(weights=None, input_shape=(224, 224, 3))
"""

from keras_densenet.fcn import DenseNetFCN, FCDenseNet56, FCDenseNet67, FCDenseNet103
from keras_densenet.features import DenseNetBackbone, pyramid_outputs
from keras_densenet.model import DenseNet
from keras_densenet.preprocessing import decode_predictions, preprocess_input
from keras_densenet.presets import (
    DenseNetBlur121d,
    DenseNetCIFAR,
    DenseNetImageNet,
    DenseNetImageNet121,
    DenseNetImageNet161,
    DenseNetImageNet169,
    DenseNetImageNet201,
    DenseNetImageNet232,
    DenseNetImageNet264,
)

__version__ = "0.1.0"

__all__ = [
    "DenseNet",
    "DenseNetBackbone",
    "DenseNetBlur121d",
    "DenseNetFCN",
    "FCDenseNet56",
    "FCDenseNet67",
    "FCDenseNet103",
    "pyramid_outputs",
    "DenseNetCIFAR",
    "DenseNetImageNet",
    "DenseNetImageNet121",
    "DenseNetImageNet161",
    "DenseNetImageNet169",
    "DenseNetImageNet201",
    "DenseNetImageNet232",
    "DenseNetImageNet264",
    "decode_predictions",
    "preprocess_input",
]
