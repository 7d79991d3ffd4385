"""Argument checks shared by the builders (``DenseNet``, ``DenseNetFCN``, the presets).

Each check raises a one-line ``ValueError`` naming the argument, what is
allowed and what was given, and returns the value in its canonical type.
"""

import math
import numbers

from keras_densenet.utils import DATA_FORMATS


def check_choice(argument, value, allowed):
    """``value`` if it is one of ``allowed``, of the same type (``1`` is not ``True``)."""
    if not any(value is a or (type(value) is type(a) and value == a) for a in allowed):
        raise ValueError(f"{argument} must be one of {allowed}; got {value!r}.")
    return value


def check_bool(argument, value):
    """``value`` as a bool; strings such as ``"False"`` are refused, not taken as true."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise ValueError(f"{argument} must be True or False; got {value!r}.")


def check_positive_int(argument, value, maximum=None):
    """``value`` as an int >= 1 (NumPy integers too; bools and floats refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{argument} must be a positive integer; got {value!r}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"{argument} must be at most {maximum}; got {value!r}.")
    return int(value)


def check_number(argument, value, allowed, ok):
    """``value`` as a float if it is a finite real number for which ``ok(value)`` holds.

    ``allowed`` describes the accepted range in the message (e.g. ``"[0, 1)"``).
    """
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or not ok(value)):
        raise ValueError(f"{argument} must be a finite number in {allowed}; got {value!r}.")
    return float(value)


def check_fraction(argument, value):
    """``value`` in [0, 1) (reduction, dropout rate)."""
    return check_number(argument, value, "[0, 1)", lambda v: 0.0 <= v < 1.0)


def check_data_format(data_format):
    return check_choice("data_format", data_format, DATA_FORMATS)


def check_activation(argument, activation):
    """``None`` or the name of a Keras activation (``"softmax"``, ``"sigmoid"``, ``"linear"``, ...)."""
    import keras

    if activation is None:
        return None
    if not isinstance(activation, str):
        raise ValueError(f"{argument} must be None or the name of a Keras activation "
                         f"(e.g. 'softmax', 'sigmoid', 'linear'); got {activation!r}.")
    try:
        keras.activations.get(activation)
    except (ValueError, TypeError):
        raise ValueError(f"{argument} must be None or the name of a Keras activation "
                         f"(e.g. 'softmax', 'sigmoid', 'linear'); got {activation!r}.") from None
    return activation


def image_shape(input_shape, data_format):
    """``(spatial sizes, channels)`` of an ``(H, W, C)`` / ``(C, H, W)`` shape, checked.

    H and W may be ``None``; every given entry must be a positive integer.
    """
    try:
        input_shape = tuple(input_shape)
    except TypeError:
        input_shape = None
    if input_shape is None or len(input_shape) != 3:
        raise ValueError(
            f"input_shape must have 3 entries, (H, W, C) for channels_last or (C, H, W) for "
            f"channels_first; got {input_shape!r}.")
    for size in input_shape:
        if size is not None and (isinstance(size, bool) or not isinstance(size, numbers.Integral)
                                 or size < 1):
            raise ValueError(f"input_shape entries must be positive integers or None; "
                             f"got {input_shape!r}.")
    if data_format == "channels_last":
        spatial, channels = input_shape[:2], input_shape[2]
    else:
        spatial, channels = input_shape[1:], input_shape[0]
    if channels is None:
        raise ValueError(f"input_shape {input_shape} has no channel count for "
                         f"data_format={data_format!r}.")
    return tuple(None if s is None else int(s) for s in spatial), int(channels)
