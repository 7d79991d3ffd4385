"""Named training recipes: the paper's CIFAR and ImageNet schedules, and a fast default.

A recipe holds every hyper-parameter of a run; ``Recipe.replace(**overrides)``
changes any of them (the CLI maps each field to a ``--flag``).
"""

import dataclasses

from keras_densenet.apps.labels import LabelsLayout
from keras_densenet.architectures import RDNET_VARIANTS

TRANSFORMS = ("resize", "imagenet")
"""``Recipe.transform`` values (see ``Recipe``)."""
PRECISIONS = {"float32": "float32", "bf16": "mixed_bfloat16", "float16": "mixed_float16"}
"""``Recipe.precision`` values and the Keras dtype policy each trains under."""
ARCHS = ("densenet", *RDNET_VARIANTS)
"""``Recipe.arch`` values: the DenseNet builder, or an RDNet variant."""


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Hyper-parameters of one training run.

    Attributes:
        model: keyword arguments of ``keras_densenet.DenseNet`` (without
            ``input_shape``/``classes``, which come from the data); with an RDNet
            ``arch``, its ``drop_path_rate`` only.
        arch: ``"densenet"`` (the builder, with ``model``) or an RDNet variant
            (``architectures.RDNET_VARIANTS``: ``"rdnet_tiny"`` ...).
        dataset: ``"digits"`` (embedded), ``"cifar10"``, ``"cifar100"``, the path of
            an image folder (one sub-folder per class), or ``None`` (must be given).
        val_dataset: ``None`` (validation and test are held out of ``dataset``), or
            the path of an image folder with the same class sub-folders (ImageNet's
            val layout): then all of ``dataset`` is trained on, and ``val_dataset``
            is evaluated after every epoch and, at the end, as the test split.
        image_size: the model's input is ``image_size x image_size``.
        transform: how image files become inputs (arrays are always resized whole):
            ``"resize"``, the whole image resized (with ``augment``: pad-and-crop);
            ``"imagenet"``, for training a random-resized crop (8-100% of the
            area, aspect 3/4-4/3), for evaluation the shorter side resized to
            ``image_size / 0.875`` and the center crop.
        epochs: training epochs.
        batch_size: per-replica batch size.
        learning_rate: initial SGD learning rate.
        lr_milestones: fractions of ``epochs`` at which the rate is divided by 10.
        momentum, nesterov: SGD momentum settings.
        augment: ``transform="resize"``: 4px pad-and-crop (scaled with the image
            size) and horizontal flip; ``"imagenet"``: the random-resized crop and
            flip (without it: the evaluation transform).
        flip: include the horizontal flip in the augmentation (off for digits).
        precision: ``"float32"``, ``"bf16"`` (Keras' ``mixed_bfloat16`` policy) or
            ``"float16"`` (``mixed_float16``, GPUs only).
        weights: ``None`` (random initialization), ``"imagenet"`` or a weights file:
            every layer but the classifier starts from these weights (fine-tuning).
        labels: ``None`` (one class per image), or a labels CSV naming images of the
            folder ``dataset`` and their labels: multi-label training (sigmoid
            outputs, binary cross-entropy, AUROC; see ``apps.labels``).
        labels_layout: the CSV's column names, separator and "none" label, the
            fields of ``apps.labels.LabelsLayout`` (default: NIH ChestX-ray14's).
    """

    model: dict
    dataset: str = "digits"
    val_dataset: str = None
    image_size: int = 32
    transform: str = "resize"
    epochs: int = 300
    batch_size: int = 64
    learning_rate: float = 0.1
    lr_milestones: tuple = (0.5, 0.75)
    momentum: float = 0.9
    nesterov: bool = True
    augment: bool = True
    flip: bool = True
    precision: str = "float32"
    weights: str = None
    arch: str = "densenet"
    labels: str = None
    labels_layout: dict = dataclasses.field(
        default_factory=lambda: dataclasses.asdict(LabelsLayout()))

    @classmethod
    def from_dict(cls, fields):
        """The recipe of a ``config.json``'s ``"recipe"`` (``dataclasses.asdict`` of one
        read back as JSON); fields it lacks take their defaults."""
        return cls(**{**fields, "lr_milestones": tuple(fields["lr_milestones"])})

    def replace(self, **overrides):
        """A copy with ``overrides`` applied; ``None`` values are ignored."""
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"Unknown recipe fields {sorted(unknown)}; "
                             f"known: {[f.name for f in dataclasses.fields(self)]}.")
        return dataclasses.replace(
            self, **{k: v for k, v in overrides.items() if v is not None})


_BC = dict(bottleneck=True, reduction=0.5, weight_decay=1e-4)

RECIPES = {
    # A DenseNet-BC (L=40, k=12, 0.18M parameters) on scikit-learn's digits,
    # upscaled to 32x32: a few minutes on a CPU.
    "digits": Recipe(
        model=dict(depth=40, growth_rate=12, **_BC),
        dataset="digits", image_size=32, epochs=12, batch_size=32,
        learning_rate=0.1, augment=True, flip=False,
    ),
    # Huang et al. 2017, section 4.2: DenseNet-BC (L=100, k=12) on CIFAR.
    "cifar": Recipe(
        model=dict(depth=100, growth_rate=12, **_BC),
        dataset="cifar10", image_size=32, epochs=300, batch_size=64, learning_rate=0.1,
    ),
    # Huang et al. 2017, section 4.2: ImageNet, 90 epochs, /10 at epochs 30 and 60.
    "imagenet": Recipe(
        model=dict(nb_dense_block=4, nb_layers_per_block=[6, 12, 24, 16], growth_rate=32,
                   nb_filter=64, subsample_initial_block=True, **_BC),
        dataset=None, image_size=224, epochs=90, batch_size=256, learning_rate=0.1,
        lr_milestones=(1 / 3, 2 / 3), transform="imagenet",
    ),
}
