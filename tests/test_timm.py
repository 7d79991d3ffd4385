"""timm's DenseNets: its state dicts (deep stem, BlurPool) load into ours and give timm's logits.

The reference is timm's own model (``timm.create_model``) with random weights
and random BN statistics, saved as timm saves them on the Hugging Face Hub
(``model.safetensors``). timm, torch and safetensors are in the ``test`` extra;
without them these tests are skipped.
"""

import numpy as np
import pytest

from keras_densenet import DenseNetBlur121d, DenseNetImageNet, weights
from keras_densenet.weights import pytorch

torch = pytest.importorskip("torch", reason="timm's models need torch (pip install torch)")
safetensors_torch = pytest.importorskip("safetensors.torch", reason="needs safetensors")

from keras_densenet.apps import port  # noqa: E402
from keras_densenet.apps.source_models import timm_model, timm_outputs  # noqa: E402
from timm_import import import_timm  # noqa: E402

try:
    import_timm()
except ImportError as error:  # pragma: no cover - depends on the environment
    pytest.skip(f"timm is not installed ({error}): pip install timm", allow_module_level=True)

ODD = 97
TOLERANCE = 1e-4


def _timm_file(folder, name):
    """timm's ``name`` with random weights and BN statistics, saved as ``model.safetensors``."""
    torch.manual_seed(0)
    model = timm_model(name)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    path = str(folder / f"{name}.safetensors")
    safetensors_torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path


def _images(size, batch=1):
    return np.random.default_rng(size).normal(size=(batch, size, size, 3)).astype("float32")


def test_densenetblur121d_ports_and_reproduces_timm_at_224_and_an_odd_size(tmp_path):
    path = _timm_file(tmp_path, "densenetblur121d")
    out = str(tmp_path / "blur.weights.h5")
    # port's self-check runs timm's own model at port.VERIFY_SIZE
    model, difference = port.port(path, "densenetblur121d", out)
    assert difference < TOLERANCE
    assert weights.detect(out).name == "keras3"
    assert model.densenet_config["published_name"] == "densenetblur121d"
    for size in (224, ODD):
        images = _images(size)
        ours = np.asarray(model(images, training=False))
        reference = timm_outputs(path, "densenetblur121d", True, images)
        assert np.max(np.abs(ours - reference)) < TOLERANCE, size
    # the ported file, and timm's own, in the layout whose stem is recomputed in training
    for source in (out, path):
        full = DenseNetBlur121d(weights=source, activation=None, memory_efficient="full")
        np.testing.assert_allclose(np.asarray(full(images, training=False)), ours, atol=1e-5,
                                   err_msg=source)


def test_timm_densenet121_keys_reproduce_timm(tmp_path):
    path = _timm_file(tmp_path, "densenet121")  # the keys of densenet121.tv_in1k / .ra_in1k
    model = DenseNetImageNet("densenet121", weights=path, activation=None)
    images = _images(ODD)
    reference = timm_outputs(path, "densenet121", True, images)
    assert np.max(np.abs(np.asarray(model(images, training=False)) - reference)) < TOLERANCE


def test_deep_stem_keys_map_to_our_stem_layers():
    assert pytorch.layer_name("features.conv0", deep_stem=True) == "stem_conv1"
    assert pytorch.layer_name("features.norm2", deep_stem=True) == "stem_bn3"
    assert pytorch.layer_name("features.norm0") == "stem_bn"
    assert pytorch.layer_name("features.norm5", deep_stem=True) == "final_bn"


def _stem_only_state(filt):
    state = {"features.conv0.weight": np.zeros((32, 3, 3, 3), "float32"),
             "features.conv1.weight": np.zeros((32, 32, 3, 3), "float32"),
             "features.pool0.1.filt": filt}
    return state


def test_a_blur_filter_buffer_is_checked_and_not_loaded():
    taps = np.array([1.0, 2.0, 1.0], "float32") / 4
    binomial = np.tile(np.outer(taps, taps)[None, None], (64, 1, 1, 1))
    table = pytorch.state_dict_to_table(_stem_only_state(binomial))
    assert sorted(table) == ["stem_conv1", "stem_conv2"]
    with pytest.raises(ValueError, match="binomial blur filter"):
        pytorch.state_dict_to_table(_stem_only_state(np.ones((64, 1, 3, 3), "float32") / 9))


def test_manifest_lists_timm_with_its_eval_settings():
    sources = weights.sources()
    for source in ("timm", "timm_tv"):
        assert sources[source]["format"] == "safetensors"
        assert sources[source]["preprocessing"] == "torch"
        assert (sources[source]["crop_pct"], sources[source]["interpolation"]) == (0.875, "bicubic")
    assert sources["timm"]["test_crop_pct"] == 0.95
    entry = weights.find_entry("densenetblur121d", include_top=True)
    assert entry["source"] == "timm" and entry["url"].startswith(
        "https://huggingface.co/timm/densenetblur121d.ra_in1k/")
    tv = {e["architecture"] for e in weights.manifest() if e["source"] == "timm_tv"}
    assert tv == {"densenet121", "densenet161", "densenet169", "densenet201"}
    plan = weights.resolve("imagenet", architecture="densenetblur121d", include_top=True,
                           classes=1000)
    assert (plan.file_format, plan.bn_epsilon, plan.stem_padding) == ("safetensors", 1e-5,
                                                                      "symmetric")


def test_a_model_records_the_eval_transform_of_its_weights_source():
    from keras_densenet.arguments import Architecture
    from keras_densenet.builder import weights_facts
    from keras_densenet.model import build

    architecture = Architecture.from_arguments(
        depth=10, nb_dense_block=3, growth_rate=4, nb_filter=8, nb_layers_per_block=-1,
        bottleneck=False, reduction=0.0, dropout_rate=0.0, weight_decay=0.0,
        subsample_initial_block=False, include_top=True, input_shape=(32, 32, 3), pooling=None,
        classes=10, activation="softmax", data_format="channels_last", bn_epsilon=1e-5,
        stem_padding="symmetric", memory_efficient=False, stem_type="standard",
        anti_alias=False)
    torchvision = weights.WeightsPlan(path=None, file_format="torch",
                                      entry={"source": "torchvision"})
    config = build(architecture, **weights_facts(torchvision)).densenet_config
    assert (config["crop_pct"], config["interpolation"]) == (0.875, "bilinear")
    assert config["weights_source"] == "torchvision"


def test_download_does_not_trust_an_entry_without_a_hash(tmp_path):
    served = tmp_path / "model.safetensors"
    served.write_bytes(b"not checked")
    entry = {"url": served.as_uri(), "file_name": "unchecked.safetensors",
             "hash_algorithm": "none", "hash": None}
    with pytest.raises(ValueError, match="no published hash") as error:
        weights.download(entry, cache_dir=str(tmp_path / "cache"))
    cached = tmp_path / "cache" / "densenet" / "unchecked.safetensors"
    assert cached.is_file() and str(cached) in str(error.value)


def test_densenet264d_is_timms_architecture_at_random_weights(tmp_path):
    """timm publishes no densenet264d weights: the architecture alone, from its one record."""
    from keras_densenet import DenseNetImageNet264d
    from keras_densenet.apps import summary

    path = _timm_file(tmp_path, "densenet264d")
    model = DenseNetImageNet264d(weights=path, activation=None)
    reference_model = timm_model("densenet264d")
    assert model.count_params() - sum(b.numel() for b in reference_model.buffers()
                                      if b.dtype.is_floating_point) == sum(
        p.numel() for p in reference_model.parameters())
    assert dict((row[0], row[3]) for row in summary.preset_table())["densenet264d"] == sum(
        p.numel() for p in reference_model.parameters())
    assert model.densenet_config["published_name"] == "densenet264d"
    images = _images(64, batch=2)
    reference = timm_outputs(path, "densenet264d", True, images)
    ours = np.asarray(model(images, training=False))
    assert np.max(np.abs(ours - reference)) < TOLERANCE * max(1.0, np.max(np.abs(reference)))
