"""Tiny Keras classifiers for the perturbation-family tests: an explicit Softmax layer (so the
test reads the logits off the graph itself) and an optional spy that logs every batch size the
model is run on (inside a tf.function too)."""

from __future__ import annotations

import numpy as np


def softmax_cnn(size: int = 32, num_classes: int = 4, *, seed: int = 0, spy: list | None = None):
    """Conv(4) -> MaxPool -> Conv(8) -> GAP -> Dense -> Softmax, a plain keras.Model.

    ``spy``: a list that gets the batch size of every call the model runs (eager or traced).
    """
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    x = inputs
    if spy is not None:
        x = BatchSpy(spy)(x)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="tanh")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="tanh", name="features")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(num_classes, kernel_initializer=keras.initializers.RandomNormal(stddev=2.0))(x)
    outputs = keras.layers.Softmax()(x)
    return keras.Model(inputs, outputs, name=f"softmax_cnn_{seed}")


def logit_model(keras_model):
    """images -> pre-softmax logits, cut from the model's own graph (its last layer is a Softmax)."""
    import keras

    last = keras_model.layers[-1]
    assert type(last).__name__ == "Softmax"
    return keras.Model(keras_model.inputs[0], last.input)


def _spy_layer():
    import keras
    import tensorflow as tf

    class _BatchSpy(keras.layers.Layer):
        """Identity; appends the batch size of every call it runs to ``log`` (a stateful op)."""

        def __init__(self, log: list, **kwargs):
            super().__init__(**kwargs)
            self.sink = log.append  # not the list: Keras would track (copy) a list attribute

        def call(self, x):
            def record(b):
                self.sink(int(b))
                return np.int32(0)

            done = tf.numpy_function(record, [tf.shape(x)[0]], tf.int32, stateful=True)
            with tf.control_dependencies([done]):
                return tf.identity(x)

        def compute_output_shape(self, input_shape):
            return input_shape

    return _BatchSpy


def BatchSpy(log: list):  # noqa: N802 - a layer factory
    return _spy_layer()(log)
