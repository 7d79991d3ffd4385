"""Presets reproduce the published parameter counts exactly (full-size models)."""

import pytest

from keras_densenet import (DenseNetCIFAR, DenseNetImageNet, DenseNetImageNet121,
                            DenseNetImageNet161, DenseNetImageNet169, DenseNetImageNet201,
                            DenseNetImageNet232, DenseNetImageNet264)
from counting import trainable_parameters

IMAGENET_COUNTS = [
    # torchvision's published counts (1000 classes)
    (DenseNetImageNet121, "densenet121", 7_978_856, 1024),
    (DenseNetImageNet161, "densenet161", 28_681_000, 2208),
    (DenseNetImageNet169, "densenet169", 14_149_480, 1664),
    (DenseNetImageNet201, "densenet201", 20_013_928, 1920),
    (DenseNetImageNet264, "densenet264", 33_337_704, 2688),
    # the technical report's DenseNet-232 (k=48): 214 MB of float32 weights in its release
    (DenseNetImageNet232, "densenet232", 55_570_984, 3648),
]

CIFAR_COUNTS = [
    # Huang et al. 2017, Table 2, in millions, 10 classes
    ("densenet40_k12", 1.0),
    ("densenet100_k12", 7.0),
    ("densenet100_k24", 27.2),
    ("densenet_bc100_k12", 0.8),
    ("densenet_bc250_k24", 15.3),
    ("densenet_bc190_k40", 25.6),
]


@pytest.mark.parametrize("constructor, name, count, features", IMAGENET_COUNTS,
                         ids=[c[1] for c in IMAGENET_COUNTS])
def test_imagenet_parameter_counts(constructor, name, count, features):
    model = constructor(input_shape=(224, 224, 3))
    assert model.name == name
    assert trainable_parameters(model) == count
    assert model.output.shape == (None, 1000)
    assert model.get_layer("final_bn").output.shape == (None, 7, 7, features)


@pytest.mark.parametrize("preset, millions", CIFAR_COUNTS, ids=[c[0] for c in CIFAR_COUNTS])
def test_cifar_parameter_counts_round_to_the_paper(preset, millions):
    model = DenseNetCIFAR(preset)
    assert round(trainable_parameters(model) / 1e6, 1) == millions
    assert model.output.shape == (None, 10)


def test_imagenet_preset_passes_builder_arguments_through():
    model = DenseNetImageNet121(include_top=False, pooling="avg", input_shape=(3, 64, 64),
                                data_format="channels_first", name="backbone")
    assert model.name == "backbone"
    assert model.output.shape == (None, 1024)


def test_unknown_presets_are_rejected():
    with pytest.raises(ValueError, match="architecture must be one of"):
        DenseNetImageNet("densenet122")
    with pytest.raises(ValueError, match="preset must be one of"):
        DenseNetCIFAR("densenet_bc100")


def test_imagenet_weights_need_the_1000_class_top():
    with pytest.raises(ValueError, match="needs classes=1000"):
        DenseNetImageNet121(weights="imagenet", classes=10)


@pytest.mark.slow
def test_every_variant_record_reaches_presets_port_classify_summary_and_published_names():
    """A variant is one record: every place that lists variants derives from it."""
    import keras_densenet
    from keras_densenet.apps import classify, port, summary
    from keras_densenet.architectures import IMAGENET_VARIANTS, VARIANTS

    port_choices = next(a for a in port.build_parser()._actions if a.dest == "arch").choices
    classify_choices = next(a for a in classify.build_parser()._actions if a.dest == "arch").choices
    table = {row[0]: row for row in summary.preset_table()}
    assert list(table) == list(VARIANTS)
    for name in IMAGENET_VARIANTS:
        variant = VARIANTS[name]
        assert name in port_choices and name in classify_choices
        constructor = getattr(keras_densenet, variant.constructor)
        assert constructor.__name__ == variant.constructor and constructor in (
            getattr(keras_densenet, n) for n in keras_densenet.__all__)
        model = constructor(input_shape=(32, 32, 3), classes=3, include_top=False)
        assert model.densenet_config["published_name"] == model.name == name
    assert set(IMAGENET_VARIANTS) >= {"densenet121", "densenet161", "densenet169",
                                      "densenet201", "densenetblur121d", "densenet264d"}
