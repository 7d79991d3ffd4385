"""Training throughput in the progress output: images per second."""

import time

import keras


class ImagesPerSecond(keras.callbacks.Callback):
    """Adds ``images_per_second`` to the logs: in the progress bar, the epoch's
    average so far (each batch of ``batch_size`` images); at the end of an epoch
    (``log.csv``), ``images_per_epoch`` over the epoch's training time
    (validation excluded).

    Place it before ``keras.callbacks.CSVLogger`` in the callback list; the
    progress bar comes after every callback anyway. Under ``tf.distribute``,
    pass the global batch and the whole training split: every worker counts the
    global steps, so each reports the cluster's rate, not its own share.
    """

    def __init__(self, batch_size, images_per_epoch):
        super().__init__()
        self.batch_size, self.images_per_epoch = batch_size, images_per_epoch
        self.started = self.trained = None

    def on_epoch_begin(self, epoch, logs=None):
        self.started = self.trained = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.trained = time.perf_counter()
        if logs is not None:
            seen = min((batch + 1) * self.batch_size, self.images_per_epoch)
            logs["images_per_second"] = seen / max(self.trained - self.started, 1e-9)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.trained is not None:
            logs["images_per_second"] = self.images_per_epoch / max(
                self.trained - self.started, 1e-9)
