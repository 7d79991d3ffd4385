"""Train DenseNet-BC (L=100, k=12) on CIFAR-10 with the paper's recipe.

    python examples/train_cifar.py                      # 300 epochs, as in the paper
    python examples/train_cifar.py --dataset cifar100 --epochs 40
    python examples/train_cifar.py --resume             # continue after an interruption

CIFAR is downloaded by keras.datasets on first use. Expected after 300 epochs:
about 4.5% test error on CIFAR-10 (the paper's Table 2, with augmentation).
"""

import argparse

from keras_densenet.apps.recipes import RECIPES
from keras_densenet.apps.train import train


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="cifar10", help="cifar10, cifar100 (or digits)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--depth", type=int, help="e.g. 250 or 190 for the larger nets")
    parser.add_argument("--growth-rate", type=int)
    parser.add_argument("--output", default="runs/cifar")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()

    recipe = RECIPES["cifar"]
    model = dict(recipe.model)
    if args.depth:
        model["depth"] = args.depth
    if args.growth_rate:
        model["growth_rate"] = args.growth_rate
    recipe = recipe.replace(dataset=args.dataset, epochs=args.epochs, model=model)
    metrics = train(recipe, args.output, resume=args.resume)
    print(f"test error {100 * (1 - metrics['test_accuracy']):.2f}%")


if __name__ == "__main__":
    main()
