"""``keras-densenet train``: train a DenseNet with a named recipe, resumably.

    keras-densenet train                       # DenseNet-BC on the embedded digits
    keras-densenet train --recipe cifar        # the paper's CIFAR-10 schedule
    keras-densenet train --recipe imagenet --data /data/imagenet/train --batch-size 64
    keras-densenet train --output runs/digits --resume   # continue an interrupted run
    keras-densenet train --distribute multiworker        # one process per worker, TF_CONFIG set

A run directory holds ``config.json`` (the recipe), ``backup/`` (the state
saved after every epoch, removed once the run completes), ``log.csv``,
``curves.png``, ``model.keras`` (the final model) and ``metrics.json``. The data
is split into train, validation (reported each epoch) and test (evaluated once,
at the end, into ``metrics.json``). With ``--distribute multiworker`` only the
chief writes these; every other worker keeps only its own backup, in
``backup-worker{N}/``. See docs/distributed.md.

Every option is checked before the run directory is created. A run can be
killed at any instant and continued with ``--resume`` (which reads the recipe
from ``config.json``: no need to repeat the options): ``backup/`` is removed
only after every final file is written, a resumed run writes the final files
that are missing, and ``log.csv`` is cut back to the restored epoch.
``--resume --memory-efficient MODE`` continues a run in another memory mode (a
run that ran out of memory, say, in ``full``).
"""

import argparse
import contextlib
import csv
import dataclasses
import io
import json
import os
import shlex
import shutil

from keras_densenet.apps.recipes import RECIPES, Recipe
from keras_densenet.checks import check_number, check_positive_int
from keras_densenet.utils import atomic_path, write_text

MEMORY_EFFICIENT_FLAGS = {"off": False, "on": True, "full": "full"}
"""``--memory-efficient`` values and the ``memory_efficient`` they give the model."""
DISTRIBUTE = ("mirrored", "multiworker", "data-parallel")
"""``mirrored``: tf.distribute on all local devices; ``multiworker``: tf.distribute
across the processes named in ``TF_CONFIG``; ``data-parallel``:
``keras.distribution.DataParallel`` on all JAX devices."""


@dataclasses.dataclass(frozen=True)
class Worker:
    """This process's role in a run: ``chief`` writes the run files; ``name``
    (``"chief"``, or e.g. ``"worker1"``) names a non-chief's backup folder."""

    chief: bool = True
    name: str = "chief"


RUN_FILES = ("backup", "log.csv", "model.keras", "metrics.json", "curves.png")
"""What a run writes besides ``config.json``; a new run refuses a folder holding any."""


def train(recipe, output_dir, resume=False, distribute=None, callbacks=(), verbose=1):
    """Train ``recipe`` into ``output_dir``; returns the final test metrics as a dict.

    Args:
        recipe: a ``keras_densenet.recipes.Recipe``.
        output_dir: run directory (created).
        resume: continue the interrupted run saved in ``output_dir`` (``recipe`` must
            be the one in its ``config.json``); without it an existing run there is
            an error, so nothing is overwritten.
        distribute: ``None`` or one of ``DISTRIBUTE``; ``recipe.batch_size`` is
            then per replica (global batch: ``batch_size x replicas``). With
            ``"multiworker"`` every worker runs this with the same arguments.
        callbacks: extra Keras callbacks.
        verbose: ``model.fit`` verbosity (1: progress bars).
    """
    from keras_densenet.apps import data as data_lib

    check_recipe(recipe)
    check_output_dir(output_dir)
    worker = worker_role(distribute)
    backup_dir = os.path.join(output_dir, "backup" if worker.chief else f"backup-{worker.name}")
    # Checked before the workers connect, so that bad options fail fast.
    if worker.chief:
        _check_run_dir(output_dir, resume)
    elif os.path.exists(backup_dir) and not resume:
        raise ValueError(f"{backup_dir!r} holds an interrupted run: pass --resume to "
                         "continue it, or choose another --output.")
    strategy = distribution_strategy(distribute)
    distribution = keras_distribution(distribute)
    replicas = (strategy.num_replicas_in_sync if strategy else
                distribution.num_model_replicas if distribution else 1)
    if distribute:
        engine = "tf.distribute" if strategy else "keras.distribution"
        print(f"{engine} {distribute}: {replicas} replicas, global batch "
              f"{recipe.batch_size * replicas} ({worker.name})")
    splits = data_lib.load(recipe.dataset, recipe.image_size, recipe.batch_size * replicas,
                           augment=recipe.augment, flip=recipe.flip,
                           drop_remainder=distribution is not None)
    config = dict(recipe=dataclasses.asdict(recipe), class_names=splits.class_names)

    with (distribution.scope() if distribution else contextlib.nullcontext()):
        return _fit(recipe, output_dir, splits, config, resume, strategy, worker, backup_dir,
                    callbacks, verbose)


def _fit(recipe, output_dir, splits, config, resume, strategy, worker, backup_dir, callbacks,
         verbose):
    """Build, train and evaluate; write the run files (the chief only), resumably."""
    import keras

    from keras_densenet.builder import DenseNet

    with strategy.scope() if strategy else contextlib.nullcontext():
        model = DenseNet(**recipe.model, input_shape=splits.image_shape,
                         classes=len(splits.class_names))
        # What classify and export need to feed the model as it was trained.
        model.update_config(class_names=splits.class_names, preprocessing="torch",
                            crop_pct=1.0, interpolation="bilinear")
        steps_per_epoch = int(splits.train.cardinality())
        model.compile(
            optimizer=keras.optimizers.SGD(
                learning_rate=step_schedule(recipe, steps_per_epoch),
                momentum=recipe.momentum, nesterov=recipe.nesterov),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
    # Only now, with every option checked, is anything written.
    started_in = _prepare_run_dir(output_dir, config, resume) if worker.chief else None
    log_path = os.path.join(output_dir, "log.csv")
    model_path = os.path.join(output_dir, "model.keras")
    if not (resume and os.path.exists(model_path)):
        if worker.chief:
            _trim_log(log_path, _restorable_epoch(backup_dir))
        if started_in is not None:  # resumed in another memory mode: the run goes on in it
            # (its checkpoint loads: DenseNetModel.load_weights takes either variable order)
            print(f"resuming with memory_efficient={_run_memory_mode(config)!r} (the run "
                  f"started with {started_in!r})")
            write_text(os.path.join(output_dir, "config.json"), json.dumps(config, indent=2))
        model.fit(
            splits.train,
            validation_data=splits.validation,  # model selection; test is reported once, below
            epochs=recipe.epochs,
            shuffle=False,  # the pipeline reshuffles every epoch itself
            verbose=verbose,
            callbacks=[
                # The log row of an epoch is written before its backup, and cut on
                # resume when the backup is older: the log never repeats an epoch.
                *([keras.callbacks.CSVLogger(log_path, append=True)] if worker.chief else []),
                # Kept when fit returns, removed below once every final file is written.
                keras.callbacks.BackupAndRestore(backup_dir, double_checkpoint=True,
                                                 delete_checkpoint=False),
                *callbacks,
            ],
        )
        if not worker.chief:  # every worker evaluates (collectives); the chief writes
            metrics = {f"test_{name}": float(value) for name, value in
                       model.evaluate(splits.test, verbose=0, return_dict=True).items()}
            shutil.rmtree(backup_dir, ignore_errors=True)
            return metrics
        with atomic_path(model_path) as temporary:
            model.save(temporary)
    else:  # resuming a run killed while writing its final files
        model = keras.models.load_model(model_path)
    metrics_path = os.path.join(output_dir, "metrics.json")
    if os.path.exists(metrics_path):
        with open(metrics_path) as handle:
            metrics = json.load(handle)
    else:
        metrics = {f"test_{name}": float(value) for name, value in
                   model.evaluate(splits.test, verbose=0, return_dict=True).items()}
        write_text(metrics_path, json.dumps(metrics, indent=2))
    curves_path = os.path.join(output_dir, "curves.png")
    if not os.path.exists(curves_path):
        try:
            from keras_densenet.apps.plots import plot_history

            plot_history(log_path, curves_path)
        except ImportError:
            print("matplotlib is not installed: no curves.png (pip install keras-densenet[plots]).")
    shutil.rmtree(backup_dir, ignore_errors=True)  # the run is complete
    return metrics


def _run_memory_mode(config):
    """The ``memory_efficient`` of a run's config (``False`` where the recipe has none)."""
    return config["recipe"]["model"].get("memory_efficient", False)


def check_recipe(recipe):
    """A one-line ``ValueError`` naming the first field of ``recipe`` that cannot be trained."""
    check_positive_int("epochs", recipe.epochs)
    check_positive_int("batch_size", recipe.batch_size)
    check_positive_int("image_size", recipe.image_size)
    check_number("learning_rate", recipe.learning_rate, "(0, inf)", lambda v: v > 0)
    check_number("momentum", recipe.momentum, "[0, 1)", lambda v: 0 <= v < 1)
    for milestone in recipe.lr_milestones:
        check_number("lr_milestones entries", milestone, "(0, 1]", lambda v: 0 < v <= 1)
    if not isinstance(recipe.model, dict):
        raise ValueError(f"model must be a dict of DenseNet arguments; got {recipe.model!r}.")


def check_output_dir(output_dir):
    """A one-line ``ValueError`` when ``output_dir`` cannot be a run directory."""
    path = os.path.abspath(output_dir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--output {output_dir!r} is a file, not a directory.")
    while not os.path.exists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        raise ValueError(f"--output {output_dir!r} cannot be created: {path!r} is a file.")
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"--output {output_dir!r} cannot be written: no write permission "
                         f"in {path!r}.")


def _restorable_epoch(backup_dir):
    """The epoch ``BackupAndRestore`` will resume from (0: none), repairing a half-written backup.

    A kill while Keras writes ``training_metadata.json`` leaves it empty or cut;
    the previous state (``.bkp``, kept by ``double_checkpoint``) then replaces
    the pair, or, if there is none, the backup is dropped (the run restarts).
    """
    metadata_path = os.path.join(backup_dir, "training_metadata.json")
    weights_path = os.path.join(backup_dir, "latest.weights.h5")

    def epoch(path):
        try:
            with open(path) as handle:
                return int(json.load(handle)["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    if not os.path.exists(metadata_path):
        return 0
    if epoch(metadata_path) is not None:
        return epoch(metadata_path)
    previous = epoch(metadata_path + ".bkp")
    if previous is not None and os.path.exists(weights_path + ".bkp"):
        shutil.copyfile(weights_path + ".bkp", weights_path)
        shutil.copyfile(metadata_path + ".bkp", metadata_path)
        return previous
    shutil.rmtree(backup_dir)
    return 0


def _trim_log(log_path, epochs_done):
    """Drop the rows of ``log.csv`` for epochs from ``epochs_done`` on (they will be redone)."""
    if not os.path.exists(log_path):
        return
    with open(log_path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    kept = [row for row in body if row and int(row[0]) < epochs_done]
    if len(kept) != len(body):
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows([header, *kept])
        write_text(log_path, text.getvalue())


def step_schedule(recipe, steps_per_epoch):
    """The learning rate divided by 10 at each of ``recipe.lr_milestones`` (fractions)."""
    import keras

    boundaries = [int(round(m * recipe.epochs)) * steps_per_epoch for m in recipe.lr_milestones]
    values = [recipe.learning_rate / 10**i for i in range(len(boundaries) + 1)]
    if not boundaries:
        return recipe.learning_rate
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def _check_distribute(distribute):
    import keras

    if distribute is not None and distribute not in DISTRIBUTE:
        raise ValueError(f"distribute must be one of {DISTRIBUTE} or None; got {distribute!r}.")
    backend = keras.backend.backend()
    if distribute in ("mirrored", "multiworker") and backend != "tensorflow":
        raise ValueError(
            f"--distribute {distribute} uses tf.distribute, which needs the TensorFlow backend "
            f"(this is {backend!r}); on JAX use --distribute data-parallel "
            "(keras.distribution.DataParallel).")
    if distribute == "data-parallel" and backend != "jax":
        raise ValueError(
            "--distribute data-parallel uses keras.distribution, which needs the JAX backend "
            f"(this is {backend!r}); on TensorFlow use --distribute mirrored or multiworker. "
            "The PyTorch backend has no distributed training here.")


def worker_role(distribute):
    """This process's ``Worker`` role, read from ``TF_CONFIG`` for ``multiworker``.

    The chief is the ``chief`` task if the cluster has one, else worker 0
    (tf.distribute's convention). Raises ``ValueError`` if ``multiworker`` is
    asked for without a ``TF_CONFIG`` naming this task.
    """
    _check_distribute(distribute)
    if distribute != "multiworker":
        return Worker()
    import tensorflow as tf

    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    cluster = resolver.cluster_spec().as_dict()
    if not cluster or resolver.task_type is None:
        raise ValueError("--distribute multiworker needs the TF_CONFIG environment variable "
                         "with 'cluster' and 'task' (see docs/distributed.md).")
    chief = resolver.task_type == "chief" or (
        "chief" not in cluster and resolver.task_type == "worker" and resolver.task_id == 0)
    return Worker(chief=chief, name=f"{resolver.task_type}{resolver.task_id}")


def distribution_strategy(distribute):
    """The ``tf.distribute`` strategy for ``distribute``, or ``None``."""
    _check_distribute(distribute)
    if distribute not in ("mirrored", "multiworker"):
        return None
    import tensorflow as tf

    if distribute == "mirrored":
        return tf.distribute.MirroredStrategy()

    class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        """Works around two Keras 3 ``fit`` bugs with this strategy
        (keras-team/keras#20585, tensorflow/tensorflow#72388): it reduces a whole
        ``(images, labels)`` batch in one call, and reduces scalar metrics along
        ``axis=0``. Here nested values are reduced one tensor at a time, and
        scalars across replicas (``axis=None``)."""

        def reduce(self, reduce_op, value, axis):
            def reduce_one(per_replica):
                rank = self.experimental_local_results(per_replica)[0].shape.rank
                return parent.reduce(reduce_op, per_replica, None if rank == 0 else axis)

            parent = super()
            return tf.nest.map_structure(reduce_one, value)

    return MultiWorkerMirroredStrategy()


def keras_distribution(distribute):
    """The ``keras.distribution`` for ``distribute`` (JAX), or ``None``."""
    import keras

    _check_distribute(distribute)
    if distribute != "data-parallel":
        return None
    return keras.distribution.DataParallel(devices=keras.distribution.list_devices())


def _check_run_dir(output_dir, resume):
    exists = os.path.exists(os.path.join(output_dir, "config.json"))
    if resume and not exists:
        raise ValueError(f"--resume: {output_dir!r} holds no run to resume (no config.json).")
    if not resume and exists:
        raise ValueError(f"{output_dir!r} already holds a run: pass --resume to continue it, "
                         "or choose another --output.")


def _prepare_run_dir(output_dir, config, resume):
    """Check the run directory; create it and its ``config.json`` for a new run.

    Returns the memory mode a resumed run started in when ``config`` asks for
    another (the only change ``--resume`` takes), else ``None``.
    """
    config_path = os.path.join(output_dir, "config.json")
    _check_run_dir(output_dir, resume)
    if resume:
        saved = read_run_config(output_dir)
        current = json.loads(json.dumps(config))  # tuples become lists, as in the file
        started_in = _run_memory_mode(saved)
        for run in (saved, current):
            run["recipe"]["model"].pop("memory_efficient", None)
        if saved != current:
            differences = sorted(key for key, value in current["recipe"].items()
                                 if saved["recipe"].get(key) != value) or ["class_names"]
            raise ValueError(
                f"--resume: the run in {output_dir!r} was made with another recipe or data "
                f"(differs in {differences}); its checkpoint does not fit "
                "this model. Resume without those options (config.json has the run's), "
                "or train into a new --output.")
        if (os.path.exists(os.path.join(output_dir, "model.keras"))
                and not os.path.exists(os.path.join(output_dir, "backup"))):
            raise ValueError(f"--resume: the run in {output_dir!r} has already finished "
                             "(model.keras is written); train into a new --output.")
        return None if started_in == _run_memory_mode(config) else started_in
    if any(os.path.exists(os.path.join(output_dir, name)) for name in RUN_FILES):
        raise ValueError(f"{output_dir!r} already holds a run: pass --resume to continue it, "
                         "or choose another --output.")
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as error:
        raise ValueError(
            f"--output {output_dir!r} cannot be created: {error.strerror}.") from None
    write_text(config_path, json.dumps(config, indent=2))
    return None


def read_run_config(output_dir):
    """The ``config.json`` of the run in ``output_dir`` (``{"recipe": ..., "class_names": ...}``)."""
    config_path = os.path.join(output_dir, "config.json")
    if not os.path.exists(config_path):
        raise ValueError(f"--resume: {output_dir!r} holds no run to resume (no config.json).")
    try:
        with open(config_path) as handle:
            return json.load(handle)
    except ValueError as error:
        raise ValueError(f"--resume: {config_path!r} is not valid JSON ({error}).") from None


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-densenet train", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", choices=sorted(RECIPES),
                        help="named hyper-parameters (default: digits; with --resume, the "
                             "run's own, from its config.json)")
    parser.add_argument("--data", help="digits, cifar10, cifar100 or an image folder "
                                       "(default: the recipe's)")
    parser.add_argument("--output", help="run directory (default: runs/RECIPE)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --output with the options it was started with")
    parser.add_argument("--distribute", choices=DISTRIBUTE,
                        help="mirrored: all local devices, multiworker: the TF_CONFIG cluster "
                             "(TensorFlow); data-parallel: all devices (JAX)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int, help="per replica")
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--no-augment", dest="augment", action="store_false", default=None)
    parser.add_argument("--depth", type=int, help="DenseNet depth (the recipe's model)")
    parser.add_argument("--growth-rate", type=int)
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--dropout-rate", type=float)
    parser.add_argument("--memory-efficient", choices=sorted(MEMORY_EFFICIENT_FLAGS),
                        help="recompute in the backward pass to train in less memory: on = "
                             "each layer's concat-BN-ReLU-1x1, full = whole dense layers, "
                             "transitions and stem (the least memory; measured: docs/memory.md); "
                             "default: the recipe's (off); with --resume: go on in this mode")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def run_dir(args):
    """The run directory the parsed ``args`` name: ``--output``, else ``runs/RECIPE``."""
    return args.output or os.path.join("runs", args.recipe or "digits")


def interrupted(args):
    """The line ``keras-densenet`` prints when the run is stopped with Ctrl-C."""
    output_dir = run_dir(args)
    if not os.path.exists(os.path.join(output_dir, "config.json")):
        return "interrupted before the run started"
    return (f"interrupted; continue the run with: keras-densenet train --output "
            f"{shlex.quote(output_dir)} --resume")


def run(args):
    output_dir = run_dir(args)
    if args.resume and args.recipe is None:
        saved = read_run_config(output_dir)["recipe"]
        recipe = Recipe(**{**saved, "lr_milestones": tuple(saved["lr_milestones"])})
    else:
        recipe = RECIPES[args.recipe or "digits"]
    model_overrides = {k: v for k, v in dict(
        depth=args.depth, growth_rate=args.growth_rate, weight_decay=args.weight_decay,
        dropout_rate=args.dropout_rate,
        memory_efficient=MEMORY_EFFICIENT_FLAGS.get(args.memory_efficient)).items()
        if v is not None}
    recipe = recipe.replace(
        dataset=args.data, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, image_size=args.image_size, augment=args.augment,
        model={**recipe.model, **model_overrides})
    metrics = train(recipe, output_dir, resume=args.resume, distribute=args.distribute,
                    verbose=0 if args.quiet else 1)  # errors: one line, from apps.cli
    print(f"test accuracy {metrics['test_accuracy']:.4f}, test loss {metrics['test_loss']:.4f}")
    print(f"model: {os.path.join(output_dir, 'model.keras')}")
    return 0


def main(argv=None):
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
