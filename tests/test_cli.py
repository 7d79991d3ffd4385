"""The keras-densenet command: start-up, one-line errors, --version, and summary."""

import os
import signal
import subprocess
import sys
import time

import pytest

from keras_densenet import DenseNet, __version__
from keras_densenet.apps import cli, summary

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)
FRAMEWORK_LOG_MARKERS = ("I0000", "E0000", "W0000", "absl::InitializeLog", "cuInit",
                         "cpu_feature_guard")


def run_cli(*argv, code="", env=None):
    """Run the CLI in a fresh interpreter; returns (completed process, wall seconds)."""
    script = ("import sys\nfrom keras_densenet.apps import cli\nstatus = cli.main(sys.argv[1:])\n"
              + code + "sys.exit(status)\n")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True,
                            timeout=300, cwd=ROOT, env={**os.environ, **(env or {})})
    return result, time.perf_counter() - start


@pytest.mark.parametrize("flag, expected", [("--help", "usage: keras-densenet"),
                                            ("--version", f"keras-densenet {__version__}")])
def test_help_and_version_start_instantly_without_the_framework(flag, expected):
    heavy = ("for name in ('keras', 'tensorflow', 'jax', 'torch'):\n"
             "    assert name not in sys.modules, name\n")
    result, seconds = run_cli(flag, code=heavy)
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout and result.stderr == ""
    # Python's own start-up is ~0.1 s; on a loaded 2-core CI machine allow a margin (the
    # guarantee is that no framework is imported, checked above).
    assert seconds < 3, f"{flag} took {seconds:.2f} s"


@pytest.mark.slow
def test_a_failing_command_prints_one_line_without_framework_logs(tmp_path):
    (tmp_path / "photo.png").write_bytes(b"")  # named images must exist; the model is missing
    result, _ = run_cli("classify", str(tmp_path / "photo.png"), "--model",
                        str(tmp_path / "missing.keras"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"keras-densenet classify: error: --model {str(tmp_path / 'missing.keras')!r}: "
        "no such file. (--debug shows the traceback)"]
    assert not any(marker in result.stdout + result.stderr for marker in FRAMEWORK_LOG_MARKERS)


def test_errors_are_one_line_unless_debugging(monkeypatch, capsys):
    assert cli.main(["classify", "x.png", "--top", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["keras-densenet classify: error: --top must be a positive "
                                "integer; got -1. (--debug shows the traceback)"]
    with pytest.raises(ValueError, match="--top must be a positive integer"):
        cli.main(["--debug", "classify", "x.png", "--top", "-1"])
    monkeypatch.setenv(cli.DEBUG_VARIABLE, "1")
    with pytest.raises(ValueError, match="--top must be a positive integer"):
        cli.main(["classify", "x.png", "--top", "-1"])


def test_an_unexpected_error_deep_in_a_command_is_one_line(tmp_path, monkeypatch, capsys):
    from keras_densenet.apps import data

    def offline(*args, **kwargs):  # what keras.datasets does without network, chained
        try:
            raise ConnectionError("Temporary failure in name resolution")
        except ConnectionError as error:
            raise RuntimeError("Could not load cifar10 through keras.datasets\n"
                               f"({error})") from error

    monkeypatch.setattr(data, "cifar", offline)
    assert cli.main(["train", "--recipe", "cifar", "--output", str(tmp_path / "run")]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "keras-densenet train: error: Could not load cifar10 through keras.datasets "
        "(Temporary failure in name resolution) (--debug shows the traceback)"]


def test_help_and_unknown_command(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in cli.COMMANDS) and "--version" in out
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_summary_prints_an_aligned_parameter_table(capsys):
    assert cli.main(["summary", "densenet121", "densenet_bc100_k12", "wide_densenet_bc40_k36"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["preset", "input", "classes", "trainable", "params"]
    assert "7,978,856" in lines[1] and "769,162" in lines[2] and "1,542,682" in lines[3]
    # every column starts (text) or ends (numbers) at the same position on every line
    assert len({len(line) for line in lines}) == 1
    assert len({line.index(line.split()[1]) for line in lines}) == 1
    assert {line.split()[0] for line in lines[1:]} == {
        "densenet121", "densenet_bc100_k12", "wide_densenet_bc40_k36"}


def test_summary_refuses_unknown_presets(capsys):
    assert cli.main(["summary", "densenet122"]) == 2
    assert "unknown presets ['densenet122']" in capsys.readouterr().err


def test_a_usage_error_is_reported_before_the_framework_starts():
    heavy = "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules\n"
    result, _ = run_cli("train", "--epochs", "many", code=heavy)
    assert result.returncode == 2
    assert "argument --epochs: invalid int value: 'many'" in result.stderr


@pytest.mark.slow
def test_ctrl_c_in_train_is_one_line_naming_the_resume_command(tmp_path):
    run = str(tmp_path / "run")
    script = "import sys\nfrom keras_densenet.apps import cli\nsys.exit(cli.main(sys.argv[1:]))\n"
    process = subprocess.Popen(
        [sys.executable, "-c", script, "train", "--output", run, "--epochs", "100", "--depth",
         "10", "--growth-rate", "4", "--image-size", "16", "--quiet"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"})  # a user's
    deadline = time.monotonic() + 240
    while not os.path.exists(os.path.join(run, "log.csv")):  # the first epoch is done
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == cli.INTERRUPTED_EXIT_CODE == 130, err
    assert err.splitlines() == [f"keras-densenet train: interrupted; continue the run with: "
                                f"keras-densenet train --output {run} --resume"]


def test_an_error_raised_by_ctrl_c_is_an_interruption_too(monkeypatch, capsys):
    def interrupt_inside(args):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("an iterator was cancelled")

    monkeypatch.setattr(summary, "run", interrupt_inside)
    assert cli.main(["summary"]) == 130
    assert capsys.readouterr().err.strip() == "keras-densenet summary: interrupted"


def test_ctrl_c_in_another_command_says_interrupted(monkeypatch, capsys):
    def interrupt(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(summary, "run", interrupt)
    assert cli.main(["summary"]) == 130
    assert capsys.readouterr().err.splitlines() == ["keras-densenet summary: interrupted"]


def _trainable(model):
    return sum(int(w.numpy().size) for w in model.trainable_weights)


@pytest.mark.parametrize("arguments", [
    dict(depth=16, growth_rate=4),  # plain, CIFAR stem
    dict(depth=22, growth_rate=6, bottleneck=True, reduction=0.5, nb_filter=10, classes=7),
    dict(nb_dense_block=4, nb_layers_per_block=[1, 2, 1, 2], growth_rate=4, nb_filter=8,
         bottleneck=True, reduction=0.5, subsample_initial_block=True, classes=5),
    dict(nb_dense_block=2, nb_layers_per_block=[1, 1], growth_rate=4, nb_filter=8,
         subsample_initial_block=True, stem_type="deep", include_top=False),
])
def test_parameter_formula_matches_built_models(arguments):
    model = DenseNet(input_shape=(32, 32, 3), **arguments)
    architecture = model.densenet_config["architecture"]
    expected = summary.trainable_parameters(
        architecture["nb_layers_per_block"], architecture["growth_rate"],
        architecture["nb_filter"], architecture["bottleneck"], architecture["reduction"],
        architecture["subsample_initial_block"], architecture["include_top"],
        architecture["classes"], architecture["stem_type"])
    assert expected == _trainable(model)
