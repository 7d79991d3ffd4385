"""Image files: which extensions count as images, listing them, and reading one for a model."""

import os

import numpy as np

from keras_densenet.utils import check_input_path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
"""The formats that both training (``tf.io.decode_image`` through ``apps.data``) and classify read."""


INTERPOLATIONS = ("bicubic", "bilinear", "nearest")


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
"""Pillow's modes for 16-bit grayscale; older Pillows open a 16-bit grayscale PNG as ``"I"``."""


def load_image(path, resize=256, crop=224, interpolation="bicubic", channels=3):
    """``(crop, crop, channels)`` uint8 array: shorter side resized to ``resize`` with
    ``interpolation`` (one of ``INTERPOLATIONS``), then center-cropped.

    ``channels``: 3 (RGB: any image is converted), 1 (grayscale: any image is
    converted to luminance) or another count: the image's own bands (RGBA has
    4) or the pages of a multi-page TIFF, one channel each (a one-line
    ``ValueError`` if the file has another count). A 16-bit grayscale image (a
    16-bit PNG or TIFF page) is read at full precision, scaled linearly so that
    65535 becomes 255 (``value / 257``), resized, then rounded to uint8; 16-bit
    RGB PNGs arrive from Pillow already scaled (their high bytes). Raises
    ``ValueError`` naming the file if it is not a readable image, if it holds
    32-bit integer or float pixels (no range to scale from), or if it is so
    large that Pillow refuses to decode it (a decompression bomb).
    """
    from PIL import Image, UnidentifiedImageError

    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}; got {interpolation!r}.")
    try:
        with Image.open(path) as image:
            planes = _planes(image, path, channels)
    except Image.DecompressionBombError as error:
        raise ValueError(f"{path}: refused, too many pixels to decode safely ({error})") from error
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{path}: not a readable image ({error.__class__.__name__})") from error
    pixels = np.concatenate([_resized_crop(plane, resize, crop, interpolation)
                             for plane in planes], axis=-1)
    return np.repeat(pixels, 3, axis=-1) if channels == 3 and pixels.shape[-1] == 1 else pixels


def _planes(image, path, channels):
    """The Pillow images that give the ``channels`` channels of ``image``: one RGB image,
    or one single-band (``"L"``, or ``"F"`` for 16-bit) image per channel (a 16-bit gray
    image once, for 3 channels too)."""
    from PIL import Image

    if channels == 3 and not _sixteen_bit(image, path):
        return [image.convert("RGB")]
    pages = getattr(image, "n_frames", 1)
    if channels not in (1, 3) and pages > 1:
        if pages != channels:
            raise ValueError(f"{path}: {pages} pages, but the model takes {channels} channels.")
        bands = []
        for page in range(pages):
            image.seek(page)
            bands.append(_gray(image, path))
        return bands
    if channels == 1:
        return [_gray(image, path)]
    if _sixteen_bit(image, path):  # a gray 16-bit image (repeated for a 3-channel model)
        return [_gray(image, path)]
    if len(image.getbands()) != channels:
        raise ValueError(f"{path}: {len(image.getbands())} bands ({image.mode}), but the model "
                         f"takes {channels} channels.")
    return [Image.fromarray(np.asarray(band)) for band in image.split()]


def _sixteen_bit(image, path):
    if image.mode in ("I", "F") and not (image.mode == "I" and image.format == "PNG"):
        raise ValueError(f"{path}: 32-bit {'float' if image.mode == 'F' else 'integer'} "
                         "pixels are not read; save it as an 8- or 16-bit image.")
    return image.mode in SIXTEEN_BIT_MODES or image.mode == "I"


def _gray(image, path):
    """One band: 16-bit gray as float ``"F"`` scaled to 0..255, anything else as ``"L"``."""
    from PIL import Image

    if _sixteen_bit(image, path):
        return Image.fromarray(np.asarray(image, dtype="float32") / 257, "F")
    return image.convert("L")


def _resized_crop(image, resize, crop, interpolation):
    """``image`` with its shorter side resized to ``resize``, center-cropped to ``crop``:
    uint8 ``(crop, crop, bands)``."""
    from PIL import Image

    width, height = image.size
    scale = resize / min(width, height)
    image = image.resize((max(crop, round(width * scale)), max(crop, round(height * scale))),
                         getattr(Image.Resampling, interpolation.upper()))
    left = (image.size[0] - crop) // 2
    top = (image.size[1] - crop) // 2
    pixels = np.asarray(image.crop((left, top, left + crop, top + crop)))
    if image.mode == "F":  # 16-bit gray, scaled to 0..255 (bicubic may overshoot it)
        pixels = np.clip(np.round(pixels), 0, 255)
    return pixels.astype("uint8").reshape(crop, crop, -1)


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


def read_batches(paths, settings, batch_size):
    """Yield ``(chunk, images, errors)`` for each ``batch_size`` paths: ``images`` maps each
    path read to its uint8 ``(size, size, channels)`` array (in ``chunk``'s order), ``errors``
    each other path to its one-line message; read and cropped as ``settings`` say (the
    ``resize``, ``size``, ``interpolation`` and ``channels`` of ``classify.serving_settings``)."""
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        images, errors = {}, {}
        for path in chunk:
            try:
                images[path] = load_image(path, settings["resize"], settings["size"],
                                          settings["interpolation"], settings["channels"])
            except (ValueError, FileNotFoundError) as error:
                errors[path] = str(error)
        yield chunk, images, errors


def is_image_name(name):
    """Whether ``name`` ends with one of ``IMAGE_EXTENSIONS`` (any case)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)
