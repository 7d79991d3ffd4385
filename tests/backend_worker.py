"""Runs the cross-backend checks in one process of the backend in KERAS_BACKEND.

    KERAS_BACKEND=jax python tests/backend_worker.py WORKDIR

Reads WORKDIR/inputs.npz and the weight files the parent test wrote, writes
WORKDIR/<backend>.npz with every output, and prints "ok <backend>".
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_densenet import DenseNet, DenseNetFCN, preprocess_input, runtime  # noqa: E402
from keras_densenet.export import export  # noqa: E402
from keras_densenet.apps.distribute import distribution_strategy  # noqa: E402

CIFAR = dict(depth=16, growth_rate=4, bottleneck=True, reduction=0.5, classes=5)
IMAGENET = dict(nb_dense_block=4, nb_layers_per_block=[1, 2, 1, 1], growth_rate=4, nb_filter=8,
                bottleneck=True, reduction=0.5, subsample_initial_block=True, classes=7,
                activation=None)
FCN = dict(nb_dense_block=2, growth_rate=4, nb_layers_per_block=1, init_conv_filters=8,
           classes=3, dropout_rate=0.0)


def channels_first(x):
    return x.transpose(0, 3, 1, 2)


def main(workdir):
    backend = keras.backend.backend()
    inputs = np.load(os.path.join(workdir, "inputs.npz"))
    x, raw, labels = inputs["x"], inputs["raw"], inputs["labels"]
    out = {}

    for name, config, weights in (("cifar", CIFAR, "cifar.weights.h5"),
                                  ("torch", IMAGENET, "torch_small.safetensors")):
        path = os.path.join(workdir, weights)
        last = DenseNet(**config, input_shape=(64, 64, 3), weights=path)
        first = DenseNet(**config, input_shape=(3, 64, 64), data_format="channels_first",
                         weights=path)
        out[f"{name}_last"] = np.asarray(last.predict(x, verbose=0))
        out[f"{name}_first"] = np.asarray(first.predict(channels_first(x), verbose=0))

    efficient, full = (DenseNet(**CIFAR, input_shape=(64, 64, 3), memory_efficient=mode,
                                weights=os.path.join(workdir, "cifar.weights.h5"))
                       for mode in (True, "full"))
    out["efficient"] = np.asarray(efficient.predict(x, verbose=0))
    out["full"] = np.asarray(full.predict(x, verbose=0))

    fcn = DenseNetFCN((32, 32, 3), **FCN)
    fcn.load_weights(os.path.join(workdir, "fcn.weights.h5"))
    out["fcn"] = np.asarray(fcn.predict(x[:, :32, :32], verbose=0))

    for mode in ("torch", "caffe_bgr"):
        out[f"preprocess_{mode}"] = keras.ops.convert_to_numpy(
            preprocess_input(keras.ops.convert_to_tensor(raw), mode=mode))

    path = os.path.join(workdir, f"{backend}.keras")
    last.save(path)
    np.testing.assert_allclose(keras.models.load_model(path).predict(x, verbose=0),
                               out["torch_last"], atol=1e-6)

    # an OpenVINO IR through Keras' model.export, BN folded, run without Keras; from JAX
    # a one-line error (jax2tf's XlaCallModule ops cannot be converted)
    ir = os.path.join(workdir, f"{backend}.xml")
    if backend == "jax":
        try:
            export(last, ir, "openvino", fuse=True)
        except ValueError as error:
            assert "re-load the .keras model with KERAS_BACKEND=tensorflow" in str(error), error
        else:
            raise AssertionError("OpenVINO export from JAX now works: test it like the others")
    else:
        out["openvino"] = runtime.load(export(last, ir, "openvino", fuse=True)).predict(x)

    for model in (DenseNet(**CIFAR, input_shape=(64, 64, 3)), efficient, full):
        before = [w.copy() for w in model.get_weights()]
        model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
        loss = model.fit(x, labels, epochs=1, batch_size=len(x), verbose=0).history["loss"][0]
        assert np.isfinite(loss), f"non-finite loss {loss}"
        assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))

    if backend != "tensorflow":
        for call, message in ((lambda: export(last, os.path.join(workdir, "sm"), "saved_model"),
                               "needs the TensorFlow backend"),
                              (lambda: distribution_strategy("mirrored"), "keras.distribution")):
            try:
                call()
            except ValueError as error:
                assert message in str(error), str(error)
            else:
                raise AssertionError(f"no error on {backend} for a TensorFlow-only feature")

    np.savez(os.path.join(workdir, f"{backend}.npz"), **out)
    print(f"ok {backend}")


if __name__ == "__main__":
    main(sys.argv[1])
