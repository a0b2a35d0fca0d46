"""Gradients of the dense CRF with respect to its kernel widths (gaussian_sxy, bilateral_sxy,
bilateral_srgb), computed with the filter itself (impls._lattice.width_gradient).

- Through the exact Gaussian filter (gaussian_filter_exact as the mean field's "lattice") the
  formula equals autograd through the exact filter, whose features carry the widths: 1e-8.
- Through the permutohedral lattice (framework and native engines) the gradients are those of
  the Gaussian the lattice approximates, so they differ from the exact mean field's by the
  lattice's own approximation error: measured 15-20 % of the largest component on these
  inputs, where the lattice's filter itself is 10-25 % off the exact filter.
- The native engine equals the framework engine (1e-4 with float64 values: the native lattice
  is built in float32), torch equals TF, graph equals eager. `tox -e device-on-host` runs this
  file against the CUDA engine's code executed on host threads.
"""

import numpy as np
import pytest

from impls import _meanfield, native
from impls._checks import crf_parameters
from tests.inputs import crf_image, smooth_unary

torch = pytest.importorskip("torch")
import impls.torch  # noqa: E402
from impls.torch._ops import OPS  # noqa: E402
from impls.torch.crf import NATIVE_OPS  # noqa: E402
from impls.torch.lattice import gaussian_filter_exact  # noqa: E402

HEIGHT, WIDTH, LABELS = 12, 14, 3
WIDTHS = {"gaussian_sxy": 3.0, "bilateral_sxy": (8.0, 9.0), "bilateral_srgb": 13.0}
NORMALIZATIONS = ["symmetric", "before", "after", "none"]
needs_native = pytest.mark.skipif(not native.available(), reason="impls._native is not built")


class ExactFilter:
    """The exact Gaussian filter behind the lattice's interface: the mean field on it is the
    dense CRF the lattice approximates."""

    def __init__(self, features):
        self.features = features

    def filter(self, values, *, reverse=False):
        return gaussian_filter_exact(values, self.features)


def _inputs(height=HEIGHT, width=WIDTH, labels=LABELS):
    image = torch.from_numpy(crf_image("im1")[:height, :width].copy()).permute(2, 0, 1)
    unary = torch.from_numpy(smooth_unary(height, width, labels, seed=1)).reshape(-1, labels).double()
    truth = torch.from_numpy(np.random.default_rng(0).integers(0, labels, height * width))
    return image, unary, truth


# Kernel weights that keep each normalisation's messages the size of the unary (unnormalised
# filters sum over every neighbour: larger weights saturate the marginals).
COMPATS = {"symmetric": (1.0, 2.0), "before": (1.0, 2.0), "after": (1.0, 2.0), "none": (0.02, 0.01)}


def _params(normalization="symmetric", widths=WIDTHS, iterations=3):
    gaussian, bilateral = COMPATS[normalization]
    return crf_parameters(LABELS, widths["gaussian_sxy"], gaussian, widths["bilateral_sxy"], widths["bilateral_srgb"],
                          bilateral, iterations, normalization)


def _nll(q, truth):
    # Clamped: without normalisation the float32 mean field saturates to exact zeros.
    return -torch.log(q[torch.arange(len(truth)), truth].clamp_min(1e-30)).mean()


def _flat(tensors):
    return torch.cat([tensors[name].grad.reshape(-1) for name in WIDTHS]).double()


def _width_gradients(ops, normalization="symmetric", dtype=torch.float64):
    """d NLL / d (gaussian_sxy, bilateral_sx, bilateral_sy, bilateral_srgb) of the mean field on `ops`."""
    image, unary, truth = _inputs()
    params = _params(normalization)
    tensors = {name: torch.tensor(value, dtype=torch.float64, requires_grad=True) for name, value in WIDTHS.items()}
    widths = _meanfield.width_vectors(ops, tensors, params, unary.to(dtype))
    _nll(_meanfield.infer(ops, unary.to(dtype), image, params, widths).double(), truth).backward()
    return _flat(tensors)


def _autograd_through_the_exact_filter(normalization):
    """The reference: the mean field written out with the exact filter on features that carry
    the widths, differentiated by autograd (no width formula involved)."""
    image, unary, truth = _inputs()
    tensors = {name: torch.tensor(value, dtype=torch.float64, requires_grad=True) for name, value in WIDTHS.items()}
    positions, colours = OPS.pixel_positions(image, torch.float64), OPS.pixel_colours(image, torch.float64)
    gaussian, bilateral = COMPATS[normalization]
    kernels = [(positions / tensors["gaussian_sxy"], gaussian),
               (torch.cat([positions / tensors["bilateral_sxy"], colours / tensors["bilateral_srgb"]], 1), bilateral)]
    before = normalization in ("symmetric", "before")
    after = normalization in ("symmetric", "after")
    terms = []
    for features, compat in kernels:
        matrix = torch.exp(-0.5 * torch.cdist(features, features).square())
        norm = matrix.sum(1, keepdim=True) + 1e-20
        scale = 1 / norm.sqrt() if normalization == "symmetric" else 1 / norm
        terms.append((matrix, scale, compat))
    q = torch.softmax(-unary, -1)
    for _ in range(3):
        logits = -unary
        for matrix, scale, compat in terms:
            filtered = matrix @ (q * scale if before else q)
            logits = logits + compat * (filtered * scale if after else filtered)
        q = torch.softmax(logits, -1)
    _nll(q, truth).backward()
    return _flat(tensors)


def _relative(ours, reference):
    return float((ours - reference).abs().max() / reference.abs().max())


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_gradcheck_width_formula_through_the_exact_filter_equals_autograd(normalization):
    ours = _width_gradients(OPS.with_lattice(ExactFilter), normalization)
    reference = _autograd_through_the_exact_filter(normalization)
    assert (reference != 0).all()
    assert _relative(ours, reference) < 1e-8


def test_gradcheck_exact_width_gradients_equal_finite_differences():
    image, unary, truth = _inputs()
    exact = OPS.with_lattice(ExactFilter)
    ours = _width_gradients(exact)
    step, differences = 1e-5, []
    for name, axis in (("gaussian_sxy", None), ("bilateral_sxy", 0), ("bilateral_sxy", 1), ("bilateral_srgb", None)):
        losses = []
        for sign in (1, -1):
            widths = {key: np.array(value, np.float64) for key, value in WIDTHS.items()}
            if axis is None:
                widths[name] = widths[name] + sign * step
            else:
                widths[name][axis] += sign * step
            params = _params(widths={key: value.tolist() for key, value in widths.items()})
            losses.append(float(_nll(_meanfield.infer(exact, unary, image, params), truth)))
        differences.append((losses[0] - losses[1]) / (2 * step))
    assert _relative(ours, torch.tensor(differences)) < 1e-6


@pytest.mark.parametrize("engine", ["framework", pytest.param("native", marks=needs_native)])
def test_feature_lattice_width_gradients_approximate_the_exact_mean_fields(engine):
    ops, dtype = (OPS, torch.float64) if engine == "framework" else (NATIVE_OPS, torch.float32)
    exact = _width_gradients(OPS.with_lattice(ExactFilter))
    ours = _width_gradients(ops, dtype=dtype)
    # Same direction, and within the lattice's approximation error (measured 0.19 here).
    cosine = float(ours @ exact / (ours.norm() * exact.norm()))
    assert cosine > 0.98 and _relative(ours, exact) < 0.25, (ours, exact)
    # That error is the lattice's: its filter is that far from the exact one on these features.
    image, _, _ = _inputs()
    features = _meanfield.crf_features(OPS, image, _params(), torch.float64)[1][0]
    values = torch.rand(len(features), 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    lattice = OPS.lattice(features).filter(values)
    assert 0.05 < _relative(lattice, gaussian_filter_exact(values, features)) < 0.5


@needs_native
@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_feature_native_width_gradients_equal_the_framework_engines(normalization):
    # float64 values on both (the native lattice itself is built in float32): "after" moves the
    # marginals of this smooth unary so little that float32 values would only compare noise.
    framework = _width_gradients(OPS, normalization)
    ours = _width_gradients(NATIVE_OPS, normalization)
    assert torch.isfinite(framework).all() and (framework != 0).all()
    assert _relative(ours, framework) < 1e-4


def _dense_crf_gradients(engine, dtype):
    image, unary, truth = _inputs()
    tensors = {name: torch.tensor(value, dtype=torch.float64, requires_grad=True) for name, value in WIDTHS.items()}
    unary = unary.reshape(HEIGHT, WIDTH, LABELS).permute(2, 0, 1)[None].to(dtype).requires_grad_(True)
    q = impls.torch.dense_crf(unary, image[None], gaussian_compat=1.0, bilateral_compat=2.0, iterations=3,
                              engine=engine, **tensors)
    _nll(q[0].permute(1, 2, 0).reshape(-1, LABELS).double(), truth).backward()
    return q.detach().double(), _flat(tensors), unary.grad.double()


@pytest.mark.parametrize("engine", ["framework", pytest.param("native", marks=needs_native)])
def test_feature_dense_crf_with_width_tensors_keeps_its_forward_and_unary_gradient(engine):
    dtype = torch.float64 if engine == "framework" else torch.float32
    q, widths, unary_grad = _dense_crf_gradients(engine, dtype)
    image, unary, truth = _inputs()
    unary = unary.reshape(HEIGHT, WIDTH, LABELS).permute(2, 0, 1)[None].to(dtype).requires_grad_(True)
    plain = impls.torch.dense_crf(unary, image[None], gaussian_compat=1.0, bilateral_compat=2.0, iterations=3,
                                  engine=engine, **WIDTHS)
    _nll(plain[0].permute(1, 2, 0).reshape(-1, LABELS).double(), truth).backward()
    tolerance = 0 if engine == "framework" else 1e-6
    torch.testing.assert_close(q, plain.detach().double(), rtol=0, atol=tolerance)
    torch.testing.assert_close(unary_grad, unary.grad.double(), rtol=1e-5, atol=tolerance)
    assert torch.isfinite(widths).all() and (widths != 0).all()


def test_feature_scalar_and_per_axis_width_tensors_agree():
    image, unary, truth = _inputs()
    unary = unary.reshape(HEIGHT, WIDTH, LABELS).permute(2, 0, 1)[None]
    grads = []
    for sxy in (torch.tensor(8.0, dtype=torch.float64, requires_grad=True),
                torch.tensor([8.0, 8.0], dtype=torch.float64, requires_grad=True)):
        q = impls.torch.dense_crf(unary, image[None], bilateral_sxy=sxy, engine="framework", iterations=2)
        _nll(q[0].permute(1, 2, 0).reshape(-1, LABELS), truth).backward()
        grads.append(sxy.grad.sum())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=0)


@pytest.mark.parametrize("value, error, message", [
    (torch.ones(2, 2, requires_grad=True), TypeError, r"argument 'bilateral_srgb' must be .* got a torch.float32 "
                                                       r"tensor of shape \(2, 2\)"),
    (torch.tensor([13.0, -1.0, 2.0], requires_grad=True), ValueError, "argument 'bilateral_srgb'"),
    (torch.tensor([13.0, 13.0], requires_grad=True), ValueError, "argument 'bilateral_srgb'"),
    (torch.tensor([1, 2, 3]), TypeError, "argument 'bilateral_srgb' must be .* floating tensor"),
])
def test_exception_width_tensors_are_checked_by_name(value, error, message):
    image, unary, _ = _inputs()
    with pytest.raises(error, match=message):
        impls.torch.dense_crf(unary.reshape(HEIGHT, WIDTH, LABELS).permute(2, 0, 1)[None], image[None],
                              bilateral_srgb=value)


def test_exception_numpy_mean_field_refuses_width_tensors():
    from impls.numpy._ops import OPS as NUMPY_OPS

    features = np.random.default_rng(0).random((5, 2))
    with pytest.raises(TypeError, match="width gradients need torch or TensorFlow"):
        _meanfield.PairwiseTerm(NUMPY_OPS, features, np.float64(1.0), "symmetric", widths=np.ones(2))


# ---------------------------------------------------------------------------------------- TensorFlow

def _tf_gradients(engine, dtype_name, graph=False):
    tf = pytest.importorskip("tensorflow")
    import impls.tf

    image, unary, truth = _inputs()
    variables = {name: tf.Variable(value, dtype=tf.float64) for name, value in WIDTHS.items()}
    unary = tf.constant(unary.reshape(1, HEIGHT, WIDTH, LABELS).numpy(), getattr(tf, dtype_name))
    rgb = image.permute(1, 2, 0)[None].numpy()
    rows = tf.constant(np.stack([np.arange(HEIGHT * WIDTH), truth.numpy()], 1))

    def loss():
        q = impls.tf.dense_crf(unary, rgb, gaussian_compat=1.0, bilateral_compat=2.0, iterations=3, engine=engine,
                               **variables)
        return -tf.reduce_mean(tf.math.log(tf.gather_nd(tf.cast(tf.reshape(q, (-1, LABELS)), tf.float64), rows)))

    def gradients():
        with tf.GradientTape() as tape:
            value = loss()
        return tape.gradient(value, list(variables.values()))

    grads = (tf.function(gradients) if graph else gradients)()
    return torch.cat([torch.from_numpy(np.asarray(g.numpy(), np.float64).reshape(-1)) for g in grads])


@pytest.mark.parametrize("engine", ["framework", pytest.param("native", marks=needs_native)])
def test_feature_tf_width_gradients_equal_torchs(engine):
    dtype = "float64" if engine == "framework" else "float32"
    ours = _tf_gradients(engine, dtype)
    _, theirs, _ = _dense_crf_gradients(engine, getattr(torch, dtype))
    assert _relative(ours, theirs) < (1e-10 if engine == "framework" else 1e-4)


def test_feature_tf_width_gradients_in_a_tf_function_equal_eager():
    eager = _tf_gradients("framework", "float64")
    assert _relative(_tf_gradients("framework", "float64", graph=True), eager) < 1e-10
