"""Recomputation in the backward pass: ``recomputed`` keeps a dense layer's inputs, not its
concatenation (Pleiss et al., "Memory-Efficient Implementation of DenseNets", 2017).

``recomputed(function, features, concatenation, axis, *args)`` is
``function(concat(features), *args)`` whose backward pass recomputes the
concatenation from ``features`` (stored anyway: every later layer reads them).
On TensorFlow a ``tf.custom_gradient``, on JAX a ``jax.custom_vjp``, on
PyTorch ``keras.remat`` (``torch.utils.checkpoint``).
"""

import keras
from keras import ops


def recomputed(function, features, concatenation, axis, *args):
    """``function(concat(features), *args)``, recomputed in the backward pass from ``features``.

    Only ``features`` (stored anyway: every later layer reads them), ``args``
    and the outputs are kept for the backward pass, not the concatenation.

    On TensorFlow ``function`` reads ``concatenation`` (``concat(features)``, from
    the block's chain of ``Concatenate`` layers, each adding one map to the
    previous layer's) and sends its whole gradient back to it: the chain then
    sums each map's gradient layer by layer, as the plain model's backward pass
    does, and a layer adds O(1) graph nodes, however many maps it reads (a
    gradient for each of them would be O(depth^2) nodes per block, each costing
    TensorFlow about 20 KB of memory, and TensorFlow would hold each map's parts
    until the last arrives). The backward pass recomputes the concatenation
    from ``features`` (``keras.remat`` of ``function`` would store it), and
    passes on the concatenation's gradient, which the next recomputation waits
    for, only once this one's other gradients are computed: otherwise
    TensorFlow's executor may start the next while this one's concatenation-wide
    transients are still alive (docs/memory.md measures both). JAX
    does the same (``_recomputed_jax``; without ``concatenation`` it
    concatenates the maps in the forward pass). On PyTorch, or on TensorFlow
    without ``concatenation`` (``.keras`` files of earlier releases),
    ``keras.remat`` (``torch.utils.checkpoint``, ``tf.recompute_grad``)
    recomputes ``concat(features)`` and ``function``, each map getting its own
    gradient part.

    Args:
        function: ``(x, *args) -> output`` or a tuple of outputs; may read variables.
        features: list of ``(batch, H, W, C_i)`` maps (or channels first).
        concatenation: ``concat(features, axis)`` or ``None``.
        axis: the channel axis.
        args: further tensor arguments (gradients flow to them).
    """
    if keras.backend.backend() == "jax":
        concatenation = concatenation_or_concat(features, concatenation, axis)
        return _recomputed_jax(function, features, concatenation, axis, *args)
    if concatenation is None or keras.backend.backend() != "tensorflow":
        def forward(*tensors):
            return function(ops.concatenate(tensors[len(args):], axis=axis), *tensors[:len(args)])
        return keras.remat(forward)(*args, *features)
    import tensorflow as tf

    @tf.custom_gradient
    def forward(x, *tensors):
        def gradient(*output_gradients, variables=()):
            x = _concatenated_after(output_gradients[0], features, axis)
            with tf.GradientTape() as tape:
                tape.watch([x, *tensors])
                outputs = tf.nest.flatten(function(x, *tensors))
            output_gradients = [tf.zeros_like(y) if g is None else g
                                for y, g in zip(outputs, output_gradients)]
            gradients = tape.gradient(outputs, [x, *tensors, *variables], output_gradients,
                                      unconnected_gradients=tf.UnconnectedGradients.ZERO)
            # The concatenation's gradient leads to the next recomputation: hold it back
            # until the other gradients, the last readers of this one's transients, are done.
            with tf.control_dependencies(gradients[1:]):
                gradients[0] = tf.identity(gradients[0])
            return gradients[:1 + len(tensors)], gradients[1 + len(tensors):]
        return function(x, *tensors), gradient

    return forward(concatenation, *args)


def _recomputed_jax(function, features, concatenation, axis, *args):
    """``recomputed`` on JAX: a ``jax.custom_vjp`` that stores ``features``, not the concatenation.

    ``jax.checkpoint`` (``keras.remat``) saves no memory in a jitted CPU train step
    (jax-ml/jax#19822): its recomputation does not depend on the output gradient,
    so XLA may schedule it in the forward pass and keep its results. Here the
    backward pass recomputes ``concat(features)`` with a data dependency on the
    output gradient, as on TensorFlow; the variables ``function`` reads (tracers
    of the train step) become explicit arguments (``jax.closure_convert``) so that
    they get their gradients.
    """
    import jax
    import jax.numpy as jnp

    converted, constants = jax.closure_convert(function, concatenation, *args)

    def apply(x, args, constants):
        return converted(x, *args, *constants)

    @jax.custom_vjp
    def forward(x, features, args, constants):
        return apply(x, args, constants)

    def forward_keeping_features(x, features, args, constants):
        return apply(x, args, constants), (features, args, constants)

    def backward(saved, output_gradients):
        features, args, constants = saved
        x = _concatenated_after(jax.tree_util.tree_leaves(output_gradients)[0], features, axis)
        _, pullback = jax.vjp(apply, x, args, constants)
        x_gradient, args_gradients, constants_gradients = pullback(output_gradients)
        # The whole gradient goes back through the block's chain of concatenations.
        return (x_gradient, [jnp.zeros_like(f) for f in features], args_gradients,
                constants_gradients)

    forward.defvjp(forward_keeping_features, backward)
    return forward(concatenation, list(features), tuple(args), list(constants))


def _concatenated_after(gradient, features, axis):
    """``concat(features, axis)``, computed only once ``gradient`` (an output gradient) exists.

    The backward passes of ``recomputed`` build the concatenation this way: adding
    0 (NaN if the gradient's first element is NaN) to the last map makes it depend
    on the gradient's data, as ``tf.recompute_grad`` does; else TensorFlow's executor
    or XLA's scheduler may recompute it during the forward pass and hold it until
    the backward pass. Its ops are in the name scope ``recomputed_concatenation``.
    """
    first = ops.reshape(gradient, (-1,))[:1]
    after = ops.cast(ops.where(ops.all(first == first), 0.0, float("nan")), features[-1].dtype)
    with keras.name_scope("recomputed_concatenation"):
        return ops.concatenate([*features[:-1], features[-1] + after], axis=axis)


def concatenation_or_concat(features, concatenation, axis):
    """``concatenation`` (the block chain's), or ``concat(features)`` where the graph has none
    (``.keras`` files of earlier releases): for the forward pass outside training, and
    for ``_recomputed_jax``."""
    return ops.concatenate(features, axis=axis) if concatenation is None else concatenation


