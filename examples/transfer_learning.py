"""Transfer learning: feature extraction, then fine-tuning the last dense block.

    python examples/transfer_learning.py                         # embedded digits, no weights
    python examples/transfer_learning.py --data flowers/ --weights imagenet
    python examples/transfer_learning.py --weights densenet121.weights.h5 --image-size 160
    python examples/transfer_learning.py --quick                 # a smoke run, seconds
    keras-densenet classify photo.png --model runs/transfer/model.keras

1. The ImageNet DenseNet-121 (without its classifier) is frozen and a new
   classifier is trained on its pooled features.
2. The last dense block (``block4_*``) and ``final_bn`` are unfrozen and
   trained with a 10x smaller learning rate. The backbone is always called
   with ``training=False``, so its BatchNormalization layers keep their
   ImageNet statistics (the usual Keras fine-tuning practice).

Images are preprocessed in "torch" mode, which the keras.applications and
torchvision weights expect. The saved model is a ``DenseNetModel`` that records
its class names and input transform, so ``keras-densenet classify`` uses it
like a model ``keras-densenet train`` made.

What to expect: the point of the example is ``--weights imagenet`` (a download,
once) on your own image folder. The offline default (``--weights none``) only
shows the mechanics: its backbone is random and runs in inference mode, so its
BatchNormalization statistics are never learnt and test accuracy stays near
chance on the digits; that is expected, not a bug.
"""

import argparse
import os
import sys
import tempfile

from keras_densenet.apps.cli import start_framework

keras = start_framework()  # before the other imports: TensorFlow's start-up log stays quiet

from keras_densenet import DenseNetImageNet121, DenseNetModel, model_config  # noqa: E402
from keras_densenet.apps import data as data_lib  # noqa: E402
from keras_densenet.utils import atomic_path  # noqa: E402

QUICK = dict(image_size=32, epochs=1, steps_per_epoch=2, batch_size=8)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Keep the docstring's layout and show every default."""


def build(class_names, image_size, weights):
    """``(model, backbone)``: the frozen DenseNet-121 under a new classifier.

    ``model`` is a ``DenseNetModel`` whose config records ``class_names`` and
    the input transform of ``keras_densenet.apps.data`` (torch preprocessing,
    images resized without cropping), so that classify can feed it.
    """
    backbone = DenseNetImageNet121(include_top=False, weights=weights,
                                   input_shape=(image_size, image_size, 3))
    backbone.trainable = False
    inputs = keras.Input((image_size, image_size, 3), name="image")
    features = backbone(inputs, training=False)  # BN stays in inference mode, always
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
    x = keras.layers.Dropout(0.2, name="dropout")(x)
    outputs = keras.layers.Dense(len(class_names), activation="softmax", name="classifier")(x)
    config = dict(model_config(backbone), input_shape=[image_size, image_size, 3],
                  class_names=list(class_names), preprocessing="torch", crop_pct=1.0,
                  interpolation="bilinear")
    model = DenseNetModel(inputs, outputs, name="densenet121_transfer", densenet_config=config)
    return model, backbone


def unfreeze_last_block(backbone):
    """Make ``block4_*`` and ``final_bn`` trainable; returns how many layers."""
    backbone.trainable = True
    count = 0
    for layer in backbone.layers:
        layer.trainable = layer.name.startswith(("block4_", "final_"))
        count += layer.trainable and bool(layer.weights)
    return count


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--data", default="digits", help="digits or an image folder")
    parser.add_argument("--weights", default="none", help="imagenet, a weights file, or none")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each phase")
    parser.add_argument("--steps-per-epoch", type=int, help="limit batches per epoch (all)")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--output", help="folder for model.keras (default: runs/transfer; "
                                         "with --quick, a new temporary folder)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing OUTPUT/model.keras")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: --image-size 32 --epochs 1 --steps-per-epoch 2 "
                             "--batch-size 8")
    args = parser.parse_args()
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
        args.output = args.output or tempfile.mkdtemp(prefix="transfer_learning_quick_")
    path = os.path.join(args.output or "runs/transfer", "model.keras")
    if os.path.lexists(path) and not args.overwrite:
        parser.error(f"{path!r} already exists; pass --overwrite to replace it")

    weights = None if args.weights == "none" else args.weights
    try:
        splits = data_lib.load(args.data, args.image_size, args.batch_size, augment=True)
        model, backbone = build(splits.class_names, args.image_size, weights)
    except (ValueError, RuntimeError) as error:  # bad folder, weights file, no network
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        raise SystemExit(2)
    fit = dict(validation_data=splits.validation, epochs=args.epochs, shuffle=False,
               steps_per_epoch=args.steps_per_epoch, validation_steps=args.steps_per_epoch)

    print("phase 1: training the new classifier on frozen features")
    model.compile(keras.optimizers.Adam(args.learning_rate),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(splits.train, **fit)

    print(f"phase 2: fine-tuning {unfreeze_last_block(backbone)} layers of the last block")
    model.compile(keras.optimizers.Adam(args.learning_rate / 10),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(splits.train, **fit)

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path) as temporary:
        model.save(temporary)
    loss, accuracy = model.evaluate(splits.test, steps=args.steps_per_epoch, verbose=0)
    print(f"test accuracy {accuracy:.4f}; model saved to {path}")
    if weights is None:
        print("(random backbone, --weights none: a low accuracy is expected; "
              "--weights imagenet is the real use)")


if __name__ == "__main__":
    main()
