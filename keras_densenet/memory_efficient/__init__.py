"""Memory-efficient training (Pleiss et al., "Memory-Efficient Implementation of DenseNets", 2017).

In a plain DenseNet every dense layer stores, for the backward pass, the
concatenation of all earlier feature maps and its BN and ReLU outputs: tensors
whose size grows with the layer index, so training memory grows quadratically
with depth. ``DenseNet(memory_efficient=True)`` recomputes each dense layer's
concat-BN-ReLU-conv in the backward pass instead (``ConcatenationBatchNorm``
turns the moments of the earlier maps into BN's affine map, ``RecomputedConv``
convolves, ``recompute.recomputed`` keeps only the maps); ``"full"`` recomputes
each whole bottleneck layer (``RecomputedDenseLayer``), each transition and the
ImageNet stem (``RecomputedStem``), storing only each layer's new maps.

Same layer names, variables and gradients as the plain model: weight files and
``.keras`` files load whatever the mode (``layers``); ``memory_modes`` moves a
trained model between modes.

RDNet's modes (``rdnet.RDNet(memory_efficient=...)``) use the same ``recomputed``
for each whole block (and in ``"full"`` each transition and the stem), with the
weights of ``weights_layer`` layers (``rdnet.RecomputedSequence``).

* ``recompute``: the recomputation (TensorFlow, JAX, PyTorch);
* ``moments``: per-channel batch moments, computed once per map (``FeatureMoments``);
* ``layers``: the layer classes.
"""

from keras_densenet.memory_efficient.layers import (ConcatenationBatchNorm, KernelConv2D,
                                                    RecomputedConv, RecomputedDenseLayer,
                                                    RecomputedStem, weights_layer)
from keras_densenet.memory_efficient.moments import (FeatureMoments, channel_moments,
                                                     statistics_dtype)
from keras_densenet.memory_efficient.recompute import recomputed

__all__ = ["ConcatenationBatchNorm", "FeatureMoments", "KernelConv2D", "RecomputedConv",
           "RecomputedDenseLayer", "RecomputedStem", "channel_moments", "recomputed",
           "statistics_dtype", "weights_layer"]
