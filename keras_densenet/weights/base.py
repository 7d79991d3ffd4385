"""What every weight-file format provides: ``WeightFormat``.

A format module (``keras3``, ``legacy_h5``, ``pytorch``) defines one
``WeightFormat`` instance per format it reads and lists it in
``registry.FORMATS``. A format knows how to recognise its files
(``detect``), what the model must be for them (BN epsilon, stem padding,
input channels, preprocessing: ``requirements``) and how to turn a file into a
``WeightTable`` (``read``, or ``table`` where the model is needed): our layer
names (see ``keras_densenet.blocks``) mapped to lists of NumPy arrays in Keras
order (conv kernel ``(kh, kw, in, out)``; BN gamma, beta, moving mean, moving
variance; Dense kernel ``(in, out)``, bias). ``load_into`` hands that table to
``assignment.assign``, which every format goes through.
"""

import dataclasses

from keras_densenet.weights.assignment import assign, describe, weighted_layers

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


@dataclasses.dataclass(frozen=True)
class WeightFormat:
    """One file format of published DenseNet weights.

    Attributes:
        name: registry key (``"keras3"``, ``"keras_applications"``, ``"torch"``, ...).
        description: for messages, e.g. ``"PyTorch state dict (torchvision/timm keys)"``.
        bn_epsilon, stem_padding, preprocessing: what the weights were
            trained with (``None``: any / recorded in the file).
        channels: input channels the weights were trained on (``None``: any).
    """

    name: str
    description: str
    bn_epsilon: float = None
    stem_padding: str = None
    preprocessing: str = None
    channels: int = 3

    def detect(self, path, head):
        """Whether the file at ``path``, starting with the bytes ``head``, is of this format."""
        raise NotImplementedError

    def requirements(self, path):
        """``{bn_epsilon, stem_padding, preprocessing, channels}`` the model needs for ``path``
        (``path`` is ``None`` before a manifest download: the format's defaults)."""
        return {"bn_epsilon": self.bn_epsilon, "stem_padding": self.stem_padding,
                "preprocessing": self.preprocessing, "channels": self.channels}

    def read(self, path, weighted_layer_names):
        """The ``WeightTable`` of the file. ``weighted_layer_names``: the model's weighted
        layers in topological order (for formats matched by position)."""
        raise NotImplementedError

    def table(self, model, path):
        """The ``WeightTable`` of ``path`` for ``model``: ``read`` with the model's
        weighted layer names."""
        return self.read(path, list(weighted_layers(model)))

    def load_into(self, model, path):
        """Read ``path`` and assign it to ``model``; ``ValueError`` leaves the model untouched."""
        try:
            table = self.table(model, path)
        except ImportError:
            raise
        except ValueError as error:
            raise ValueError(f"{error} Model {model.name!r} expects {describe(model)}.") from error
        except Exception as error:  # h5py, torch and safetensors each raise their own types
            raise ValueError(
                f"{path!r} could not be read as {self.description}: the file is truncated or "
                f"corrupt ({type(error).__name__}: {error}). Model {model.name!r} expects "
                f"{describe(model)}.") from error
        assign(model, table, source=f"{path!r} ({self.description})")


def text(value):
    """``value`` as ``str`` (HDF5 attributes may be bytes)."""
    return value.decode("utf8") if isinstance(value, bytes) else str(value)
