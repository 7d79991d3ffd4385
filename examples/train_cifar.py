"""Train DenseNet-BC (L=100, k=12) on CIFAR-10 with the paper's recipe.

    python examples/train_cifar.py                      # 300 epochs, as in the paper
    python examples/train_cifar.py --dataset cifar100 --epochs 40
    python examples/train_cifar.py --resume             # continue after an interruption
    python examples/train_cifar.py --quick              # 1 epoch of a tiny net on the digits

CIFAR is downloaded by keras.datasets on first use (so it needs network; offline
this stops with one line saying so). 5,000 training images are held out for
validation; the test set is evaluated once, at the end. Expected after 300
epochs: about 4.5% test error on CIFAR-10 (the paper's Table 2, with
augmentation). ``--quick`` (embedded digits, no download, DenseNet-BC L=10
k=4 at 16 px, one epoch) only shows the run working: its test error is high.
"""

import argparse
import sys
import tempfile

from keras_densenet.apps.cli import start_framework

start_framework()  # before the other imports: TensorFlow's start-up log stays quiet

from keras_densenet.apps.recipes import RECIPES  # noqa: E402
from keras_densenet.apps.train import train  # noqa: E402

QUICK = dict(dataset="digits", epochs=1, depth=10, growth_rate=4, image_size=16)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Keep the docstring's layout and show every default."""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--dataset", default="cifar10", help="cifar10, cifar100 (or digits)")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--depth", type=int, default=100, help="e.g. 250 or 190 for larger nets")
    parser.add_argument("--growth-rate", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--output", help="run directory (default: runs/cifar; with --quick, "
                                         "a new temporary folder)")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: --dataset digits --epochs 1 --depth 10 "
                             "--growth-rate 4 --image-size 16")
    args = parser.parse_args()
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
        args.output = args.output or tempfile.mkdtemp(prefix="train_cifar_quick_")

    recipe = RECIPES["cifar"]
    model = dict(recipe.model, depth=args.depth, growth_rate=args.growth_rate)
    recipe = recipe.replace(dataset=args.dataset, epochs=args.epochs, image_size=args.image_size,
                            model=model)
    try:
        metrics = train(recipe, args.output or "runs/cifar", resume=args.resume)
    except (ValueError, RuntimeError) as error:  # e.g. offline: CIFAR cannot be downloaded
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        raise SystemExit(2)
    print(f"test error {100 * (1 - metrics['test_accuracy']):.2f}%")


if __name__ == "__main__":
    main()
