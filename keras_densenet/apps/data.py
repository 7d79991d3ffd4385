"""Datasets for training: the embedded digits, CIFAR, and image folders.

Every loader returns a ``Splits`` of batched ``tf.data`` pipelines yielding
``(images, labels)``: images ``(batch, size, size, 3)`` float32, normalized
like ``preprocess_input(mode="torch")``, labels int32 class indices.
"""

import collections
import os

import keras
import numpy as np
import tensorflow as tf

from keras_densenet.apps.images import IMAGE_EXTENSIONS, is_image_name
from keras_densenet.preprocessing import TORCH_MEAN, TORCH_STD
from keras_densenet.utils import check_input_path

Splits = collections.namedtuple("Splits", "train validation test class_names image_shape")
"""``train``/``validation``/``test``: ``tf.data.Dataset``, disjoint (validation for model
selection during training, test reported once at the end); ``class_names``: list of
str; ``image_shape``: ``(size, size, 3)``."""

IMAGE_SIGNATURES = {
    # magic bytes of the formats keras.utils.image_dataset_from_directory reads
    b"\xff\xd8\xff": "jpeg",
    b"\x89PNG": "png",
    b"GIF8": "gif",
    b"BM": "bmp",
}
TEST_FRACTION = 0.2
VALIDATION_FRACTION = 0.1
"""Shares of all examples held out for testing and validation (CIFAR: of its training set,
since CIFAR has its own test set); the rest is trained on."""


def load(dataset, image_size, batch_size, augment=False, flip=True, seed=0,
         drop_remainder=False):
    """Load ``dataset`` (``"digits"``, ``"cifar10"``, ``"cifar100"`` or a folder path).

    ``batch_size`` is the global batch. ``drop_remainder``: every batch of both
    splits is full (the last partial one is dropped), as ``keras.distribution``
    needs when it splits each batch evenly over devices.
    """
    if dataset is None:
        raise ValueError("No dataset given: pass --data digits|cifar10|cifar100|PATH "
                         "(PATH: an image folder with one sub-folder per class).")
    if dataset == "digits":
        (x_train, y_train), (x_val, y_val), (x_test, y_test), names = digits(image_size, seed)
    elif dataset in ("cifar10", "cifar100"):
        (x_train, y_train), (x_val, y_val), (x_test, y_test), names = cifar(dataset, image_size)
    elif os.path.isdir(dataset) or os.path.sep in dataset or os.path.exists(dataset):
        return image_folder(dataset, image_size, batch_size, augment, flip, seed,
                            drop_remainder)
    else:
        raise ValueError(f"dataset must be 'digits', 'cifar10', 'cifar100' or an existing "
                         f"image folder; got {dataset!r}.")
    train = tf.data.Dataset.from_tensor_slices((x_train, y_train)).shuffle(
        len(x_train), seed=seed, reshuffle_each_iteration=True).batch(batch_size, drop_remainder)
    validation = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(batch_size, drop_remainder)
    test = tf.data.Dataset.from_tensor_slices((x_test, y_test)).batch(batch_size, drop_remainder)
    return _finish(train, validation, test, names, image_size, augment, flip, seed)


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
                 drop_remainder=False):
    """An image folder with one sub-folder per class, split 70/10/20 into train,
    validation and test (the held-out 30% in a fixed order, its first third validation).

    Grayscale and RGBA images are converted to RGB. Raises ``ValueError`` for a
    missing or empty folder, a single class, or a file that is not an image.
    """
    total = sum(check_image_folder(path).values())
    held_out_fraction = TEST_FRACTION + VALIDATION_FRACTION
    train, held_out = keras.utils.image_dataset_from_directory(
        path, validation_split=held_out_fraction, subset="both", seed=seed,
        image_size=(image_size, image_size), batch_size=None, color_mode="rgb",
        label_mode="int")
    names = train.class_names
    validation_count = max(1, int(VALIDATION_FRACTION * total))
    validation = held_out.take(validation_count)  # held_out is unshuffled
    test = held_out.skip(validation_count)
    train, validation, test = (split.batch(batch_size, drop_remainder)
                               for split in (train, validation, test))
    return _finish(train, validation, test, names, image_size, augment, flip, seed)


def check_image_folder(path):
    """Fail early, naming the problem, on a folder that cannot be trained on.

    Every image file is decoded once (in parallel, with the decoder training
    uses), so that a truncated or corrupt file is named now, with all the others,
    instead of stopping training mid-epoch. Returns ``{class name: image count}``.
    """
    check_input_path(path, "image folder", "folder")
    classes = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
    counts, files = {}, []
    for name in classes:
        found = sorted(os.path.join(path, name, f) for f in os.listdir(os.path.join(path, name))
                       if is_image_name(f))
        files += found
        counts[name] = len(found)
    with_images = [name for name, n in counts.items() if n]
    if not with_images:
        raise ValueError(
            f"Image folder {path!r} holds no images: expected one sub-folder per class with "
            f"{'/'.join(IMAGE_EXTENSIONS)} files (found sub-folders: {classes or 'none'}).")
    if len(with_images) < 2:
        raise ValueError(f"Image folder {path!r} has a single class ({with_images[0]!r}); "
                         "classification needs at least two class sub-folders.")
    bad = undecodable_images(files)
    if bad:
        shown = ", ".join(repr(f) for f in bad[:10]) + (f" and {len(bad) - 10} more"
                                                         if len(bad) > 10 else "")
        raise ValueError(
            f"{len(bad)} of {len(files)} files in image folder {path!r} cannot be decoded as "
            f"images (not JPEG, PNG, GIF or BMP data, or truncated/corrupt): {shown}; "
            "remove or fix them.")
    return counts


def undecodable_images(files):
    """The files among ``files`` that ``tf.io.decode_image`` cannot decode, in order."""
    def has_signature(file):
        with open(file, "rb") as handle:
            head = handle.read(8)
        return any(head.startswith(magic) for magic in IMAGE_SIGNATURES)

    candidates = [i for i, f in enumerate(files) if has_signature(f)]
    if not candidates:
        return list(files)
    decodable = tf.data.Dataset.from_tensor_slices(
        (tf.constant(candidates, tf.int64), tf.constant([files[i] for i in candidates]))
    ).map(lambda index, file: (index, tf.shape(tf.io.decode_image(
        tf.io.read_file(file), channels=3, expand_animations=False))),
        num_parallel_calls=tf.data.AUTOTUNE
    ).ignore_errors().map(lambda index, shape: index)
    good = {int(i) for i in decodable.as_numpy_iterator()}
    return [f for i, f in enumerate(files) if i not in good]


def torch_normalize(images):
    """``preprocess_input(mode="torch")`` in TensorFlow ops, for ``tf.data`` pipelines."""
    mean = tf.constant([255.0 * m for m in TORCH_MEAN])
    std = tf.constant([255.0 * s for s in TORCH_STD])
    return (tf.cast(images, "float32") - mean) / std


def _finish(train, validation, test, names, image_size, augment, flip, seed):
    if augment:
        pad = max(1, image_size // 8)  # the paper's 4 pixels at 32x32
        train = train.map(lambda x, y: (_pad_crop_flip(x, pad, flip, seed), y),
                          num_parallel_calls=tf.data.AUTOTUNE)
    train = train.map(lambda x, y: (torch_normalize(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    validation, test = (
        split.map(lambda x, y: (torch_normalize(x), y), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE) for split in (validation, test))
    return Splits(train.prefetch(tf.data.AUTOTUNE), validation, test, list(names),
                  (image_size, image_size, 3))


def _pad_crop_flip(images, pad, flip, seed):
    """Per image: zero-pad by ``pad`` pixels, randomly crop back, randomly flip left-right."""
    crop_shape = tf.shape(images)[1:]

    def one(image):
        padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
        return tf.image.random_crop(padded, crop_shape)

    cropped = tf.map_fn(one, images, fn_output_signature=tf.TensorSpec(images.shape[1:], images.dtype))
    return tf.image.random_flip_left_right(cropped) if flip else cropped


def image_folder_files(path):
    """``(files, labels, class_names)`` of an image folder (one sub-folder per class),
    checked like ``check_image_folder``; labels index the sorted class names."""
    check_image_folder(path)
    class_names = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
    files, labels = [], []
    for label, name in enumerate(class_names):
        for file in sorted(os.listdir(os.path.join(path, name))):
            if file.lower().endswith(IMAGE_EXTENSIONS):
                files.append(os.path.join(path, name, file))
                labels.append(label)
    return files, np.array(labels, "int32"), class_names


def imagenet_train_pipeline(files, labels, image_size, batch_size, flip=True, seed=0,
                            parallel=True, cache=False, drop_remainder=False):
    """The ImageNet training input: read, decode, random-resized-crop, flip, normalize.

    Per image: a random crop of 8-100% of the area with aspect ratio 3/4-4/3
    (Inception-style, as in the DenseNet paper's ImageNet training), decoded
    from the JPEG window only (``decode_and_crop_jpeg``; PNG/GIF/BMP decode
    whole), resized to ``image_size`` (bilinear), flipped left-right at random,
    normalized like ``preprocess_input(mode="torch")``; then batched and
    prefetched. Yields ``(batch, image_size, image_size, 3)`` float32 and int32
    labels, reshuffled every epoch.

    Args:
        files, labels: image paths and their class indices (``image_folder_files``).
        parallel: decode and augment on all cores (``tf.data.AUTOTUNE``, order
            not deterministic); ``False``: one image at a time.
        cache: keep the encoded files in memory after the first epoch (disk
            reads once; needs the dataset's size in RAM). ``cache`` may also
            be a file path (``tf.data.Dataset.cache``) for a local-disk copy.
    """
    calls = tf.data.AUTOTUNE if parallel else None
    dataset = tf.data.Dataset.from_tensor_slices((list(files), np.asarray(labels, "int32")))

    def read(file, label):
        return tf.io.read_file(file), label

    if cache:
        dataset = dataset.map(read, num_parallel_calls=calls).cache(
            cache if isinstance(cache, str) else "")
    dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    if not cache:
        dataset = dataset.map(read, num_parallel_calls=calls)
    dataset = dataset.map(
        lambda encoded, label: (_random_resized_crop(encoded, image_size, flip), label),
        num_parallel_calls=calls)
    if parallel:
        options = tf.data.Options()
        options.deterministic = False
        dataset = dataset.with_options(options)
    return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


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
