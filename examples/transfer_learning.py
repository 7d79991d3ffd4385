"""Transfer learning: feature extraction, then fine-tuning the last dense block.

    python examples/transfer_learning.py                         # embedded digits, no weights
    python examples/transfer_learning.py --data flowers/ --weights imagenet
    python examples/transfer_learning.py --weights densenet121.weights.h5 --image-size 160

1. The ImageNet DenseNet-121 (without its classifier) is frozen and a new
   classifier is trained on its pooled features.
2. The last dense block (``block4_*``) and ``final_bn`` are unfrozen and
   trained with a 10x smaller learning rate. The backbone is always called
   with ``training=False``, so its BatchNormalization layers keep their
   ImageNet statistics (the usual Keras fine-tuning practice).

Images are preprocessed in "torch" mode, which the keras.applications and
torchvision weights expect.
"""

import argparse
import os

import keras

from keras_densenet import DenseNetImageNet121
from keras_densenet.apps import data as data_lib


def build(classes, image_size, weights):
    """``(model, backbone)``: the frozen DenseNet-121 under a new classifier."""
    backbone = DenseNetImageNet121(include_top=False, weights=weights,
                                   input_shape=(image_size, image_size, 3))
    backbone.trainable = False
    inputs = keras.Input((image_size, image_size, 3), name="image")
    features = backbone(inputs, training=False)  # BN stays in inference mode, always
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
    x = keras.layers.Dropout(0.2, name="dropout")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name="densenet121_transfer"), backbone


def unfreeze_last_block(backbone):
    """Make ``block4_*`` and ``final_bn`` trainable; returns how many layers."""
    backbone.trainable = True
    count = 0
    for layer in backbone.layers:
        layer.trainable = layer.name.startswith(("block4_", "final_"))
        count += layer.trainable and bool(layer.weights)
    return count


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="digits", help="digits or an image folder")
    parser.add_argument("--weights", default="none", help="imagenet, a weights file, or none")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each phase")
    parser.add_argument("--steps-per-epoch", type=int, help="limit batches per epoch")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--output", default="runs/transfer")
    args = parser.parse_args()

    splits = data_lib.load(args.data, args.image_size, args.batch_size, augment=True)
    weights = None if args.weights == "none" else args.weights
    model, backbone = build(len(splits.class_names), args.image_size, weights)
    fit = dict(validation_data=splits.test, epochs=args.epochs, shuffle=False,
               steps_per_epoch=args.steps_per_epoch, validation_steps=args.steps_per_epoch)

    print("phase 1: training the new classifier on frozen features")
    model.compile(keras.optimizers.Adam(args.learning_rate),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(splits.train, **fit)

    print(f"phase 2: fine-tuning {unfreeze_last_block(backbone)} layers of the last block")
    model.compile(keras.optimizers.Adam(args.learning_rate / 10),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(splits.train, **fit)

    os.makedirs(args.output, exist_ok=True)
    path = os.path.join(args.output, "model.keras")
    model.save(path)
    loss, accuracy = model.evaluate(splits.test, steps=args.steps_per_epoch, verbose=0)
    print(f"test accuracy {accuracy:.4f}; model saved to {path}")


if __name__ == "__main__":
    main()
