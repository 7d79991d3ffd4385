"""Distributed training: the ``--distribute`` engines and this process's role in a run.

``mirrored`` and ``multiworker`` are ``tf.distribute`` strategies (TensorFlow
backend), ``data-parallel`` is ``keras.distribution.DataParallel`` (JAX). This
module imports no framework until a function needs one. See docs/distributed.md.
"""

import dataclasses

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


def check_distribute(distribute):
    """A one-line ``ValueError`` unless ``distribute`` is ``None`` or one of
    ``DISTRIBUTE`` and the Keras backend runs that engine."""
    if distribute is not None and distribute not in DISTRIBUTE:
        raise ValueError(f"distribute must be one of {DISTRIBUTE} or None; got {distribute!r}.")
    if distribute is None:
        return
    import keras

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
    check_distribute(distribute)
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
    check_distribute(distribute)
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
    check_distribute(distribute)
    if distribute != "data-parallel":
        return None
    import keras

    return keras.distribution.DataParallel(devices=keras.distribution.list_devices())
