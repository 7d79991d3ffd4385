"""The keras-densenet command and its summary subcommand."""

from keras_densenet.apps import cli


def test_summary_prints_the_parameter_table(capsys):
    assert cli.main(["summary", "densenet121", "densenet_bc100_k12"]) == 0
    out = capsys.readouterr().out
    assert "densenet121" in out and "7,978,856" in out
    assert "densenet_bc100_k12" in out and "769,162" in out


def test_help_and_unknown_command(capsys):
    assert cli.main([]) == 0
    assert "summary" in capsys.readouterr().out
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err
