"""Image files: which extensions count as images, listing them, and reading one for a model."""

import os

import numpy as np

from keras_densenet.utils import check_input_path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
"""The formats that both training (``tf.io.decode_image`` through ``apps.data``) and classify read."""


INTERPOLATIONS = ("bicubic", "bilinear", "nearest")


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
"""Pillow's modes for 16-bit grayscale; older Pillows open a 16-bit grayscale PNG as ``"I"``."""


def load_image(path, resize=256, crop=224, interpolation="bicubic"):
    """RGB ``(crop, crop, 3)`` uint8 array: shorter side resized to ``resize`` with
    ``interpolation`` (one of ``INTERPOLATIONS``), then center-cropped.

    A 16-bit grayscale image (a 16-bit PNG) is read at full precision, scaled
    linearly so that 65535 becomes 255 (``value / 257``), resized, then
    rounded to uint8; 16-bit RGB PNGs arrive from Pillow already scaled (their
    high bytes). Raises ``ValueError`` naming the file if it is not a readable
    image, if it holds 32-bit integer or float pixels (no range to scale from),
    or if it is so large that Pillow refuses to decode it (a decompression bomb).
    """
    from PIL import Image, UnidentifiedImageError

    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}; got {interpolation!r}.")
    try:
        with Image.open(path) as image:
            if image.mode in SIXTEEN_BIT_MODES or (image.mode == "I" and image.format == "PNG"):
                image = Image.fromarray(np.asarray(image, dtype="float32") / 257, "F")
            elif image.mode in ("I", "F"):
                raise ValueError(f"{path}: 32-bit {'float' if image.mode == 'F' else 'integer'} "
                                 "pixels are not read; save it as an 8- or 16-bit image.")
            else:
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
    pixels = np.asarray(image.crop((left, top, left + crop, top + crop)))
    if image.mode == "F":  # 16-bit grayscale, scaled to 0..255 (bicubic may overshoot it)
        pixels = np.repeat(np.clip(np.round(pixels), 0, 255)[..., None], 3, axis=-1)
    return pixels.astype("uint8")


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
