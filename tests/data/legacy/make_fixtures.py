"""Made these fixtures with keras-densenet at commit b1a78f1, before the package layout changed (run from the repo root).

tests/test_legacy_files.py checks that they still load and give the recorded outputs.
"""
import os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np, keras
from keras_densenet import DenseNet, DenseNetFCN
from keras_densenet import weights
keras.utils.set_random_seed(0)
out = "tests/data/legacy"
rng = np.random.default_rng(0)
x = rng.normal(size=(2, 32, 32, 3)).astype("float32")
def randomize_bn(m):
    for l in m.layers:
        if isinstance(l, keras.layers.BatchNormalization):
            g, b, mu, var = l.get_weights()
            l.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, .1, b.shape), rng.normal(0, .1, mu.shape), rng.uniform(0.5, 1.5, var.shape)])
expected = {"input": x}
models = {
  "plain": DenseNet(depth=10, growth_rate=4, bottleneck=True, reduction=0.5, nb_dense_block=2, nb_layers_per_block=[2, 2], input_shape=(32, 32, 3), classes=3),
  "memory_efficient": DenseNet(depth=10, growth_rate=4, bottleneck=True, reduction=0.5, nb_dense_block=2, nb_layers_per_block=[2, 2], input_shape=(32, 32, 3), classes=3, memory_efficient=True),
  "blur": DenseNet(nb_dense_block=2, nb_layers_per_block=[1, 1], growth_rate=4, nb_filter=8, bottleneck=True, reduction=0.5, subsample_initial_block=True, stem_type="deep", anti_alias=True, input_shape=(32, 32, 3), classes=3),
  "fcn": DenseNetFCN((32, 32, 3), nb_dense_block=2, growth_rate=4, nb_layers_per_block=1, init_conv_filters=8, classes=3, upsampling_type="subpixel"),
}
for name, m in models.items():
    randomize_bn(m)
    m.save(f"{out}/{name}.keras")
    expected[name] = keras.ops.convert_to_numpy(m(x, training=False))
weights.save_weights(models["plain"], f"{out}/plain.weights.h5", bn_epsilon=1e-5, stem_padding="symmetric", preprocessing="torch")
np.savez(f"{out}/expected.npz", **expected)
