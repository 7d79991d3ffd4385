"""What precise BN changes: the same trained weights evaluated with Keras' moving
averages of BN statistics and with the statistics recomputed.

    python benchmarks/precise_bn.py                  # 3 runs of each case
    python benchmarks/precise_bn.py --runs 1 --case squares

Each run trains with ``keras_densenet.apps.train`` with the recomputation
switched off (``PreciseBatchNorm.settle`` a no-op), so ``model.keras`` holds
Keras' moving averages (momentum 0.99); the test split is evaluated with them,
then again after ``recompute_population_statistics`` over the run's
``Splits.statistics`` (the same weights). Cases: ``squares`` (the folder of
``benchmarks/short_runs.py``, ``--epochs 10``) and ``digits3`` (the digits
recipe, ``--epochs 3``). Writes benchmarks/results/precise_bn.csv.
"""

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from benchmarks.common import write_csv  # noqa: E402
from benchmarks.short_runs import write_squares  # noqa: E402

CASES = {"squares": 10, "digits3": 3}
"""Case: epochs."""


def run(case, work, index):
    import keras

    from keras_densenet.apps import data, precise_bn, train
    from keras_densenet.apps.recipes import RECIPES

    dataset = "digits"
    if case == "squares":
        dataset = os.path.join(work, "squares")
        if not os.path.exists(dataset):
            write_squares(dataset)
    recipe = RECIPES["digits"].replace(dataset=dataset, epochs=CASES[case])
    output = os.path.join(work, f"{case}-{index}")
    settle = precise_bn.PreciseBatchNorm.settle
    precise_bn.PreciseBatchNorm.settle = lambda self: None
    try:
        train.train(recipe, output, verbose=0)
    finally:
        precise_bn.PreciseBatchNorm.settle = settle
    splits = data.load(dataset, recipe.image_size, recipe.batch_size,
                       statistics_images=precise_bn.SETTLE_IMAGES)
    model = keras.models.load_model(os.path.join(output, "model.keras"))
    moving = model.evaluate(splits.test, verbose=0, return_dict=True)["accuracy"]
    precise_bn.recompute_population_statistics(model, splits.statistics)
    recomputed = model.evaluate(splits.test, verbose=0, return_dict=True)["accuracy"]
    return dict(case=case, run=index, epochs=CASES[case], test_accuracy_moving_average=moving,
                test_accuracy_recomputed=recomputed)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=sorted(CASES), action="append")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for case in args.case or CASES:
            for index in range(args.runs):
                rows.append(run(case, work, index))
                print(rows[-1], flush=True)
    print(write_csv("precise_bn.csv", rows))


if __name__ == "__main__":
    main()
