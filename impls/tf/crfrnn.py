"""CRF-as-RNN as a Keras 3 layer on TensorFlow, layout (N, H, W, C); see impls._crfrnn.CrfRnnDoc."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from impls import _crfrnn, native
from impls._docs import same_doc_as
from impls.tf.crf import ops_for

__all__ = ["CrfRnn"]


@keras.saving.register_keras_serializable(package="impls")
@same_doc_as(_crfrnn.CrfRnnDoc)
class CrfRnn(keras.layers.Layer):
    def __init__(self, num_classes, theta_alpha=160, theta_beta=3, theta_gamma=3, iterations=5,
                 trainable_widths=False, **kwargs):
        super().__init__(**kwargs)
        self.config = {**_crfrnn.check_config(num_classes, theta_alpha, theta_beta, theta_gamma, iterations),
                       "trainable_widths": _crfrnn.check_trainable_widths(trainable_widths)}
        self._kernels = _crfrnn.kernel_parameters(self.config)
        eye = np.eye(self.config["num_classes"])
        initial = {"spatial_ker_weights": _crfrnn.SPATIAL_WEIGHT * eye,
                   "bilateral_ker_weights": _crfrnn.BILATERAL_WEIGHT * eye, "compatibility_matrix": -eye}
        for name in _crfrnn.WEIGHT_NAMES:
            setattr(self, name, self.add_weight(name=name, shape=eye.shape,
                                                initializer=keras.initializers.Constant(initial[name])))
        if self.config["trainable_widths"]:
            for name, value in zip(_crfrnn.WIDTH_NAMES, _crfrnn.initial_log_widths(self.config), strict=True):
                setattr(self, name, self.add_weight(name=name, shape=(),
                                                    initializer=keras.initializers.Constant(value)))

    @property
    def thetas(self):
        log_widths = self._log_widths()
        return _crfrnn.thetas_in_use(self.config, None if log_widths is None else
                                     [float(w.numpy()) for w in log_widths])

    def _log_widths(self):
        return [getattr(self, name) for name in _crfrnn.WIDTH_NAMES] if self.config["trainable_widths"] else None

    def call(self, logits, image):
        logits, image = tf.convert_to_tensor(logits), tf.convert_to_tensor(image)
        _crfrnn.check_inputs(tuple(logits.shape), logits.dtype.name, tuple(image.shape),
                             self.config["num_classes"], layout="NHWC")
        if tf.executing_eagerly():
            if not bool(tf.reduce_all(tf.math.is_finite(logits))):
                raise ValueError("CrfRnn: argument 'logits' must be finite (no NaN or inf)")
            ops = ops_for("native" if native.available() and "GPU" not in logits.device.upper() else "framework")
            return tf.stack([self._one_image(logits[n], image[n], ops) for n in range(logits.shape[0])])
        logits = tf.debugging.assert_all_finite(logits, "CrfRnn: argument 'logits' must be finite (no NaN or inf)")
        # Traced (tf.function, model.fit): the native lattice needs concrete features, so TF's own.
        return tf.map_fn(self._one_traced_image, (logits, image), fn_output_signature=logits.dtype)

    def _one_traced_image(self, pair):
        return self._one_image(*pair, ops_for("framework"))

    def _one_image(self, logits, image, ops):
        weights = [tf.cast(w, logits.dtype) for w in (self.spatial_ker_weights, self.bilateral_ker_weights,
                                                      self.compatibility_matrix)]
        q = _crfrnn.refine(ops, tf.reshape(logits, [-1, self.config["num_classes"]]), image, self._kernels, weights,
                           self._log_widths())
        return tf.reshape(q, tf.shape(logits))

    def compute_output_shape(self, logits_shape, image_shape):
        return logits_shape

    def get_config(self):
        return {**super().get_config(), **self.config}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="impls")
class CrfRnnLayer(CrfRnn):
    """crfasrnn_keras's CrfRnnLayer, drop-in: the same constructor, weights and call, computed by
    impls' CrfRnn (see impls._crfrnn.CrfRnnDoc for the iteration).

    Call on `[unaries, rgb]`, two NHWC tensors: the (N, H, W, C) float scores and the (N, H, W, 3)
    image the CRF's bilateral kernel sees (crfasrnn_keras feeds its network's input, the
    mean-subtracted BGR image); returns refined (N, H, W, C) logits. Unlike the original, any
    height and width work (`image_dims` is only kept in the config) and every image of a batch
    is refined (the original refined image 0 alone and returned a batch of one).

    The weights keep the original's names, spatial_ker_weights, bilateral_ker_weights and
    compatibility_matrix ((C, C), variable paths `<layer name>/<weight name>`, so that a Keras 2
    weight file loads by the layer's name), and its initial values I, I and -I.

    Args:
        image_dims: (H, W) of the original's fixed input; kept, not enforced.
        num_classes: C.
        theta_alpha, theta_beta, theta_gamma: the kernel widths (CrfRnn's).
        num_iterations: mean-field steps (CrfRnn's `iterations`).
        **kwargs: Keras layer options (name, dtype, trainable, ...).
    """

    def __init__(self, image_dims, num_classes, theta_alpha, theta_beta, theta_gamma, num_iterations, **kwargs):
        super().__init__(num_classes, theta_alpha, theta_beta, theta_gamma, num_iterations, **kwargs)
        self.image_dims = tuple(int(d) for d in image_dims)
        eye = np.eye(self.config["num_classes"])
        for name, value in zip(_crfrnn.WEIGHT_NAMES, (eye, eye, -eye), strict=True):
            getattr(self, name).assign(value)

    def call(self, inputs):
        if not isinstance(inputs, list | tuple) or len(inputs) != 2:
            raise ValueError(f"CrfRnnLayer: argument 'inputs' must be a list [unaries, rgb] of two tensors, got "
                             f"{type(inputs).__name__}" + (f" of {len(inputs)}" if isinstance(inputs, list | tuple)
                                                           else ""))
        unaries, rgb = inputs
        return super().call(unaries, rgb)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        config = super().get_config()
        config["num_iterations"] = config.pop("iterations")
        return {**config, "image_dims": self.image_dims}
