"""Image files: which extensions count as images, listing them, and reading one for a model."""

import os

import numpy as np

from keras_densenet.utils import check_input_path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
"""The formats that both training (``keras.utils.image_dataset_from_directory``) and classify read."""


INTERPOLATIONS = ("bicubic", "bilinear", "nearest")


def load_image(path, resize=256, crop=224, interpolation="bicubic"):
    """RGB ``(crop, crop, 3)`` uint8 array: shorter side resized to ``resize`` with
    ``interpolation`` (one of ``INTERPOLATIONS``), then center-cropped.

    Raises ``ValueError`` naming the file if it is not a readable image, or if it
    is so large that Pillow refuses to decode it (a decompression bomb).
    """
    from PIL import Image, UnidentifiedImageError

    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}; got {interpolation!r}.")
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except Image.DecompressionBombError as error:
        raise ValueError(f"{path}: refused, too many pixels to decode safely ({error})") from error
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{path}: not a readable image ({error.__class__.__name__})") from error
    width, height = image.size
    scale = resize / min(width, height)
    image = image.resize((max(crop, round(width * scale)), max(crop, round(height * scale))),
                         getattr(Image.Resampling, interpolation.upper()))
    left = (image.size[0] - crop) // 2
    top = (image.size[1] - crop) // 2
    return np.asarray(image.crop((left, top, left + crop, top + crop)), dtype="uint8")


def image_paths(inputs):
    """Files named in ``inputs``, folders expanded to the images they hold (sorted).

    Raises a one-line ``ValueError`` naming the first item that is neither a file nor a
    folder, before any model is loaded. A file named outright is kept whatever its
    extension (reading it says whether it is an image).
    """
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            paths.extend(sorted(os.path.join(item, name) for name in os.listdir(item)
                                if is_image_name(name)))
        else:
            check_input_path(item, "image", "file or folder")
            paths.append(item)
    return paths


def is_image_name(name):
    """Whether ``name`` ends with one of ``IMAGE_EXTENSIONS`` (any case)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)
