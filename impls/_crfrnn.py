"""What the CRF-as-RNN layers of every framework share: the docstring, the initial weights, the
argument checks (so that torch and Keras reject bad input alike) and the iteration itself,
written once against impls._ops.Ops as impls._meanfield's mean field is."""

from __future__ import annotations

import numbers

import numpy as np

from impls import _checks, _meanfield
from impls._ops import Ops

# Initial kernel weights of the original Caffe model (torrvision/crfasrnn, TVG_CRFRNN prototxt:
# spatial_filter_weight 3, bilateral_filter_weight 5), as diagonal matrices; the compatibility
# starts as the Potts model, -I. (The Keras port crfasrnn_keras starts both kernels at I.)
SPATIAL_WEIGHT = 3.0
BILATERAL_WEIGHT = 5.0
WEIGHT_NAMES = ("spatial_ker_weights", "bilateral_ker_weights", "compatibility_matrix")
# The kernel widths a layer with trainable_widths=True learns, each as the log of the constructor's
# value (a scalar): exp keeps the widths positive whatever a gradient step does.
THETA_NAMES = ("theta_alpha", "theta_beta", "theta_gamma")
WIDTH_NAMES = tuple(f"log_{name}" for name in THETA_NAMES)


class CrfRnnDoc:
    """CRF-as-RNN (Zheng et al., ICCV 2015): `iterations` steps of dense-CRF mean field unrolled
    as a recurrent layer with trainable kernel weights and label compatibility.

    Each step, with Q = softmax(q) over classes (q starts as the input logits):

        spatial   = filter_gamma(Q) / filter_gamma(1)           Gaussian on (x, y) / theta_gamma
        bilateral = filter_alpha_beta(Q) / filter_alpha_beta(1)  on (x, y) / theta_alpha, (r, g, b) / theta_beta
        q = logits - compatibility_matrix @ (spatial_ker_weights @ spatial + bilateral_ker_weights @ bilateral)

    where the filters are the permutohedral lattice of the dense CRF (the native one when
    impls._native can serve the inputs, the framework's own otherwise; they agree to float32
    rounding) and the matrices act on the class axis. The output is q (logits, not
    probabilities). With spatial_ker_weights = w_g I, bilateral_ker_weights = w_b I and
    compatibility_matrix = -I, softmax(output) equals `dense_crf(-logits, image,
    gaussian_sxy=theta_gamma, gaussian_compat=w_g, bilateral_sxy=theta_alpha,
    bilateral_srgb=theta_beta, bilateral_compat=w_b, iterations=iterations,
    normalization="after")`.

    Every image of a batch gets its own lattices. Initial weights follow the original Caffe
    model: spatial 3 I, bilateral 5 I, compatibility -I (Potts).

    Args:
        num_classes: C, the channels of the logits.
        theta_alpha: spatial standard deviation of the bilateral kernel, in pixels.
        theta_beta: colour standard deviation of the bilateral kernel, in 0-255 units.
        theta_gamma: standard deviation of the spatial kernel, in pixels.
        iterations: mean-field steps, at least 1.
        trainable_widths: learn theta_alpha, theta_beta and theta_gamma too, by gradient descent
            through the lattice (impls._lattice.width_gradient): the layer gets three more scalar
            weights, log_theta_alpha, log_theta_beta and log_theta_gamma, initialised to the logs
            of those arguments (the widths, their exp, stay positive). theta_alpha serves x and y,
            theta_beta r, g and b, theta_gamma x and y. False (the default) keeps the widths fixed,
            with no such weights.
        **kwargs: layer options: Keras takes its own (name, dtype, trainable, ...), torch only
            name (kept as `.name`).

    Call with (logits, image) in the framework's layout: torch (N, C, H, W) and (N, 3, H, W),
    Keras (N, H, W, C) and (N, H, W, 3); logits float32/float64, image RGB (uint8, or float
    in 0-255). Returns refined logits of the same shape.

    Attributes:
        spatial_ker_weights, bilateral_ker_weights, compatibility_matrix: trainable (C, C).
        log_theta_alpha, log_theta_beta, log_theta_gamma: trainable scalars, only with
            trainable_widths=True.
        thetas: the widths in use, (theta_alpha, theta_beta, theta_gamma) as floats: the learnt
            ones with trainable_widths=True (the configuration keeps the initial ones).
    """


def check_config(num_classes, theta_alpha, theta_beta, theta_gamma, iterations) -> dict:
    op = "CrfRnn"
    num_classes = _checks.positive_int(num_classes, op=op, name="num_classes")
    if num_classes < 2:
        raise ValueError(f"{op}: argument 'num_classes' must be at least 2, got {num_classes}")
    thetas = {}
    for name, value in (("theta_alpha", theta_alpha), ("theta_beta", theta_beta), ("theta_gamma", theta_gamma)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (np.isfinite(value) and value > 0):
            raise ValueError(f"{op}: argument '{name}' must be a positive number, got {value!r}")
        thetas[name] = float(value)
    return dict(num_classes=num_classes, iterations=_checks.positive_int(iterations, op=op, name="iterations"),
                **thetas)


def check_trainable_widths(trainable_widths) -> bool:
    if not isinstance(trainable_widths, bool | np.bool_):
        raise TypeError(f"CrfRnn: argument 'trainable_widths' must be a bool, got {trainable_widths!r}")
    return bool(trainable_widths)


def initial_log_widths(config) -> tuple[np.float64, ...]:
    """The initial values of the WIDTH_NAMES weights: the logs of the configured widths, as
    float64 NumPy scalars (a Keras initializer rounds a Python float to float32 first)."""
    return tuple(np.log(np.float64(config[name])) for name in THETA_NAMES)


def thetas_in_use(config, log_widths) -> tuple[float, ...]:
    """(theta_alpha, theta_beta, theta_gamma) in use: exp of the layer's log widths (floats), or
    the configured ones where it has none (None)."""
    if log_widths is None:
        return tuple(config[name] for name in THETA_NAMES)
    return tuple(float(np.exp(value)) for value in log_widths)


def kernel_parameters(config) -> _meanfield.CrfParameters:
    """dense_crf's parameters of the layer's two kernels (unit compat: the weights apply after)."""
    return _checks.crf_parameters(config["num_classes"], config["theta_gamma"], 1.0, config["theta_alpha"],
                                  config["theta_beta"], 1.0, config["iterations"], "after")


def refine(ops: Ops, logits, image, kernels: _meanfield.CrfParameters, weights, log_widths=None, initial=None):
    """The layer on one image: (P, C) logits, the image in the backend's layout, the layer's
    kernel_parameters and its (spatial, bilateral, compatibility) (C, C) matrices in the logits'
    dtype; the refined (P, C) logits after `kernels.iterations` steps. `log_widths`, the layer's
    (log_theta_alpha, log_theta_beta, log_theta_gamma) scalars, replace the kernels' widths,
    differentiably; None keeps the kernels' own. `initial` (P, C) logits start the first step's
    softmax instead of `logits` (Caffe's MultiStageMeanfield takes them as a second input)."""
    widths = None if log_widths is None else width_vectors(ops, log_widths, kernels, logits)
    spatial, bilateral = _meanfield.pairwise_terms(
        ops, _meanfield.crf_features(ops, image, kernels, logits.dtype, widths), kernels.normalization)
    spatial_weights, bilateral_weights, compatibility = weights
    q = logits if initial is None else initial
    for _ in range(kernels.iterations):
        probabilities = ops.softmax(q)
        message = (ops.matmul_transposed(spatial.filter(probabilities), spatial_weights)
                   + ops.matmul_transposed(bilateral.filter(probabilities), bilateral_weights))
        q = logits - ops.matmul_transposed(message, compatibility)
    return q


def width_vectors(ops: Ops, log_widths, kernels: _meanfield.CrfParameters, like) -> dict:
    """The mean field's widths ({"gaussian": (2,), "bilateral": (5,)}, `like`'s dtype) of the
    (log_theta_alpha, log_theta_beta, log_theta_gamma) scalars: gamma for the spatial kernel's x
    and y, alpha for the bilateral kernel's x and y, beta for its r, g and b."""
    alpha, beta, gamma = (ops.exp(ops.cast_like(value, like)) for value in log_widths)
    return _meanfield.width_vectors(ops, {"gaussian_sxy": gamma, "bilateral_sxy": alpha, "bilateral_srgb": beta},
                                    kernels, like)


def check_inputs(logits_shape, logits_dtype, image_shape, num_classes, *, layout):
    """Shapes (None for unknown) and dtype name of the layer's inputs in `layout` ("NCHW" or "NHWC")."""
    op = "CrfRnn"
    channel = layout.index("C")
    _checks.float_batch(logits_shape, logits_dtype, op=op, layout=layout, name="logits")
    if logits_shape[channel] is not None and logits_shape[channel] != num_classes:
        raise ValueError(f"{op}: argument 'logits' must have num_classes={num_classes} channels "
                         f"(C in {layout}), got {logits_shape[channel]}")
    if len(image_shape) != 4:
        raise ValueError(f"{op}: argument 'image' must be a 4-D ({layout}) RGB tensor, got shape {tuple(image_shape)}")
    if image_shape[channel] is not None and image_shape[channel] != 3:
        raise ValueError(f"{op}: argument 'image' must have 3 colour channels, got {image_shape[channel]}")
    if _differs(logits_shape[0], image_shape[0]):
        raise ValueError(f"{op}: arguments 'logits' and 'image' must have the same batch size, "
                         f"got {logits_shape[0]} and {image_shape[0]}")
    spatial = [i for i in range(4) if i not in (0, channel)]
    expected, got = tuple(logits_shape[i] for i in spatial), tuple(image_shape[i] for i in spatial)
    if any(_differs(e, g) for e, g in zip(expected, got, strict=True)):
        raise ValueError(f"{op}: argument 'image' must have the logits' (H, W) = {expected}, got {got}")


def _differs(a, b):
    return a is not None and b is not None and a != b
