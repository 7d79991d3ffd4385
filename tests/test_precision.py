"""``--precision``: refused in one line where the hardware lacks it, recorded, restored."""

import json
import os

import keras
import pytest

from keras_densenet.apps import precision
from keras_densenet.apps import train as train_lib
from keras_densenet.apps.recipes import RECIPES

TINY = RECIPES["digits"].replace(
    model=dict(depth=10, growth_rate=4, bottleneck=True, reduction=0.5), image_size=8,
    epochs=1, batch_size=256, augment=False)


def test_bf16_is_detected_from_the_cpu_flags(tmp_path):
    for flags, has in (("fpu avx512f avx512_bf16 vnni", True), ("fpu amx_bf16 amx_tile", True),
                       ("fpu avx2 avx512f", False)):
        (tmp_path / "cpuinfo").write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        assert precision.cpu_has_bf16(str(tmp_path / "cpuinfo")) is has
    assert precision.cpu_has_bf16(str(tmp_path / "missing")) is False


def test_what_the_hardware_lacks_is_one_line(monkeypatch):
    monkeypatch.setattr(precision, "accelerators", lambda: [])
    with pytest.raises(ValueError, match="--precision float16 needs a GPU") as error:
        precision.check_precision("float16")
    assert "\n" not in str(error.value)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    with pytest.raises(ValueError, match="--precision bf16 needs a GPU or a CPU with bfloat16"):
        precision.check_precision("bf16")
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.check_precision("int8")
    precision.check_precision("float32")
    monkeypatch.setattr(precision, "accelerators", lambda: ["GPU:0"])
    precision.check_precision("float16")


def test_a_refused_precision_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "accelerators", lambda: [])
    with pytest.raises(ValueError, match="float16 needs a GPU"):
        train_lib.train(TINY.replace(precision="float16"), str(tmp_path / "run"), verbose=0)
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not (precision.cpu_has_bf16() or precision.accelerators()),
                    reason="needs bfloat16 hardware")
def test_bf16_trains_records_and_restores_the_policy(tmp_path):
    run = str(tmp_path / "run")
    metrics = train_lib.train(TINY.replace(precision="bf16"), run, verbose=0)
    assert 0 <= metrics["test_accuracy"] <= 1
    with open(os.path.join(run, "config.json")) as handle:
        assert json.load(handle)["recipe"]["precision"] == "bf16"
    model = keras.models.load_model(os.path.join(run, "model.keras"))
    assert model.get_layer("block1_layer1_conv1").dtype_policy.name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "float32"  # restored after the run
