"""RDNet (keras_densenet.rdnet) against timm's own RDNet, every parameter randomized.

The reference is ``timm.create_model("rdnet_*")`` in eval mode with every tensor of
its state dict drawn at random (layer-scale gammas and LayerNorm weights
included, so that every block counts), saved as timm saves it (``.safetensors``,
``.pth``) and loaded into ours through ``load_rdnet_weights``.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="timm's models need torch (pip install torch)")
pytest.importorskip("safetensors")

from timm_import import import_timm  # noqa: E402
from keras_densenet.architectures import RDNET_VARIANTS
from keras_densenet.preprocessing import TORCH_MEAN, TORCH_STD
from keras_densenet.rdnet import (MIN_SIZE, RDNet,  # noqa: E402
                                  RDNetBase, RDNetLarge, RDNetSmall, RDNetTiny, drop_path_rates,
                                  pyramid_layers)
from keras_densenet.weights.rdnet_timm import (is_rdnet_state_dict,  # noqa: E402
                                               load_rdnet_weights, state_dict_to_table)

try:
    timm = import_timm()
except ImportError as error:  # pragma: no cover
    pytest.skip(f"timm is not installed ({error}): pip install timm", allow_module_level=True)

TOLERANCE = 1e-4
"""Largest logit difference allowed, relative to the largest logit."""


def _random_timm(variant, seed=0):
    """timm's ``variant`` in eval mode with every state dict tensor random."""
    model = timm.create_model(variant, pretrained=False).eval()
    norm_weights = {f"{name}.weight" for name, module in model.named_modules()
                    if isinstance(module, torch.nn.LayerNorm)}
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            noise = torch.randn(value.shape, generator=generator)
            if value.ndim > 1:  # conv and linear weights: unit gain
                value.copy_(noise / np.sqrt(value[0].numel()))
            elif key in norm_weights:
                value.copy_(1.0 + 0.3 * noise)
            elif key.endswith("gamma"):  # layer scale
                value.copy_(0.5 * noise)
            else:  # biases
                value.copy_(0.3 * noise)
    return model


@pytest.fixture(scope="module")
def timm_files(tmp_path_factory):
    """``{variant: (timm model, .safetensors path, .pth path)}`` for tiny and small."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("rdnet")
    files = {}
    for variant in ("rdnet_tiny", "rdnet_small"):
        model = _random_timm(variant)
        state = model.state_dict()
        initial = timm.create_model(variant, pretrained=False).state_dict()
        assert all(not torch.equal(state[k], initial[k]) for k in state), "a tensor kept its init"
        safetensors_path, pth_path = folder / f"{variant}.safetensors", folder / f"{variant}.pth"
        save_file(state, str(safetensors_path))
        torch.save(state, str(pth_path))
        files[variant] = (model, str(safetensors_path), str(pth_path))
    return files


def _timm_logits(model, images_nchw):
    with torch.no_grad():
        return model(torch.from_numpy(images_nchw)).numpy()


def _relative_error(ours, reference):
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def _images(height, width, n=2, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 3, height, width)).astype("float32")


@pytest.mark.parametrize("variant, size, data_format, file", [
    ("rdnet_tiny", (224, 224), "channels_last", "safetensors"),
    ("rdnet_tiny", (160, 224), "channels_first", "pth"),
    pytest.param("rdnet_small", (224, 224), "channels_first", "safetensors",
                 marks=pytest.mark.slow),
    pytest.param("rdnet_small", (160, 224), "channels_last", "pth", marks=pytest.mark.slow),
])
def test_logits_match_timm(timm_files, variant, size, data_format, file):
    reference, safetensors_path, pth_path = timm_files[variant]
    model = RDNet(variant, data_format=data_format,
                  weights=safetensors_path if file == "safetensors" else pth_path)
    images = _images(*size)
    x = images if data_format == "channels_first" else images.transpose(0, 2, 3, 1)
    expected = _timm_logits(reference, images)
    assert _relative_error(model.predict(x, verbose=0), expected) < TOLERANCE


def test_timm_weights_load_in_a_memory_efficient_mode(timm_files):
    """The state dict maps onto the weights layers of memory_efficient=True (same names)."""
    reference, path, _ = timm_files["rdnet_tiny"]
    images = _images(64, 64)
    model = RDNetTiny(input_shape=(64, 64, 3), weights=path, memory_efficient=True)
    expected = _timm_logits(reference, images)
    assert _relative_error(model.predict(images.transpose(0, 2, 3, 1), verbose=0),
                           expected) < TOLERANCE


def test_headless_outputs_and_pyramid_match_timm(timm_files):
    """pooling="avg" is timm's headless model (pool, head LayerNorm); the pyramid levels are
    the stages of timm's feature_info."""
    reference, path, _ = timm_files["rdnet_tiny"]
    images = _images(64, 96)
    x = images.transpose(0, 2, 3, 1)
    with torch.no_grad():
        tensor = torch.from_numpy(images)
        pooled = reference.forward_head(reference.forward_features(tensor), pre_logits=True)
        stages = reference.forward_intermediates(tensor, intermediates_only=True)
    model = RDNetTiny(include_top=False, pooling="avg", weights=path)
    assert _relative_error(model.predict(x, verbose=0), pooled.numpy()) < TOLERANCE

    levels = pyramid_layers("rdnet_tiny")
    assert list(levels) == ["P2", "P3", "P4", "P5"]
    assert [2 ** int(level[1:]) for level in levels] == [
        info["reduction"] for info in reference.feature_info]
    backbone = keras.Model(model.input, [model.get_layer(n).output for n in levels.values()])
    for ours, theirs in zip(backbone.predict(x, verbose=0), stages):
        assert _relative_error(ours, theirs.numpy().transpose(0, 2, 3, 1)) < TOLERANCE


def test_feature_maps_match_timm_and_survive_saving(timm_files, tmp_path):
    """include_top=False, pooling=None: timm's forward_features (the head's layers in the
    file are left out); a .keras round trip keeps the outputs."""
    reference, _, path = timm_files["rdnet_tiny"]
    images = _images(64, 64)
    with torch.no_grad():
        expected = reference.forward_features(torch.from_numpy(images)).numpy()
    model = RDNetTiny(include_top=False, input_shape=(3, 64, 64), data_format="channels_first",
                      weights=path)
    ours = model.predict(images, verbose=0)
    assert _relative_error(ours, expected) < TOLERANCE
    saved = str(tmp_path / "rdnet_tiny.keras")
    model.save(saved)
    np.testing.assert_allclose(keras.saving.load_model(saved).predict(images, verbose=0), ours,
                               atol=1e-6)


EXPORT_RUNTIMES = {"onnx": "onnxruntime", "openvino": "openvino",
                   "saved_model": "tensorflow", "tflite": "ai_edge_litert.interpreter"}


def _run_export(file_format, path, raw):
    """The outputs of the exported file ``path`` on ``raw`` images, by its own runtime:
    ``keras_densenet.runtime`` (ONNX, OpenVINO), the SavedModel's serving signature,
    LiteRT's interpreter."""
    if file_format in ("onnx", "openvino"):
        from keras_densenet import runtime

        return runtime.load(path, precision="f32").predict(raw)
    if file_format == "saved_model":
        import tensorflow as tf

        serving = tf.saved_model.load(path).signatures["serving_default"]
        (output,) = serving(images=tf.constant(raw)).values()
        return output.numpy()
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(path)
    (input_detail,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(input_detail["index"], raw.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(input_detail["index"], raw)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.mark.parametrize("file_format, name, memory_efficient", [
    pytest.param("onnx", "rdnet_tiny.onnx", False, marks=pytest.mark.slow),
    ("openvino", "rdnet_tiny.xml", False),
    pytest.param("saved_model", "rdnet_tiny", False, marks=pytest.mark.slow),
    pytest.param("tflite", "rdnet_tiny.tflite", False, marks=pytest.mark.slow),
    pytest.param("tflite", "rdnet_tiny.tflite", "full", marks=pytest.mark.slow)])
def test_exports_run_without_keras_and_match_timm(timm_files, tmp_path, file_format, name,
                                                  memory_efficient):
    """Keras' model.export with torch preprocessing baked in (uint8 images in), run by the
    format's own runtime: timm's logits on the same ImageNet-normalized images, also from a
    model built with ``memory_efficient`` (its inference graph computes the same)."""
    pytest.importorskip(EXPORT_RUNTIMES[file_format])
    from keras_densenet.export import export

    reference, path, _ = timm_files["rdnet_tiny"]
    raw = np.random.default_rng(2).integers(0, 256, (2, 64, 64, 3)).astype("uint8")
    mean, std = np.array(TORCH_MEAN, "float32"), np.array(TORCH_STD, "float32")
    normalized = ((raw / np.float32(255) - mean) / std).astype("float32")
    expected = _timm_logits(reference, normalized.transpose(0, 3, 1, 2).copy())
    model = RDNetTiny(input_shape=(64, 64, 3), weights=path, memory_efficient=memory_efficient)
    exported = export(model, str(tmp_path / name), file_format, preprocessing="torch")
    assert _relative_error(_run_export(file_format, exported, raw), expected) < TOLERANCE


def test_pyramid_levels_of_every_variant_are_timms_strides():
    small = timm.create_model("rdnet_small", pretrained=False)
    expected = {f"P{info['reduction'].bit_length() - 1}":
                f"stage{info['module'].split('.')[-1]}_block2_concat"
                for info in small.feature_info}
    assert pyramid_layers("rdnet_small") == expected
    for variant in RDNET_VARIANTS:
        assert list(pyramid_layers(variant)) == ["P2", "P3", "P4", "P5"]


@pytest.mark.parametrize("constructor, parameters", [
    (RDNetTiny, 23_863_008), (RDNetSmall, 50_436_448), (RDNetBase, 87_451_096),
    (RDNetLarge, 186_269_632)])
def test_parameter_counts_equal_timms(constructor, parameters):
    assert constructor(input_shape=(None, None, 3)).count_params() == parameters


def test_drop_path_rates_are_timms_and_drop_whole_samples_in_training_only(timm_files):
    reference = timm.create_model("rdnet_tiny", pretrained=False, drop_path_rate=0.3)
    theirs = [[block.drop_path.drop_prob for block in stage[-1]]
              for stage in reference.dense_stages]
    ours = drop_path_rates(0.3, RDNET_VARIANTS["rdnet_tiny"]["num_blocks_list"])
    np.testing.assert_allclose(np.concatenate(ours), np.concatenate(theirs), atol=1e-7)

    path = timm_files["rdnet_tiny"][1]
    dropping = RDNetTiny(input_shape=(64, 64, 3), drop_path_rate=0.5, weights=path)
    plain = RDNetTiny(input_shape=(64, 64, 3), weights=path)
    assert [layer.rate for layer in dropping.layers if layer.name.endswith("_drop_path")] == [
        rate for stage in drop_path_rates(0.5, (3,) * 7) for rate in stage if rate > 0]
    x = np.random.default_rng(1).normal(size=(16, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(dropping.predict(x, verbose=0), plain.predict(x, verbose=0),
                               atol=1e-6)

    last = dropping.get_layer("stage6_block2_drop_path")  # rate 0.5: kept samples doubled
    probe = keras.Model(dropping.input, [last.input, last.output])
    kept, dropped = 0, 0
    for _ in range(2):
        before, after = (keras.ops.convert_to_numpy(t) for t in probe(x, training=True))
        for sample_before, sample_after in zip(before, after):
            if np.all(sample_after == 0):
                dropped += 1
            else:
                np.testing.assert_allclose(sample_after, 2 * sample_before, rtol=1e-6)
                kept += 1
    assert kept and dropped


def test_wrong_state_dicts_fail_in_one_line(timm_files, tmp_path):
    from safetensors.torch import save_file

    reference, path, _ = timm_files["rdnet_tiny"]
    state = reference.state_dict()
    model = RDNetTiny(input_shape=(64, 64, 3))
    before = [w.copy() for w in model.get_weights()]
    cases = {
        "missing_bias": ({k: v for k, v in state.items() if k != "stem.1.bias"},
                         "lacks the bias of the layer stem_norm"),
        "missing_layer": ({k: v for k, v in state.items() if not k.startswith("head.norm")},
                          "head_norm: missing from the file"),
        "wrong_shape": ({**state, "stem.0.weight": torch.zeros(64, 3, 2, 2)},
                        "stem_conv: model has [(4, 4, 3, 64), (64,)], file has [(2, 2, 3, 64)"),
        "stray_key": ({**state, "head.pre_logits.fc.weight": torch.zeros(4, 4)},
                      "head.pre_logits.fc.weight is not a key of timm's RDNet state dict"),
        "densenet": (timm.create_model("densenet121", pretrained=False).state_dict(),
                     "The state dict is not timm's RDNet: it has no dense_stages.* keys"),
    }
    for name, (broken, message) in cases.items():
        broken_path = str(tmp_path / f"{name}.safetensors")
        save_file({k: v.contiguous() for k, v in broken.items()}, broken_path)
        with pytest.raises(ValueError, match="^[^\n]*$") as error:
            load_rdnet_weights(model, broken_path)
        assert message in str(error.value), name
    for weight, value in zip(model.get_weights(), before):
        np.testing.assert_array_equal(weight, value)

    text = tmp_path / "notes.txt"
    text.write_text("not weights")
    for bad, message in ((str(text), "neither a .safetensors file nor a PyTorch state dict"),
                         (str(tmp_path / "absent.pth"), "no such file")):
        with pytest.raises(ValueError, match=message):
            load_rdnet_weights(model, bad)
    assert is_rdnet_state_dict(state) and not is_rdnet_state_dict(cases["densenet"][0])


def test_state_dict_layout():
    """Kernels transposed to Keras order, NAVER's original stem.stem.* keys accepted."""
    rng = np.random.default_rng(0)
    state = {"stem.stem.0.weight": rng.normal(size=(64, 3, 4, 4)),
             "stem.stem.0.bias": rng.normal(size=64),
             "dense_stages.0.0.dense_block0.layers.layers.0.weight": rng.normal(size=(64, 1, 7, 7)),
             "dense_stages.0.0.dense_block0.layers.layers.0.bias": rng.normal(size=64),
             "dense_stages.2.2.dense_block1.layers.layers.5.fc.weight": rng.normal(
                 size=(128, 128, 1, 1)),
             "dense_stages.2.2.dense_block1.layers.layers.5.fc.bias": rng.normal(size=128),
             "dense_stages.0.0.dense_block2.gamma": rng.normal(size=64),
             "head.fc.weight": rng.normal(size=(10, 32)), "head.fc.bias": rng.normal(size=10)}
    table = state_dict_to_table(state)
    assert sorted(table) == ["predictions", "stage0_block0_dwconv", "stage0_block2_layer_scale",
                             "stage2_block1_se_conv", "stem_conv"]
    np.testing.assert_array_equal(table["stem_conv"][0],
                                  state["stem.stem.0.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(
        table["stage0_block0_dwconv"][0],
        state["dense_stages.0.0.dense_block0.layers.layers.0.weight"].transpose(2, 3, 0, 1))
    assert table["predictions"][0].shape == (32, 10)


def test_arguments_are_checked_before_building():
    for kwargs, message in ((dict(variant="rdnet_huge"), "variant must be one of"),
                            (dict(input_shape=(16, 64, 3)), "at least 32"),
                            (dict(drop_path_rate=1.5), "drop_path_rate"),
                            (dict(pooling="sum"), "pooling"),
                            (dict(weights="absent.safetensors"), "no such file")):
        with pytest.raises(ValueError, match=message):
            RDNet(**{"variant": "rdnet_tiny", **kwargs})
    assert MIN_SIZE == 32


def test_input_tensor_classes_and_activation():
    images = keras.Input((3, 64, 96))
    model = RDNetTiny(input_tensor=images, data_format="channels_first", classes=10,
                      classifier_activation="softmax", name="tiny10")
    assert model.input is images and model.name == "tiny10" and model.output.shape == (None, 10)
    x = np.random.default_rng(0).normal(size=(2, 3, 64, 96)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0).sum(-1), 1.0, rtol=1e-5)
    assert model.get_layer("stage6_block2_concat").output.shape == (None, 1040, 2, 3)


def test_manifest_lists_the_published_tags_with_timms_eval_settings():
    from keras_densenet import weights

    entries = [e for e in weights.manifest() if e["architecture"] in RDNET_VARIANTS]
    tags = {e["file_name"].removesuffix(".safetensors"): e for e in entries}
    assert set(tags) == set(timm.list_pretrained("rdnet*"))
    for tag, entry in tags.items():
        cfg = timm.models.get_pretrained_cfg(tag).to_dict()
        source = weights.sources()[entry["source"]]
        assert (3, source["input_size"], source["input_size"]) == cfg["input_size"]
        assert (source["crop_pct"], source["interpolation"]) == (cfg["crop_pct"],
                                                                cfg["interpolation"])
        assert source["preprocessing"] == "torch" and (TORCH_MEAN, TORCH_STD) == (
            cfg["mean"], cfg["std"])
        assert entry["url"] == (f"https://huggingface.co/{cfg['hf_hub_id']}/resolve/main/"
                                "model.safetensors")
        assert entry["hash_algorithm"] == "none" and entry["hash"] is None


def test_imagenet_weights_come_from_the_manifest(timm_files, tmp_path, monkeypatch):
    """weights="imagenet" downloads the manifest's file (here a local one with its hash)."""
    from keras_densenet.weights import registry

    _, path, _ = timm_files["rdnet_tiny"]
    entry = {**registry.find_entry("rdnet_tiny", True, "timm_rdnet"), "url": f"file://{path}",
             "hash_algorithm": "sha256", "hash": registry.file_hash(path, "sha256")}
    download = registry.download
    monkeypatch.setattr(registry, "find_entry", lambda *args: entry)
    monkeypatch.setattr(registry, "download", lambda e: download(e, cache_dir=str(tmp_path)))
    model = RDNetTiny(weights="imagenet", input_shape=(64, 64, 3))
    reference = RDNetTiny(weights=path, input_shape=(64, 64, 3))
    images = _images(64, 64).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(np.asarray(model(images)), np.asarray(reference(images)))
    config = model.densenet_config
    assert (config["weights_source"], config["crop_pct"], config["preprocessing"]) == (
        "timm_rdnet", 0.9, "torch")
    with pytest.raises(ValueError, match="weights_source applies only"):
        RDNetTiny(weights_source="timm_rdnet_384")


_BACKEND_CHECK = """
import sys
import numpy as np
from keras_densenet.rdnet import RDNetTiny
folder, data_format = sys.argv[1:3]
x = np.load(folder + "/images.npy")
if data_format == "channels_last":
    x = x.transpose(0, 2, 3, 1)
model = RDNetTiny(input_shape=x.shape[1:], data_format=data_format,
                  weights=folder + "/rdnet_tiny.safetensors")
np.save(folder + "/logits.npy", model.predict(x, verbose=0))
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend, data_format", [("jax", "channels_last"),
                                                  ("torch", "channels_first")])
def test_other_backends_match_timm(timm_files, backend, data_format, tmp_path):
    """One process per backend (Keras fixes it at import); building RDNet on JAX takes minutes
    on a loaded 2-core machine, so each backend checks one data format."""
    pytest.importorskip(backend)
    import shutil

    reference, path, _ = timm_files["rdnet_tiny"]
    shutil.copy(path, tmp_path / "rdnet_tiny.safetensors")
    images = _images(64, 64)
    np.save(tmp_path / "images.npy", images)
    result = subprocess.run([sys.executable, "-c", _BACKEND_CHECK, str(tmp_path), data_format],
                            capture_output=True, text=True, timeout=900,
                            env={**os.environ, "KERAS_BACKEND": backend})
    assert result.returncode == 0, result.stderr[-4000:]
    logits = np.load(tmp_path / "logits.npy")
    assert _relative_error(logits, _timm_logits(reference, images)) < TOLERANCE


def test_rdnet_records_its_config_and_explains_itself():
    """RDNet is a DenseNetModel: its pyramid, Grad-CAM layer and eval transform are recorded."""
    from keras_densenet import RDNetTiny, model_config
    from keras_densenet.explain import grad_cam

    model = RDNetTiny(input_shape=(64, 64, 3), classes=4)
    config = model_config(model)
    assert config["published_name"] == "rdnet_tiny" and config["architecture"] is None
    assert config["cam_layer"] == "stage6_block2_concat"
    assert (config["crop_pct"], config["interpolation"]) == (0.9, "bicubic")
    assert config["pyramid"] == pyramid_layers("rdnet_tiny")
    heatmaps = grad_cam(model, np.random.default_rng(0).uniform(size=(2, 64, 64, 3)))
    assert heatmaps.shape == (2, 64, 64) and 0.0 <= heatmaps.min() and heatmaps.max() <= 1.0


def test_port_writes_an_rdnet_weights_file_checked_against_timm(timm_files, tmp_path):
    from keras_densenet.apps import port

    _, safetensors_path, _ = timm_files["rdnet_tiny"]
    out = str(tmp_path / "rdnet_tiny.weights.h5")
    model, difference = port.port(safetensors_path, "rdnet_tiny", out)
    assert difference is not None and difference < 1e-4
    again = RDNetTiny(weights=out)
    images = _images(64, 64).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(again(images, training=False)),
                               np.asarray(model(images, training=False)), atol=1e-6)
    from keras_densenet import DenseNetImageNet121

    with pytest.raises(ValueError, match="RDNet state dict"):
        DenseNetImageNet121(weights=safetensors_path)
