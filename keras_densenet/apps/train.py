"""``keras-densenet train``: train a DenseNet with a named recipe, resumably.

    keras-densenet train                       # DenseNet-BC on the embedded digits
    keras-densenet train --recipe cifar        # the paper's CIFAR-10 schedule
    keras-densenet train --recipe imagenet --data /data/imagenet/train \\
        --val-data /data/imagenet/val --batch-size 64 --precision bf16
    keras-densenet train --output runs/digits --resume   # continue an interrupted run
    keras-densenet train --recipe imagenet --data /data/cxr/images \\
        --labels /data/cxr/Data_Entry_2017.csv          # multi-label (NIH ChestX-ray14 CSV)
    keras-densenet train --distribute multiworker        # one process per worker, TF_CONFIG set

A run directory holds ``config.json`` (the recipe), ``backup/`` (the state
saved after every epoch, removed once the run completes), ``log.csv``,
``curves.png``, ``model.keras`` (the final model) and ``metrics.json`` (test
loss, accuracy, top-5 accuracy with more than 5 classes, the number of images
of each split, the image files skipped because cut short and those that
failed to decode). The data is split into train,
validation (reported each epoch) and test (evaluated once, at the end); with
``--val-data`` all of ``--data`` is trained on and the validation folder is
both. With ``--labels`` (a CSV naming images of ``--data`` and their labels)
the model is multi-label: sigmoid outputs trained with binary cross-entropy,
AUROC logged every epoch, ``metrics.json`` holding the test loss and the
per-class and mean AUROC, and each class's decision threshold chosen on the
validation split recorded in ``model.keras``'s config (classify reads it).
With ``--distribute multiworker`` every worker reads and decodes only its
own shard of the training files, and only the chief writes these; every
other worker keeps only its own backup, in ``backup-worker{N}/``. See
docs/distributed.md and docs/training.md.

Before every validation and before the model is saved, the BatchNormalization
statistics are recomputed over training images (precise BN, see
``keras_densenet.apps.precise_bn``), so the saved model is the one training
reported, however short the run.

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
import dataclasses
import json
import math
import os
import shlex
import shutil
import warnings

from keras_densenet.apps import run_dir
from keras_densenet.apps.distribute import (DISTRIBUTE, distribution_strategy,
                                            keras_distribution, worker_role)
from keras_densenet.apps.labels import LabelsLayout
from keras_densenet.apps.recipes import ARCHS, PRECISIONS, RECIPES, TRANSFORMS, Recipe
from keras_densenet.checks import check_choice, check_number, check_positive_int
from keras_densenet.utils import atomic_path, write_text

MEMORY_EFFICIENT_FLAGS = {"off": False, "on": True, "full": "full"}
"""``--memory-efficient`` values and the ``memory_efficient`` they give the model."""


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

    Returns ``{"test_loss", "test_accuracy", ["test_top5_accuracy",] "images":
    {"train", "validation", "test"}, "skipped_images": [paths], "failed_images":
    [paths]}``, as in
    ``metrics.json``; with ``recipe.labels`` (multi-label) ``"test_mean_auroc"``
    and ``"test_auroc"`` (``{class: AUROC or None}``, ``None`` where the test
    split has only positives or only negatives of a class) replace the accuracies.
    """
    from keras_densenet.apps import data as data_lib
    from keras_densenet.apps.precise_bn import SETTLE_IMAGES
    from keras_densenet.apps.precision import check_precision, precision_policy

    check_recipe(recipe)
    check_precision(recipe.precision)
    run_dir.check_output_dir(output_dir)
    worker = worker_role(distribute)
    backup_dir = os.path.join(output_dir, "backup" if worker.chief else f"backup-{worker.name}")
    # Checked before the workers connect, so that bad options fail fast.
    if worker.chief:
        run_dir.check_run_dir(output_dir, resume)
    elif os.path.exists(backup_dir) and not resume:
        raise ValueError(f"{backup_dir!r} holds an interrupted run: pass --resume to "
                         "continue it, or choose another --output.")
    strategy = distribution_strategy(distribute)
    distribution = keras_distribution(distribute)
    replicas = (strategy.num_replicas_in_sync if strategy else
                distribution.num_model_replicas if distribution else 1)
    global_batch = recipe.batch_size * replicas
    if distribute:
        engine = "tf.distribute" if strategy else "keras.distribution"
        print(f"{engine} {distribute}: {replicas} replicas, global batch {global_batch} "
              f"({worker.name})")
    drop_remainder = distribution is not None
    splits = data_lib.load(recipe.dataset, recipe.image_size, global_batch,
                           augment=recipe.augment, flip=recipe.flip,
                           drop_remainder=drop_remainder,
                           val_dataset=recipe.val_dataset, transform=recipe.transform,
                           statistics_images=SETTLE_IMAGES, labels=recipe.labels,
                           labels_layout=LabelsLayout(**recipe.labels_layout))
    print("images: " + ", ".join(f"{n} {split}" for split, n in splits.counts.items())
          + (" (the validation folder is the test split)" if recipe.val_dataset else ""))
    if splits.skipped:
        print(f"skipped {len(splits.skipped)} image files cut short (metrics.json lists them): "
              f"{data_lib.named_files(splits.skipped)}")
    config = dict(recipe=dataclasses.asdict(recipe), class_names=splits.class_names)
    steps_per_epoch = (splits.counts["train"] // global_batch if drop_remainder
                       else -(-splits.counts["train"] // global_batch))

    scope = distribution.scope() if distribution else contextlib.nullcontext()
    with precision_policy(recipe.precision), scope, warnings.catch_warnings():
        # Image files that fail to decode are skipped, so a folder's pipelines have no
        # known length: Keras learns it in the first epoch, and warns, needlessly.
        warnings.filterwarnings("ignore", "Your input ran out of data")
        return _fit(recipe, output_dir, splits, config, resume, strategy, worker, backup_dir,
                    steps_per_epoch, global_batch, callbacks, verbose)


def _fit(recipe, output_dir, splits, config, resume, strategy, worker, backup_dir,
         steps_per_epoch, global_batch, callbacks, verbose):
    """Build, train and evaluate; write the run files (the chief only), resumably."""
    import keras

    from keras_densenet.apps.data import DecodeFailures
    from keras_densenet.apps.precise_bn import PreciseBatchNorm
    from keras_densenet.apps.throughput import ImagesPerSecond

    with strategy.scope() if strategy else contextlib.nullcontext():
        model = build_model(recipe, splits.image_shape, splits.class_names)
        if recipe.labels is not None:
            loss, metrics = "binary_crossentropy", [
                keras.metrics.AUC(multi_label=True, num_labels=len(splits.class_names),
                                  name="auroc")]
        else:
            loss, metrics = "sparse_categorical_crossentropy", [
                "accuracy", *([keras.metrics.SparseTopKCategoricalAccuracy(
                    5, name="top5_accuracy")] if len(splits.class_names) > 5 else [])]
        model.compile(
            optimizer=keras.optimizers.SGD(
                learning_rate=step_schedule(recipe, steps_per_epoch),
                momentum=recipe.momentum, nesterov=recipe.nesterov),
            loss=loss, metrics=metrics)
    # Only now, with every option checked, is anything written.
    started_in = run_dir.prepare_run_dir(output_dir, config, resume) if worker.chief else None
    log_path = os.path.join(output_dir, "log.csv")
    model_path = os.path.join(output_dir, "model.keras")
    statistics = PreciseBatchNorm(splits.statistics)
    failures = DecodeFailures(splits.decode_checks, strategy)
    if not (resume and os.path.exists(model_path)):
        if worker.chief:
            run_dir.trim_log(log_path, run_dir.restorable_epoch(backup_dir))
        if started_in is not None:  # resumed in another memory mode: the run goes on in it
            # (its checkpoint loads: DenseNetModel.load_weights takes either variable order)
            print(f"resuming with memory_efficient={run_dir.run_memory_mode(config)!r} (the run "
                  f"started with {started_in!r})")
            write_text(os.path.join(output_dir, "config.json"), json.dumps(config, indent=2))
        model.fit(
            _training_data(splits, strategy, global_batch, steps_per_epoch),
            validation_data=splits.validation,  # model selection; test is reported once, below
            epochs=recipe.epochs,
            shuffle=False,  # the pipeline reshuffles every epoch itself
            verbose=verbose,
            callbacks=[
                ImagesPerSecond(global_batch, splits.counts["train"]),
                failures,  # on every worker: it combines their marks (a collective)
                # Before each validation, and so before each backup (on_epoch_end).
                statistics,
                # The log row of an epoch is written before its backup, and cut on
                # resume when the backup is older: the log never repeats an epoch.
                *([keras.callbacks.CSVLogger(log_path, append=True)] if worker.chief else []),
                # Kept when fit returns, removed below once every final file is written.
                keras.callbacks.BackupAndRestore(backup_dir, double_checkpoint=True,
                                                 delete_checkpoint=False),
                *callbacks,
            ],
        )
        statistics.settle()
        if recipe.labels is not None:  # on every worker: predict may need collectives
            from keras_densenet.apps.labels import choose_thresholds

            model.update_config(thresholds=choose_thresholds(
                *_targets_and_scores(model, splits.validation)))
        if not worker.chief:  # every worker evaluates (collectives); the chief writes
            metrics = _evaluate(model, splits, recipe.labels is not None, failures)
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
        metrics = _evaluate(model, splits, recipe.labels is not None, failures)
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


def _training_data(splits, strategy, global_batch, steps_per_epoch):
    """``splits.train`` for ``model.fit``; under a ``tf.distribute`` ``strategy``, each
    worker's pipeline reads and decodes only its own shard of the training files
    (``Splits.train_shard``), batched per replica, so a global step still trains on
    ``global_batch`` images. With several workers, each runs exactly
    ``steps_per_epoch`` full batches per replica an epoch (its shard's end filled
    from its next pass), as the collectives need."""
    if strategy is None:
        return splits.train

    def worker_data(context):
        replicas = strategy.num_replicas_in_sync // context.num_input_pipelines
        return splits.train_shard(
            context.num_input_pipelines, context.input_pipeline_id,
            context.get_per_replica_batch_size(global_batch),
            batches=steps_per_epoch * replicas if context.num_input_pipelines > 1 else None)

    return strategy.distribute_datasets_from_function(worker_data)


def _evaluate(model, splits, multi_label, failures):
    """The ``metrics.json`` of a trained model: test metrics, image counts, the image
    files skipped (cut short) and failed (``failures``: a ``data.DecodeFailures``, told
    the test split's). ``multi_label``: the test loss and the per-class and mean AUROC
    (``per_class_auroc``)."""
    results = model.evaluate(splits.test, verbose=0, return_dict=True)
    if splits.decode_checks:
        failures.report(splits.decode_checks["test"].failed())
    if multi_label:
        from keras_densenet.apps.labels import per_class_auroc

        values, mean = per_class_auroc(*_targets_and_scores(model, splits.test))
        results = {"loss": results["loss"], "mean_auroc": mean}
        per_class = {"test_auroc": {name: None if math.isnan(value) else value
                                    for name, value in zip(splits.class_names, values)}}
    else:
        per_class = {}
    return {**{f"test_{name}": float(value) for name, value in results.items()}, **per_class,
            "images": dict(splits.counts), "skipped_images": list(splits.skipped),
            "failed_images": list(failures.failed)}


def _targets_and_scores(model, split):
    """``(targets, scores)`` of a multi-label evaluation ``split``, both ``(images, classes)``
    (the pipeline is deterministic: its two passes see the images in the same order)."""
    import numpy as np

    targets = np.concatenate([labels for _, labels in split.as_numpy_iterator()])
    return targets, model.predict(split, verbose=0).astype("float32")


def build_model(recipe, image_shape, class_names):
    """The recipe's ``DenseNetModel`` for ``image_shape`` and ``class_names``, its config
    recording how classify and export must feed it; with ``recipe.weights``, every
    layer but the classifier starts from those weights. With ``recipe.labels`` the
    top is a sigmoid per class and the config records ``multi_label``. Under a mixed
    precision policy the classifier computes in float32 (Keras' advice for the
    softmax and the sigmoid)."""
    import keras

    from keras_densenet.apps.data import EVAL_CROP_FRACTION
    from keras_densenet.builder import DenseNet
    from keras_densenet.rdnet import RDNet

    def network(**arguments):
        if recipe.arch == "densenet":
            return DenseNet(**recipe.model, input_shape=image_shape, **arguments)
        arguments["classifier_activation"] = arguments.pop("activation", None)
        return RDNet(recipe.arch, **recipe.model, input_shape=image_shape, **arguments)

    multi_label = recipe.labels is not None
    model = network(classes=len(class_names), activation="sigmoid" if multi_label else "softmax")
    if recipe.precision != "float32":  # the softmax, the loss and top-k in float32
        model.get_layer("predictions").dtype_policy = keras.DTypePolicy("float32")
    if recipe.weights is not None:
        pretrained = network(include_top=False, weights=recipe.weights)
        for layer in pretrained.layers:
            if layer.weights:
                model.get_layer(layer.name).set_weights(layer.get_weights())
    crop_pct = EVAL_CROP_FRACTION if recipe.transform == "imagenet" else 1.0
    model.update_config(class_names=list(class_names), preprocessing="torch",
                        crop_pct=crop_pct, interpolation="bilinear", multi_label=multi_label)
    return model


def check_recipe(recipe):
    """A one-line ``ValueError`` naming the first field of ``recipe`` that cannot be trained."""
    check_positive_int("epochs", recipe.epochs)
    check_positive_int("batch_size", recipe.batch_size)
    check_positive_int("image_size", recipe.image_size)
    check_number("learning_rate", recipe.learning_rate, "(0, inf)", lambda v: v > 0)
    check_number("momentum", recipe.momentum, "[0, 1)", lambda v: 0 <= v < 1)
    for milestone in recipe.lr_milestones:
        check_number("lr_milestones entries", milestone, "(0, 1]", lambda v: 0 < v <= 1)
    check_choice("transform", recipe.transform, TRANSFORMS)
    check_choice("precision", recipe.precision, tuple(PRECISIONS))
    check_choice("arch", recipe.arch, ARCHS)
    if not isinstance(recipe.model, dict):
        raise ValueError(f"model must be a dict of DenseNet arguments; got {recipe.model!r}.")
    rdnet_options = {"drop_path_rate", "memory_efficient"}  # RDNet's arguments in the recipe
    if recipe.arch != "densenet" and set(recipe.model) - rdnet_options:
        raise ValueError(f"--arch {recipe.arch} takes no DenseNet options "
                         f"({', '.join(sorted(set(recipe.model) - rdnet_options))}).")
    layout_fields = [field.name for field in dataclasses.fields(LabelsLayout)]
    if not isinstance(recipe.labels_layout, dict) or set(recipe.labels_layout) != set(
            layout_fields):
        raise ValueError(f"labels_layout must be a dict with the keys {layout_fields}; got "
                         f"{recipe.labels_layout!r}.")
    if not recipe.labels_layout["separator"]:
        raise ValueError("--label-separator must not be empty.")


def step_schedule(recipe, steps_per_epoch):
    """The learning rate divided by 10 at each of ``recipe.lr_milestones`` (fractions)."""
    import keras

    boundaries = [int(round(m * recipe.epochs)) * steps_per_epoch for m in recipe.lr_milestones]
    values = [recipe.learning_rate / 10**i for i in range(len(boundaries) + 1)]
    if not boundaries:
        return recipe.learning_rate
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def build_parser():
    """The ``keras-densenet train`` options (imports no framework)."""
    parser = argparse.ArgumentParser(
        prog="keras-densenet train", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", choices=sorted(RECIPES),
                        help="named hyper-parameters (default: digits; with --resume, the "
                             "run's own, from its config.json)")
    parser.add_argument("--data", help="digits, cifar10, cifar100 or an image folder "
                                       "(default: the recipe's)")
    parser.add_argument("--val-data", dest="val_dataset",
                        help="an image folder with the same class sub-folders (ImageNet's "
                             "val layout): evaluated after every epoch and at the end, instead "
                             "of splits held out of --data")
    parser.add_argument("--labels",
                        help="multi-label training: a CSV naming images of --data (file names "
                             "relative to it) and their labels (default layout: NIH "
                             "ChestX-ray14's Data_Entry_2017.csv)")
    defaults = LabelsLayout()
    parser.add_argument("--image-column",
                        help=f"--labels: the column of image names (default: "
                             f"{defaults.image_column!r})")
    parser.add_argument("--labels-column",
                        help=f"--labels: the column of labels (default: "
                             f"{defaults.labels_column!r})")
    parser.add_argument("--label-separator", dest="separator",
                        help=f"--labels: what joins an image's labels (default: "
                             f"{defaults.separator!r})")
    parser.add_argument("--none-label",
                        help=f"--labels: the label of an image with none (default: "
                             f"{defaults.none_label!r})")
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
    parser.add_argument("--transform", choices=TRANSFORMS,
                        help="image files: resize (whole image; pad-and-crop augmentation) or "
                             "imagenet (random-resized crop; evaluation: resize to size/0.875, "
                             "center crop); default: the recipe's")
    parser.add_argument("--no-augment", dest="augment", action="store_false", default=None)
    parser.add_argument("--precision", choices=tuple(PRECISIONS),
                        help="bf16: Keras' mixed_bfloat16 (CPUs with AVX512-BF16 or AMX, GPUs); "
                             "float16: mixed_float16 (GPUs); default: float32")
    parser.add_argument("--weights",
                        help="fine-tune: imagenet or a weights file for every layer but the "
                             "classifier (default: random initialization)")
    parser.add_argument("--arch", choices=ARCHS,
                        help="densenet (the recipe's DenseNet, default) or an RDNet variant")
    parser.add_argument("--drop-path-rate", type=float,
                        help="RDNet: stochastic depth of the last block (timm's drop_path_rate)")
    parser.add_argument("--depth", type=int, help="DenseNet depth (the recipe's model)")
    parser.add_argument("--growth-rate", type=int)
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--dropout-rate", type=float)
    parser.add_argument("--memory-efficient", choices=sorted(MEMORY_EFFICIENT_FLAGS),
                        help="recompute in the backward pass to train in less memory: on = "
                             "each layer's concat-BN-ReLU-1x1, full = whole dense layers, "
                             "transitions and stem (less memory, slower steps: see "
                             "docs/benchmarks.md); default: the recipe's (off); with --resume: "
                             "go on in this mode")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def output_dir_of(args):
    """The run directory the parsed ``args`` name: ``--output``, else ``runs/RECIPE``."""
    return args.output or os.path.join("runs", args.recipe or "digits")


def interrupted(args):
    """The line ``keras-densenet`` prints when the run is stopped with Ctrl-C."""
    output_dir = output_dir_of(args)
    if not os.path.exists(os.path.join(output_dir, "config.json")):
        return "interrupted before the run started"
    return (f"interrupted; continue the run with: keras-densenet train --output "
            f"{shlex.quote(output_dir)} --resume")


def run(args):
    """Train as the parsed ``args`` say; exit code 0 (errors are raised: one line from
    ``apps.cli``)."""
    output_dir = output_dir_of(args)
    if args.resume and args.recipe is None:
        recipe = Recipe.from_dict(run_dir.read_run_config(output_dir)["recipe"])
    else:
        recipe = RECIPES[args.recipe or "digits"]
    model_overrides = {k: v for k, v in dict(
        depth=args.depth, growth_rate=args.growth_rate, weight_decay=args.weight_decay,
        dropout_rate=args.dropout_rate, drop_path_rate=args.drop_path_rate,
        memory_efficient=MEMORY_EFFICIENT_FLAGS.get(args.memory_efficient)).items()
        if v is not None}
    if args.arch not in (None, recipe.arch):  # another network: the recipe's model args go
        recipe = recipe.replace(arch=args.arch, model={} if args.arch != "densenet" else None)
    layout_overrides = {k: v for k, v in dict(
        image_column=args.image_column, labels_column=args.labels_column,
        separator=args.separator, none_label=args.none_label).items() if v is not None}
    recipe = recipe.replace(
        labels=args.labels, labels_layout={**recipe.labels_layout, **layout_overrides},
        dataset=args.data, val_dataset=args.val_dataset, epochs=args.epochs,
        batch_size=args.batch_size, learning_rate=args.learning_rate,
        image_size=args.image_size, transform=args.transform, augment=args.augment,
        precision=args.precision, weights=args.weights,
        model={**recipe.model, **model_overrides})
    metrics = train(recipe, output_dir, resume=args.resume, distribute=args.distribute,
                    verbose=0 if args.quiet else 1)  # errors: one line, from apps.cli
    if "test_mean_auroc" in metrics:
        per_class = ", ".join("{} {}".format(name, "n/a" if value is None else f"{value:.4f}")
                              for name, value in metrics["test_auroc"].items())
        print(f"test mean AUROC {metrics['test_mean_auroc']:.4f} ({per_class}), test loss "
              f"{metrics['test_loss']:.4f}")
    else:
        top5 = (f", top-5 {metrics['test_top5_accuracy']:.4f}"
                if "test_top5_accuracy" in metrics else "")
        print(f"test accuracy {metrics['test_accuracy']:.4f}{top5}, test loss "
              f"{metrics['test_loss']:.4f}")
    print(f"model: {os.path.join(output_dir, 'model.keras')}")
    return 0


def main(argv=None):
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
