"""Datasets for training: the embedded digits, CIFAR, and image folders.

Every loader returns a ``Splits`` of batched ``tf.data`` pipelines yielding
``(images, labels)``: images ``(batch, size, size, 3)`` float32, normalized
like ``preprocess_input(mode="torch")``, labels int32 class indices (an image
folder with a labels CSV: float32 multi-hot rows ``(batch, classes)``).
"""

import collections
import concurrent.futures
import math
import os

import keras
import numpy as np
import tensorflow as tf

from keras_densenet.apps.images import IMAGE_EXTENSIONS, is_image_name
from keras_densenet.apps.labels import LabelsLayout, read_labels
from keras_densenet.preprocessing import TORCH_MEAN, TORCH_STD
from keras_densenet.utils import check_input_path

Splits = collections.namedtuple(
    "Splits", "train validation test class_names image_shape statistics counts skipped "
    "train_shard decode_checks", defaults=(None, None, (), None, None))
"""``train``/``validation``/``test``: ``tf.data.Dataset``, disjoint unless a separate
validation folder is both (validation for model selection during training, test
reported once at the end); ``class_names``: list of str; ``image_shape``: ``(size,
size, 3)``; ``statistics``: ``None`` or the first ``statistics_images`` training
images in the evaluation transform, in a fixed order, batched (for
``precise_bn``); ``counts``: ``{"train": n, "validation": n, "test": n}`` images;
``skipped``: image files left out because they are cut short; ``train_shard``:
``train_shard(shards, index, batch_size, batches=None)``, the training pipeline of
every ``shards``-th file from the ``index``-th, batched by ``batch_size`` (a worker's
share of ``train``: ``train`` is ``train_shard(1, 0, batch_size)``); ``batches``:
exactly that many full batches per epoch (see ``_batched``);
``decode_checks``: ``{"train": DecodeCheck, "validation": ..., "test": ...}`` for
image files (one object for validation and test where they are one folder), ``{}``
for in-memory datasets."""

IMAGE_SIGNATURES = {
    # magic bytes of the formats tf.io.decode_image reads
    b"\xff\xd8\xff": "jpeg",
    b"\x89PNG": "png",
    b"GIF8": "gif",
    b"BM": "bmp",
}
EVAL_CROP_FRACTION = 0.875
"""``transform="imagenet"`` evaluation: the shorter side is resized to
``image_size / EVAL_CROP_FRACTION``, then the center ``image_size`` square is taken."""
TEST_FRACTION = 0.2
VALIDATION_FRACTION = 0.1
"""Shares of all examples held out for testing and validation (CIFAR: of its training set,
since CIFAR has its own test set); the rest is trained on."""


def load(dataset, image_size, batch_size, augment=False, flip=True, seed=0,
         drop_remainder=False, val_dataset=None, transform="resize", statistics_images=0,
         labels=None, labels_layout=LabelsLayout()):
    """Load ``dataset`` (``"digits"``, ``"cifar10"``, ``"cifar100"`` or a folder path).

    ``batch_size`` is the global batch. ``drop_remainder``: every batch of every
    split is full (the last partial one is dropped), as ``keras.distribution``
    needs when it splits each batch evenly over devices. ``val_dataset`` and
    ``transform``: see ``image_folder`` (folders only). ``statistics_images``:
    how many training images ``Splits.statistics`` holds (0: none). ``labels``:
    ``None``, or a labels CSV (laid out as ``labels_layout`` says) naming the
    images of the folder ``dataset`` and their labels: multi-label splits
    (``labeled_images``).
    """
    if labels is not None:
        if dataset in (None, "digits", "cifar10", "cifar100") or val_dataset is not None:
            raise ValueError("--labels needs --data IMAGE_FOLDER (the folder its image names "
                             "are relative to) and no --val-data (validation and test are "
                             f"held out of its rows); got --data {dataset!r}"
                             + (f", --val-data {val_dataset!r}." if val_dataset else "."))
        return labeled_images(labels, dataset, image_size, batch_size, labels_layout, augment,
                              flip, seed, drop_remainder, transform, statistics_images)
    if dataset is None:
        raise ValueError("No dataset given: pass --data digits|cifar10|cifar100|PATH "
                         "(PATH: an image folder with one sub-folder per class).")
    if dataset == "digits":
        (x_train, y_train), (x_val, y_val), (x_test, y_test), names = digits(image_size, seed)
    elif dataset in ("cifar10", "cifar100"):
        (x_train, y_train), (x_val, y_val), (x_test, y_test), names = cifar(dataset, image_size)
    elif os.path.isdir(dataset) or os.path.sep in dataset or os.path.exists(dataset):
        return image_folder(dataset, image_size, batch_size, augment, flip, seed,
                            drop_remainder, val_dataset, transform, statistics_images)
    else:
        raise ValueError(f"dataset must be 'digits', 'cifar10', 'cifar100' or an existing "
                         f"image folder; got {dataset!r}.")
    if val_dataset is not None:
        raise ValueError(f"--val-data is for image folders; --data {dataset!r} has its own "
                         "validation split.")

    def evaluation(x, y):
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size, drop_remainder).map(
            _normalize_batch, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    def train_shard(shards, index, shard_batch_size, batches=None):
        train = tf.data.Dataset.from_tensor_slices((x_train, y_train)).shard(shards, index)
        train = train.shuffle(-(-len(x_train) // shards), seed=seed,
                              reshuffle_each_iteration=True)
        train = _batched(train, shard_batch_size, drop_remainder, batches)
        return _augmented(train, image_size, augment, flip, seed)

    n = min(statistics_images, len(x_train))
    return Splits(train_shard(1, 0, batch_size),
                  evaluation(x_val, y_val), evaluation(x_test, y_test), list(names),
                  (image_size, image_size, 3),
                  statistics=evaluation(x_train[:n], y_train[:n]) if n else None,
                  counts=dict(train=len(x_train), validation=len(x_val), test=len(x_test)),
                  train_shard=train_shard, decode_checks={})


def digits(image_size=32, seed=0):
    """scikit-learn's 1,797 8x8 digits as RGB ``image_size`` images in [0, 255].

    Returns ``((x_train, y_train), (x_val, y_val), (x_test, y_test), class_names)``,
    a stratified 70/10/20 split.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images[..., None].astype("float32") * (255.0 / 16.0)
    images = tf.image.resize(images, (image_size, image_size), method="bilinear").numpy()
    images = np.repeat(images, 3, axis=-1)
    labels = bunch.target.astype("int32")
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=TEST_FRACTION, stratify=labels, random_state=seed)
    x_train, x_val, y_train, y_val = train_test_split(
        x_train, y_train, test_size=VALIDATION_FRACTION / (1 - TEST_FRACTION), stratify=y_train,
        random_state=seed)
    return (x_train, y_train), (x_val, y_val), (x_test, y_test), [str(d) for d in range(10)]


def cifar(name, image_size=32):
    """CIFAR-10 or CIFAR-100 through ``keras.datasets`` (downloads once, needs network).

    Returns train, validation (the last ``VALIDATION_FRACTION`` of CIFAR's training
    set) and test (CIFAR's test set) as ``(x, y)`` pairs, and the class names.
    """
    module = keras.datasets.cifar10 if name == "cifar10" else keras.datasets.cifar100
    try:
        (x_train, y_train), (x_test, y_test) = module.load_data()
    except Exception as error:  # the download's own errors vary by cause
        raise RuntimeError(f"Could not load {name} through keras.datasets ({error}); it is "
                           "downloaded on first use, so this needs network access.") from error
    resize = (lambda x: x) if image_size == 32 else (
        lambda x: tf.image.resize(x, (image_size, image_size)).numpy())
    names = [str(i) for i in range(10 if name == "cifar10" else 100)]
    kept = len(x_train) - int(VALIDATION_FRACTION * len(x_train))
    x_train, y_train = resize(x_train.astype("float32")), y_train[:, 0].astype("int32")
    return ((x_train[:kept], y_train[:kept]), (x_train[kept:], y_train[kept:]),
            (resize(x_test.astype("float32")), y_test[:, 0].astype("int32")), names)


def image_folder(path, image_size, batch_size, augment=False, flip=True, seed=0,
                 drop_remainder=False, val_path=None, transform="resize", statistics_images=0):
    """Splits of an image folder with one sub-folder per class, read file by file.

    Without ``val_path``, the files are shuffled (``seed``) and split 70/10/20
    into train, validation and test (the same files in every run with that
    seed). With ``val_path`` (a folder with the same class sub-folders, as
    ImageNet's val), all of ``path`` is trained on and ``val_path`` is both the
    validation and the test split. ``transform`` is a ``recipes.TRANSFORMS``
    name (see ``Recipe.transform``). Grayscale and RGBA images become RGB.

    Files are checked by their first and last bytes only (``image_folder_files``):
    a file that is no image is an error before anything is decoded; a file cut
    short is skipped and listed in ``Splits.skipped``; a file that still fails
    to decode while training or evaluating is skipped (``tf.data``
    ``ignore_errors``) and its split's ``DecodeCheck`` names it afterwards.
    """
    folder = image_folder_files(path)
    files, labels = np.array(folder.files), folder.labels
    skipped = list(folder.skipped)
    if val_path is None:
        train_index, validation_index, test_index = held_out_split(len(files), seed)
        validation = (files[validation_index], labels[validation_index])
        test = (files[test_index], labels[test_index])
    else:
        val_folder = image_folder_files(val_path, class_names=folder.class_names)
        train_index = np.random.default_rng(seed).permutation(len(files))
        validation = test = (np.array(val_folder.files), val_folder.labels)
        skipped += val_folder.skipped
    return _file_splits((files[train_index], labels[train_index]), validation, test,
                        folder.class_names, image_size, batch_size, augment, flip, seed,
                        drop_remainder, transform, statistics_images, skipped)


def labeled_images(csv_path, image_dir, image_size, batch_size, layout=LabelsLayout(),
                   augment=False, flip=True, seed=0, drop_remainder=False, transform="resize",
                   statistics_images=0):
    """Multi-label splits of the images a labels CSV lists (``labels.read_labels``).

    Labels are ``(batch, classes)`` float32 multi-hot rows; ``Splits.class_names``
    are the CSV's labels (sorted). The rows are shuffled (``seed``) and split
    70/10/20 into train, validation and test, and the files checked and decoded
    as an image folder's (see ``image_folder``; ``layout``: ``LabelsLayout``).
    """
    paths, targets, class_names = read_labels(csv_path, image_dir, layout)
    kinds = file_states(paths, f"{csv_path!r} (images in {image_dir!r})")
    kept = np.array([kind == "complete" for kind in kinds])
    skipped = [path for path, kind in zip(paths, kinds) if kind == "cut"]
    files, targets = np.array(paths)[kept], targets[kept]
    train_index, validation_index, test_index = held_out_split(len(files), seed)
    return _file_splits((files[train_index], targets[train_index]),
                        (files[validation_index], targets[validation_index]),
                        (files[test_index], targets[test_index]), class_names, image_size,
                        batch_size, augment, flip, seed, drop_remainder, transform,
                        statistics_images, skipped)


def held_out_split(count, seed):
    """``(train, validation, test)`` index arrays of ``count`` examples shuffled with
    ``seed``: ``TEST_FRACTION`` and ``VALIDATION_FRACTION`` (at least one) held out."""
    order = np.random.default_rng(seed).permutation(count)
    held_out = int((TEST_FRACTION + VALIDATION_FRACTION) * count)
    validation_count = max(1, int(VALIDATION_FRACTION * count))
    held = order[count - held_out:]
    return order[:count - held_out], held[:validation_count], held[validation_count:]


def _file_splits(train, validation, test, class_names, image_size, batch_size, augment, flip,
                 seed, drop_remainder, transform, statistics_images, skipped):
    """The ``Splits`` of ``(files, labels)`` pairs for each split (see ``image_folder``)."""
    train_files, train_labels = train
    evaluate = _center_crop if transform == "imagenet" else _resize_whole
    checks = {"train": DecodeCheck(train_files), "validation": DecodeCheck(validation[0])}
    checks["test"] = checks["validation"] if test is validation else DecodeCheck(test[0])

    def evaluation(split_files, split_labels, check=None):
        return _decoded(split_files, split_labels, image_size, evaluate, check=check).batch(
            batch_size, drop_remainder).map(_normalize_batch, num_parallel_calls=tf.data.AUTOTUNE
                                            ).prefetch(tf.data.AUTOTUNE)

    def train_shard(shards, index, shard_batch_size, batches=None):
        if transform == "imagenet" and augment:
            return imagenet_train_pipeline(
                train_files, train_labels, image_size, shard_batch_size, flip, seed,
                drop_remainder=drop_remainder, check=checks["train"], shard=(shards, index),
                batches=batches)
        dataset = _decoded(train_files, train_labels, image_size, evaluate, shuffle_seed=seed,
                           check=checks["train"], shard=(shards, index))
        return _augmented(_batched(dataset, shard_batch_size, drop_remainder, batches),
                          image_size, augment and transform == "resize", flip, seed)

    n = min(statistics_images, len(train_files))
    return Splits(train_shard(1, 0, batch_size), evaluation(*validation, checks["validation"]),
                  evaluation(*test, checks["test"]), list(class_names),
                  (image_size, image_size, 3),
                  statistics=evaluation(train_files[:n], train_labels[:n]) if n else None,
                  counts=dict(train=len(train_files), validation=len(validation[0]),
                              test=len(test[0])),
                  skipped=skipped, train_shard=train_shard, decode_checks=checks)


class DecodeCheck:
    """Which of a split's image ``files`` decoded, for naming the ones that did not.

    The split's pipeline passes each image it decoded through ``mark`` with the
    file's index; an image whose decoding fails never reaches it (the pipeline
    skips it), so the files never marked are the ones that failed. The marks are
    one float32 per file in a ``tf.Variable`` (4 bytes per file: 5 MB for
    ImageNet's 1.28 M), set by a scatter update, safe under parallel ``map``, and
    they accumulate over passes (a file is marked once it decoded in any pass).
    """

    def __init__(self, files):
        self.files = [str(f) for f in files]
        self.decoded = tf.Variable(tf.zeros([len(self.files)]), trainable=False,
                                   name="decoded_files")

    def mark(self, index, image):
        """``image``, after marking file ``index`` (a scalar) as decoded."""
        with tf.control_dependencies([image]):
            update = self.decoded.scatter_update(
                tf.IndexedSlices(tf.ones([1]), tf.reshape(tf.cast(index, "int32"), [1])))
        with tf.control_dependencies([update]):
            return tf.identity(image)

    def failed(self, strategy=None):
        """The files not marked yet, in ``files`` order. ``strategy``: a
        ``tf.distribute`` strategy whose workers each read a shard of the files:
        the marks of every worker are combined (a collective: every worker must
        call this at the same point)."""
        marks = self.decoded
        if strategy is not None:
            marks = tf.function(lambda: strategy.reduce(
                "MEAN", strategy.run(lambda: tf.identity(self.decoded)), axis=None))()
        return [self.files[i] for i in np.flatnonzero(np.asarray(marks) == 0)]


def named_files(files, shown=10):
    """``'a.jpg', 'b.jpg' and 3 more``: the first ``shown`` of ``files`` and how many
    more (for the one-line reports of skipped files)."""
    more = len(files) - shown
    return ", ".join(repr(f) for f in files[:shown]) + (f" and {more} more" if more > 0 else "")


class DecodeFailures(keras.callbacks.Callback):
    """Names the image files that failed to decode, from the ``DecodeCheck``s of a
    ``Splits`` (``decode_checks``): after every epoch the training and validation
    files (``report`` the test files after testing), each file once, in a printed
    line ``N image files failed to decode and were skipped: ...``. ``failed``: every
    file named so far, in order. ``strategy``: the ``tf.distribute`` strategy whose
    workers each read a shard of the training files (``DecodeCheck.failed``).

    The training files are known only after an epoch ran in this process: a run
    resumed after its last epoch names only the validation and test files.
    """

    def __init__(self, checks, strategy=None):
        super().__init__()
        self.checks, self.strategy = checks, strategy
        self.failed = []

    def on_epoch_end(self, epoch, logs=None):
        if self.checks:
            self.report(self.checks["train"].failed(self.strategy)
                        + self.checks["validation"].failed())

    def report(self, files):
        """Print and add to ``failed`` those of ``files`` not named before."""
        named = set(self.failed)
        new = [f for f in dict.fromkeys(files) if f not in named]
        if new:
            print(f"{len(new)} image files failed to decode and were skipped (metrics.json "
                  f"lists them): {named_files(new)}")
            self.failed += new


ImageFiles = collections.namedtuple("ImageFiles", "files labels class_names skipped")
"""``files``: the image paths (class by class, sorted); ``labels``: int32 array, indices
into ``class_names`` (the sorted class sub-folders); ``skipped``: paths of the files
cut short (left out of ``files``)."""


def image_folder_files(path, class_names=None):
    """The ``ImageFiles`` of an image folder (one sub-folder per class).

    Only each file's first and last bytes are read (in parallel threads): a
    file without a JPEG, PNG, GIF or BMP signature is an error naming it
    (with every other such file); a file whose end is missing (no JPEG
    end-of-image marker, PNG ``IEND`` chunk or GIF trailer near its end, a BMP
    shorter than its header says) is skipped. ``class_names``: the training
    folder's classes, which this folder's sub-folders must be among (a
    validation folder). Raises ``ValueError`` for a missing or empty folder or a
    single class.
    """
    check_input_path(path, "image folder", "folder")
    classes = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
    if class_names is not None and set(classes) - set(class_names):
        raise ValueError(f"Image folder {path!r} has class sub-folders the training data "
                         f"lacks: {sorted(set(classes) - set(class_names))[:10]}.")
    found = {name: sorted(os.path.join(path, name, f)
                          for f in os.listdir(os.path.join(path, name)) if is_image_name(f))
             for name in classes}
    with_images = [name for name, names in found.items() if names]
    if not with_images:
        raise ValueError(
            f"Image folder {path!r} holds no images: expected one sub-folder per class with "
            f"{'/'.join(IMAGE_EXTENSIONS)} files (found sub-folders: {classes or 'none'}).")
    if class_names is None and len(with_images) < 2:
        raise ValueError(f"Image folder {path!r} has a single class ({with_images[0]!r}); "
                         "classification needs at least two class sub-folders.")
    names = classes if class_names is None else list(class_names)
    candidates = [(f, names.index(name)) for name in classes for f in found[name]]
    kinds = file_states([f for f, _ in candidates], f"image folder {path!r}")
    kept = [(f, label) for (f, label), kind in zip(candidates, kinds) if kind == "complete"]
    return ImageFiles([f for f, _ in kept], np.array([label for _, label in kept], "int32"),
                      names, [f for (f, _), kind in zip(candidates, kinds) if kind == "cut"])


def file_states(files, source):
    """The ``file_state`` of each of ``files`` (read in parallel threads); a one-line
    ``ValueError`` naming ``source`` and the files that are no image."""
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        kinds = list(pool.map(file_state, files, chunksize=256))
    bad = [f for f, kind in zip(files, kinds) if kind == "not an image"]
    if bad:
        shown = ", ".join(repr(f) for f in bad[:10]) + (f" and {len(bad) - 10} more"
                                                         if len(bad) > 10 else "")
        raise ValueError(
            f"{len(bad)} of {len(files)} files in {source} cannot be decoded as images (no "
            f"JPEG, PNG, GIF or BMP signature): {shown}; remove or fix them.")
    return kinds


def file_state(file):
    """``"complete"``, ``"cut"`` (an image whose end is missing) or ``"not an image"``,
    from the first 8 and last 64 bytes of ``file``."""
    with open(file, "rb") as handle:
        head = handle.read(8)
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - 64))
        tail = handle.read()
    kind = next((kind for magic, kind in IMAGE_SIGNATURES.items() if head.startswith(magic)),
                None)
    if kind is None:
        return "not an image"
    complete = {
        "jpeg": lambda: b"\xff\xd9" in tail,
        "png": lambda: b"IEND" in tail,
        "gif": lambda: tail.rstrip(b"\0").endswith(b";"),
        "bmp": lambda: len(head) >= 6 and int.from_bytes(head[2:6], "little") <= size,
    }[kind]()
    return "complete" if complete else "cut"


def torch_normalize(images):
    """``preprocess_input(mode="torch")`` in TensorFlow ops, for ``tf.data`` pipelines."""
    mean = tf.constant([255.0 * m for m in TORCH_MEAN])
    std = tf.constant([255.0 * s for s in TORCH_STD])
    return (tf.cast(images, "float32") - mean) / std


def _normalize_batch(images, labels):
    return torch_normalize(images), labels


def _augmented(train, image_size, augment, flip, seed):
    """Batches of [0, 255] images: pad-crop-flipped if ``augment``, normalized, prefetched."""
    if augment:
        pad = max(1, image_size // 8)  # the paper's 4 pixels at 32x32
        train = train.map(lambda x, y: (_pad_crop_flip(x, pad, flip, seed), y),
                          num_parallel_calls=tf.data.AUTOTUNE)
    return train.map(_normalize_batch, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE)


def label_array(labels):
    """``labels`` as int32 class indices ``(n,)``, or float32 multi-hot rows ``(n, classes)``."""
    labels = np.asarray(labels)
    return labels.astype("float32" if labels.ndim == 2 else "int32")


def _decoded(files, labels, image_size, decode, shuffle_seed=None, check=None, shard=None):
    """Unbatched ``(image, label)``: each file read and ``decode``d to a float32
    ``(image_size, image_size, 3)`` image in [0, 255]; files that fail to decode
    are skipped (and, with ``check``, a ``DecodeCheck`` of ``files``, left
    unmarked). ``shard``: ``(shards, index)``, only every ``shards``-th file from
    the ``index``-th is read. Reshuffled every epoch if ``shuffle_seed`` is given."""
    dataset = _indexed_files(files, labels, shard)
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(files), seed=shuffle_seed, reshuffle_each_iteration=True)

    def read_and_decode(file, label, index):
        image = decode(tf.io.read_file(file), image_size)
        return (check.mark(index, image) if check else image), label

    return dataset.map(read_and_decode, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()


def _batched(dataset, batch_size, drop_remainder, batches=None):
    """``dataset`` batched; with ``batches``, exactly ``batches`` full batches per pass,
    the end filled from the next (reshuffled) pass over ``dataset``, so that every
    worker of a cluster, whatever its shard's size and however many of its files
    failed to decode, runs the same steps (tf.distribute would otherwise hand the
    worker that runs out first an empty batch, which the model cannot take). With
    ``batches`` at least ``len(shard) / batch_size``, every element of the first
    pass is read (in order: ``dataset`` must be deterministic)."""
    if batches is None:
        return dataset.batch(batch_size, drop_remainder)
    return dataset.repeat().take(batches * batch_size).batch(batch_size, drop_remainder=True)


def _indexed_files(files, labels, shard=None):
    """``(file, label, index)`` of each of ``files`` (``index``: its position in
    ``files``); ``shard``: ``(shards, index)``, every ``shards``-th from the ``index``-th."""
    dataset = tf.data.Dataset.from_tensor_slices(
        (list(files), label_array(labels), tf.range(len(files), dtype="int32")))
    return dataset.shard(*shard) if shard else dataset


def _decode_rgb(encoded):
    return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def _resize_whole(encoded, image_size):
    """The whole image resized to ``image_size`` square (bilinear), float32."""
    image = tf.image.resize(_decode_rgb(encoded), (image_size, image_size))
    return tf.ensure_shape(image, (image_size, image_size, 3))


def _center_crop(encoded, image_size):
    """The shorter side resized to ``image_size / EVAL_CROP_FRACTION`` (bilinear,
    antialiased), then the center ``image_size`` square, float32."""
    image = _decode_rgb(encoded)
    shape = tf.cast(tf.shape(image)[:2], "float32")
    scale = math.floor(image_size / EVAL_CROP_FRACTION) / tf.reduce_min(shape)
    resized = tf.maximum(tf.cast(tf.round(shape * scale), "int32"), image_size)
    image = tf.image.resize(image, resized, antialias=True)
    top, left = (resized[0] - image_size) // 2, (resized[1] - image_size) // 2
    image = image[top:top + image_size, left:left + image_size]
    return tf.ensure_shape(image, (image_size, image_size, 3))


def _pad_crop_flip(images, pad, flip, seed):
    """Per image: zero-pad by ``pad`` pixels, randomly crop back, randomly flip left-right."""
    crop_shape = tf.shape(images)[1:]

    def one(image):
        padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
        return tf.image.random_crop(padded, crop_shape)

    cropped = tf.map_fn(one, images, fn_output_signature=tf.TensorSpec(images.shape[1:], images.dtype))
    return tf.image.random_flip_left_right(cropped) if flip else cropped


def imagenet_train_pipeline(files, labels, image_size, batch_size, flip=True, seed=0,
                            parallel=True, cache=False, drop_remainder=False, check=None,
                            shard=None, batches=None):
    """The ImageNet training input: read, decode, random-resized-crop, flip, normalize.

    Per image: a random crop of 8-100% of the area with aspect ratio 3/4-4/3
    (Inception-style, as in the DenseNet paper's ImageNet training), decoded
    from the JPEG window only (``decode_and_crop_jpeg``; PNG/GIF/BMP decode
    whole), resized to ``image_size`` (bilinear), flipped left-right at random,
    normalized like ``preprocess_input(mode="torch")``; files that fail to
    decode are skipped; then batched and prefetched. Yields ``(batch,
    image_size, image_size, 3)`` float32 and int32 labels, reshuffled every
    epoch.

    Args:
        files, labels: image paths and their class indices (``image_folder_files``).
        flip, seed: the random flip; the shuffle's seed.
        parallel: decode and augment on all cores (``tf.data.AUTOTUNE``, order
            not deterministic); ``False``: one image at a time.
        cache: keep the encoded files in memory after the first epoch (disk
            reads once; needs the dataset's size in RAM). ``cache`` may also
            be a file path (``tf.data.Dataset.cache``) for a local-disk copy.
        check: ``None`` or a ``DecodeCheck`` of ``files``: each decoded image marked.
        shard: ``None`` or ``(shards, index)``: only every ``shards``-th file from
            the ``index``-th is read (a worker's share).
        batches: ``None`` or exactly that many full batches per epoch (``_batched``;
            the images then come in order even with ``parallel``).
    """
    calls = tf.data.AUTOTUNE if parallel else None
    dataset = _indexed_files(files, labels, shard)

    def read(file, label, index):
        return tf.io.read_file(file), label, index

    def crop(encoded, label, index):
        image = _random_resized_crop(encoded, image_size, flip)
        return (check.mark(index, image) if check else image), label

    if cache:
        dataset = dataset.map(read, num_parallel_calls=calls).cache(
            cache if isinstance(cache, str) else "")
    dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    if not cache:
        dataset = dataset.map(read, num_parallel_calls=calls)
    dataset = dataset.map(crop, num_parallel_calls=calls).ignore_errors()
    if parallel and batches is None:
        options = tf.data.Options()
        options.deterministic = False
        dataset = dataset.with_options(options)
    return _batched(dataset, batch_size, drop_remainder, batches).prefetch(tf.data.AUTOTUNE)


def _random_resized_crop(encoded, image_size, flip):
    def crop_window(shape):
        begin, size, _ = tf.image.sample_distorted_bounding_box(
            shape, bounding_boxes=tf.zeros([1, 0, 4]), area_range=(0.08, 1.0),
            aspect_ratio_range=(3 / 4, 4 / 3), max_attempts=10,
            use_image_if_no_bounding_boxes=True)
        return begin, size

    def jpeg():
        begin, size = crop_window(tf.io.extract_jpeg_shape(encoded))
        window = tf.stack([begin[0], begin[1], size[0], size[1]])
        return tf.io.decode_and_crop_jpeg(encoded, window, channels=3)

    def other():
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        begin, size = crop_window(tf.shape(image))
        return tf.slice(image, begin, size)

    image = tf.cond(tf.io.is_jpeg(encoded), jpeg, other)
    image = tf.image.resize(image, (image_size, image_size))
    if flip:
        image = tf.image.random_flip_left_right(image)
    return torch_normalize(image)
