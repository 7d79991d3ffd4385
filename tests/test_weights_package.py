"""The weights package stands alone: importing it imports no framework and no model code."""

import json
import os
import subprocess
import sys

import keras_densenet


def _modules_after(statement):
    """Top-level names of the framework and model modules loaded by ``statement`` in a
    fresh interpreter."""
    root = os.path.dirname(os.path.dirname(keras_densenet.__file__))
    code = (f"import sys; {statement}; import json; print(json.dumps(sorted("
            "m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow', 'tf_keras', "
            "'jax', 'torch', 'keras_hub') or m in ('keras_densenet.model', "
            "'keras_densenet.memory_efficient'))))")
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def test_importing_the_weights_package_imports_no_framework_and_no_model():
    assert _modules_after("import keras_densenet.weights") == []
    assert _modules_after("from keras_densenet.weights import keras_hub, loading, registry") == []
