"""``keras-densenet train``: train a DenseNet with a named recipe, resumably.

    keras-densenet train                       # DenseNet-BC on the embedded digits
    keras-densenet train --recipe cifar        # the paper's CIFAR-10 schedule
    keras-densenet train --recipe imagenet --data /data/imagenet/train --batch-size 64
    keras-densenet train --output runs/digits --resume   # continue an interrupted run

A run directory holds ``config.json`` (the recipe), ``backup/`` (the state
saved after every epoch, removed once the run completes), ``log.csv``,
``curves.png``, ``model.keras`` (the final model) and ``metrics.json``. The data
is split into train, validation (reported each epoch) and test (evaluated once,
at the end, into ``metrics.json``).
"""

import argparse
import contextlib
import dataclasses
import json
import os

import keras

from keras_densenet.apps import data as data_lib
from keras_densenet.apps.recipes import RECIPES
from keras_densenet.model import DenseNet
from keras_densenet.utils import atomic_path, write_text

DISTRIBUTE = ("mirrored", "multiworker")


def train(recipe, output_dir, resume=False, distribute=None, callbacks=(), verbose=1):
    """Train ``recipe`` into ``output_dir``; returns the final test metrics as a dict.

    Args:
        recipe: a ``keras_densenet.recipes.Recipe``.
        output_dir: run directory (created).
        resume: continue the interrupted run saved in ``output_dir``; without it
            an existing run there is an error, so nothing is overwritten.
        distribute: ``None``, ``"mirrored"`` or ``"multiworker"`` (tf.distribute);
            ``recipe.batch_size`` is then per replica.
        callbacks: extra Keras callbacks.
        verbose: ``model.fit`` verbosity (1: progress bars).
    """
    strategy = distribution_strategy(distribute)
    replicas = strategy.num_replicas_in_sync if strategy else 1
    if strategy:
        print(f"tf.distribute {distribute}: {replicas} replicas, "
              f"global batch {recipe.batch_size * replicas}")
    splits = data_lib.load(recipe.dataset, recipe.image_size, recipe.batch_size * replicas,
                           augment=recipe.augment, flip=recipe.flip)
    config = dict(recipe=dataclasses.asdict(recipe), class_names=splits.class_names)
    _prepare_run_dir(output_dir, config, resume)

    with strategy.scope() if strategy else contextlib.nullcontext():
        model = DenseNet(**recipe.model, input_shape=splits.image_shape,
                         classes=len(splits.class_names))
        # What classify and export need to feed the model as it was trained.
        # (a dict argument: Keras tracks the attribute as a TrackedDict, whose update()
        # takes no keywords)
        model.densenet_config.update(dict(class_names=splits.class_names, preprocessing="torch",
                                          crop_pct=1.0, interpolation="bilinear"))
        steps_per_epoch = int(splits.train.cardinality())
        model.compile(
            optimizer=keras.optimizers.SGD(
                learning_rate=step_schedule(recipe, steps_per_epoch),
                momentum=recipe.momentum, nesterov=recipe.nesterov),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
    log_path = os.path.join(output_dir, "log.csv")
    model.fit(
        splits.train,
        validation_data=splits.validation,  # model selection; test is reported once, below
        epochs=recipe.epochs,
        shuffle=False,  # the pipeline reshuffles every epoch itself
        verbose=verbose,
        callbacks=[
            keras.callbacks.BackupAndRestore(os.path.join(output_dir, "backup"),
                                             double_checkpoint=True),
            keras.callbacks.CSVLogger(log_path, append=True),
            *callbacks,
        ],
    )
    with atomic_path(os.path.join(output_dir, "model.keras")) as temporary:
        model.save(temporary)
    metrics = {f"test_{name}": float(value) for name, value in
               model.evaluate(splits.test, verbose=0, return_dict=True).items()}
    write_text(os.path.join(output_dir, "metrics.json"), json.dumps(metrics, indent=2))
    try:
        from keras_densenet.apps.plots import plot_history
    except ImportError:
        pass
    else:
        try:
            plot_history(log_path, os.path.join(output_dir, "curves.png"))
        except ImportError:
            print("matplotlib is not installed: no curves.png (pip install keras-densenet[plots]).")
    return metrics


def step_schedule(recipe, steps_per_epoch):
    """The learning rate divided by 10 at each of ``recipe.lr_milestones`` (fractions)."""
    boundaries = [int(round(m * recipe.epochs)) * steps_per_epoch for m in recipe.lr_milestones]
    values = [recipe.learning_rate / 10**i for i in range(len(boundaries) + 1)]
    if not boundaries:
        return recipe.learning_rate
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def distribution_strategy(distribute):
    """The ``tf.distribute`` strategy for ``distribute``, or ``None``."""
    if distribute is None:
        return None
    if distribute not in DISTRIBUTE:
        raise ValueError(f"distribute must be one of {DISTRIBUTE} or None; got {distribute!r}.")
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"--distribute {distribute} uses tf.distribute, which needs the TensorFlow backend "
            f"(this is {keras.backend.backend()!r}); on JAX use keras.distribution "
            "(e.g. keras.distribution.DataParallel) instead.")
    import tensorflow as tf

    if distribute == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.MultiWorkerMirroredStrategy()


def _prepare_run_dir(output_dir, config, resume):
    config_path = os.path.join(output_dir, "config.json")
    exists = os.path.exists(config_path)
    if resume:
        if not exists:
            raise ValueError(f"--resume: {output_dir!r} holds no run to resume (no config.json).")
        with open(config_path) as handle:
            saved = json.load(handle)
        current = json.loads(json.dumps(config))  # tuples become lists, as in the file
        if saved != current:
            differences = sorted(key for key, value in current["recipe"].items()
                                 if saved["recipe"].get(key) != value) or ["class_names"]
            raise ValueError(
                f"--resume: the run in {output_dir!r} was made with another recipe or data "
                f"(differs in {differences}); its checkpoint does not fit "
                "this model. Resume with the same options, or train into a new --output.")
        if os.path.exists(os.path.join(output_dir, "model.keras")):
            raise ValueError(f"--resume: the run in {output_dir!r} has already finished "
                             "(model.keras is written); train into a new --output.")
        return
    if exists:
        raise ValueError(f"{output_dir!r} already holds a run: pass --resume to continue it, "
                         "or choose another --output.")
    os.makedirs(output_dir, exist_ok=True)
    write_text(config_path, json.dumps(config, indent=2))


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-densenet train", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="digits",
                        help="named hyper-parameters (default: digits)")
    parser.add_argument("--data", help="digits, cifar10, cifar100 or an image folder "
                                       "(default: the recipe's)")
    parser.add_argument("--output", help="run directory (default: runs/RECIPE)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --output")
    parser.add_argument("--distribute", choices=DISTRIBUTE,
                        help="train on all local devices / workers with tf.distribute")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int, help="per replica")
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--no-augment", dest="augment", action="store_false", default=None)
    parser.add_argument("--depth", type=int, help="DenseNet depth (the recipe's model)")
    parser.add_argument("--growth-rate", type=int)
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--dropout-rate", type=float)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    recipe = RECIPES[args.recipe]
    model_overrides = {k: v for k, v in dict(
        depth=args.depth, growth_rate=args.growth_rate, weight_decay=args.weight_decay,
        dropout_rate=args.dropout_rate).items() if v is not None}
    recipe = recipe.replace(
        dataset=args.data, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, image_size=args.image_size, augment=args.augment,
        model={**recipe.model, **model_overrides})
    output_dir = args.output or os.path.join("runs", args.recipe)
    metrics = train(recipe, output_dir, resume=args.resume, distribute=args.distribute,
                    verbose=0 if args.quiet else 1)  # errors: one line, from apps.cli
    print(f"test accuracy {metrics['test_accuracy']:.4f}, test loss {metrics['test_loss']:.4f}")
    print(f"model: {os.path.join(output_dir, 'model.keras')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
