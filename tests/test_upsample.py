"""FCN bilinear upsampling: every backend against SciPy, scikit-image and each other."""

import importlib

import numpy as np
import pytest
import scipy.ndimage as ndi
import skimage.transform
from hypothesis import strategies as st

from impls import native
from impls.numpy import bilinear_kernel as oracle_kernel
from impls.numpy import upsample_bilinear as oracle_upsample
from impls.testing import Backend, assert_close
from tests.strategies import PROFILES, check, installed_frameworks, lay_out, to_backend, upsample_cases

FACTORS = range(1, 65)
# 1x1 up, odd and even heights and widths.
SIZES = [(1, 1), (2, 3), (7, 5), (6, 4)]
GRADIENT_FACTORS = [1, 2, 3, 4, 7, 8, 15, 16, 32, 63, 64]


def _random_batch(rng, height, width, dtype, batch=2, channels=3):
    return rng.random((batch, height, width, channels)).astype(dtype)


def _zoom(x, factor):
    """The SciPy operator FCN's upsampler equals: pixel areas, interpolation towards 0 outside."""
    return np.stack([
        ndi.zoom(image, (factor, factor, 1), order=1, mode="grid-constant", grid_mode=True, cval=0)
        for image in x.astype(np.float64)
    ])


def _rescale(image, factor, **options):
    return skimage.transform.rescale(image, factor, order=1, anti_aliasing=False, channel_axis=-1, **options)


def _away_from_border(shape, factor):
    mask = np.zeros(shape, bool)
    mask[..., factor:-factor, factor:-factor, :] = True
    return mask


class TestBilinearKernel:
    @pytest.mark.parametrize("factor", [1, 2, 3, 4, 5, 16, 32, 63, 64])
    def test_cardinality(self, backend, factor):
        kernel = np.asarray(backend.module.bilinear_kernel(factor))
        assert kernel.shape == (2 * factor - factor % 2,) * 2
        assert kernel.dtype == np.float64

    @pytest.mark.parametrize("factor", range(1, 65))
    def test_feature_separable_tent_that_partitions_unity(self, factor):
        kernel = oracle_kernel(factor)
        taps = np.sqrt(np.diag(kernel))
        assert_close(kernel, np.outer(taps, taps))
        # Taps f apart sum to 1: every interior output is a convex combination.
        padded = np.zeros(-(-len(taps) // factor) * factor)
        padded[:len(taps)] = taps
        assert_close(padded.reshape(-1, factor).sum(axis=0), np.ones(factor))

    def test_feature_matches_fcn_surgery_values(self):
        # FCN's upsample_filt(4) and upsample_filt(3), written out.
        assert_close(oracle_kernel(2)[0], np.array([1, 3, 3, 1]) / 16)
        assert_close(oracle_kernel(2)[1], np.array([3, 9, 9, 3]) / 16)
        assert_close(np.diag(oracle_kernel(3)), np.array([1, 4, 9, 4, 1]) / 9)

    def test_backends_agree(self, backend):
        for factor in (1, 2, 3, 32, 64):
            assert_close(backend.module.bilinear_kernel(factor), oracle_kernel(factor))


class TestUpsampleBilinear:
    @pytest.mark.parametrize("height, width", SIZES, ids=lambda s: str(s))
    @pytest.mark.parametrize("factor", FACTORS)
    def test_feature_equals_scipy_zoom_everywhere(self, backend, dtype, factor, height, width, rng):
        x = _random_batch(rng, height, width, dtype)
        got = _upsample_nhwc(backend, x, factor)
        assert got.dtype == dtype
        assert_close(got, _zoom(x, factor).astype(dtype), msg=f"{backend} factor {factor}")

    @pytest.mark.parametrize("height, width", SIZES, ids=lambda s: str(s))
    @pytest.mark.parametrize("factor", range(2, 65))
    def test_feature_equals_skimage_rescale_away_from_border(self, backend, factor, height, width, rng):
        x = _random_batch(rng, height, width, np.float64)
        got = _upsample_nhwc(backend, x, factor)
        expected = np.stack([_rescale(image, factor, mode="constant", cval=0) for image in x])
        inside = _away_from_border(got.shape, factor)
        assert_close(got[inside], expected[inside])

    @pytest.mark.parametrize("factor", [2, 3, 4, 5, 8, 9, 16, 32])
    def test_feature_skimage_border_difference_is_its_output_clipping(self, factor, rng):
        """Why skimage 0.26 differs at the border, pinned down.

        `rescale(mode="constant", cval=0)` resizes with SciPy's "grid-constant" mode, the
        very operator FCN's upsampler is, and then clips the result to the value range of
        its input (`clip=True`, its default), widening that range to cval only when cval
        itself appears in the output. Near the border the true operator interpolates
        towards 0 and dips below min(x); skimage lifts those pixels back to min(x). So:
        with `clip=False` skimage equals the upsampler everywhere, with the default it
        equals `clip(upsample(x), min(x), max(x))`, and pixels at least f from the border
        (convex combinations of the input) never differ. On random 7x5 inputs the border
        difference is up to about 1e-2.
        """
        x = rng.random((7, 5, 3))
        ours = oracle_upsample(x[None], factor)[0]
        assert_close(ours, _rescale(x, factor, mode="constant", cval=0, clip=False))
        clipped_default = _rescale(x, factor, mode="constant", cval=0)
        assert_close(np.clip(ours, x.min(), x.max()), clipped_default)
        difference = np.abs(ours - clipped_default)
        assert difference[~_away_from_border(ours.shape, factor)].max() < 0.05
        assert difference[_away_from_border(ours.shape, factor)].max() < 1e-12

    def test_feature_skimage_border_difference_is_real_on_random_7x5(self, rng):
        factors = range(2, 17)
        biggest = max(
            np.abs(oracle_upsample(x[None], f)[0] - _rescale(x, f, mode="constant", cval=0)).max()
            for f in factors for x in [rng.random((7, 5, 3))]
        )
        assert 1e-3 < biggest < 5e-2

    @pytest.mark.parametrize("factor", [2, 3, 4, 8, 32])
    def test_feature_framework_resizers_clamp_at_the_border_and_are_not_this_operator(self, factor, rng):
        """`F.interpolate(mode="bilinear")` and `tf.image.resize(method="bilinear")` extend
        the edge value outwards (skimage `mode="edge"`); FCN's upsampler interpolates
        towards 0. Away from the border all three agree."""
        torch = pytest.importorskip("torch")
        tf = pytest.importorskip("tensorflow")
        x = 0.5 + 0.5 * rng.random((1, 7, 5, 3))
        edge = _rescale(x[0], factor, mode="edge")[None]
        interpolated = torch.nn.functional.interpolate(
            torch.from_numpy(x.transpose(0, 3, 1, 2)), scale_factor=factor, mode="bilinear", align_corners=False,
        ).numpy().transpose(0, 2, 3, 1)
        resized = tf.image.resize(x, (7 * factor, 5 * factor), method="bilinear").numpy()
        assert_close(interpolated, edge)
        # tf.image.resize computes in float32 whatever the input dtype.
        assert_close(resized.astype(np.float32), edge.astype(np.float32))
        ours = oracle_upsample(x, factor)
        inside = _away_from_border(ours.shape, factor)
        assert_close(ours[inside], edge[inside])
        assert np.abs(ours - edge).max() > 0.1, "at the border FCN's upsampler interpolates towards 0"

    @pytest.mark.parametrize("factor", GRADIENT_FACTORS)
    def test_gradcheck_backward_is_the_adjoint(self, backend, dtype, factor, rng):
        if backend.name == "numpy":
            pytest.skip("NumPy has no autograd")
        x = _random_batch(rng, 5, 4, dtype)
        upstream = rng.standard_normal((2, 5 * factor, 4 * factor, 3)).astype(dtype)
        grad, value = _backward(backend, x, upstream, factor)
        expected = _strided_correlation(backend, upstream.astype(np.float64), factor)
        atol, rtol = None, 1e-10
        if dtype == np.float32:
            # Each gradient element sums k*k float32 products in an order the framework
            # chooses; rounding grows like k * eps times the largest magnitude. The same holds
            # for the dot products below: TF 2.21 / Keras 3.15 at factor 63 (k = 125) differ by
            # 1.59e-5 relative, over the 1e-5 this test had.
            size = 2 * factor - factor % 2
            atol = 4 * size * np.finfo(np.float32).eps * np.abs(expected).max()
            rtol = max(1e-5, 4 * size * float(np.finfo(np.float32).eps))
        assert_close(grad, expected.astype(dtype), atol=atol, msg="gradient vs adjoint convolution")
        # <U x, g> = <x, U^T g>, summed in float64 from the framework's own numbers.
        assert_close(np.vdot(value, upstream), np.vdot(x.astype(np.float64), grad.astype(np.float64)), rtol=rtol)

    def test_feature_torch_and_tf_agree(self, dtype, rng):
        pytest.importorskip("torch")
        pytest.importorskip("tensorflow")
        for factor in (2, 3, 8, 16, 32, 64):
            x = _random_batch(rng, 6, 9, dtype, batch=3, channels=5)
            from_torch, from_tf = (_upsample_nhwc(Backend(name), x, factor) for name in ("torch", "tf"))
            assert_close(from_torch, from_tf, msg=f"factor {factor}")

    def test_feature_batch_images_are_independent(self, backend, rng):
        x = _random_batch(rng, 4, 3, np.float64, batch=3, channels=2)
        whole = _upsample_nhwc(backend, x, 4)
        for n in range(3):
            alone = _upsample_nhwc(backend, x[n:n + 1], 4)
            assert_close(whole[n:n + 1], alone, msg=f"image {n} of the batch")

    def test_smoke_inside_tf_function_with_unknown_shape(self, rng):
        tf = pytest.importorskip("tensorflow")
        import impls.tf

        graph = tf.function(lambda x: impls.tf.upsample_bilinear(x, 8),
                            input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        x = _random_batch(rng, 3, 5, np.float32)
        assert_close(graph(x), _zoom(x, 8).astype(np.float32))

    @pytest.mark.parametrize("factor, error", [
        (0, ValueError), (-2, ValueError), (1.5, TypeError), (2.0, TypeError), ("2", TypeError),
        (True, TypeError), (None, TypeError),
    ])
    def test_exception_factor_not_a_positive_integer(self, backend, factor, error):
        x = backend.from_nhwc(np.ones((1, 2, 2, 1)))
        with pytest.raises(error, match="argument 'factor' must be a positive integer"):
            backend.module.upsample_bilinear(x, factor)

    @pytest.mark.parametrize("shape", [(2, 2, 1), (1, 1, 2, 2, 1), (4,)])
    def test_exception_wrong_rank(self, backend, shape):
        x = _native_tensor(backend, np.ones(shape))
        with pytest.raises(ValueError, match=r"argument 'x' must be a 4-D \(N, [HC], [WH], [CW]\) tensor"):
            backend.module.upsample_bilinear(x, 2)

    @pytest.mark.parametrize("dtype_name", ["int32", "int64", "uint8", "bool", "complex64", "float16"])
    def test_exception_unsupported_dtype(self, backend, dtype_name):
        x = _native_tensor(backend, np.ones((1, 2, 2, 1), dtype=dtype_name))
        with pytest.raises(TypeError, match=f"argument 'x' must have a floating dtype.*got {dtype_name}"):
            backend.module.upsample_bilinear(x, 2)

    @pytest.mark.parametrize("shape", [(0, 2, 2, 1), (1, 0, 2, 1), (1, 2, 0, 1), (1, 2, 2, 0)])
    def test_exception_empty(self, backend, shape):
        x = _native_tensor(backend, np.ones(shape))
        with pytest.raises(ValueError, match="argument 'x' must not be empty"):
            backend.module.upsample_bilinear(x, 2)

    def test_exception_torch_rejects_non_tensor(self):
        pytest.importorskip("torch")
        import impls.torch

        with pytest.raises(TypeError, match="argument 'x' must be a torch.Tensor, got ndarray"):
            impls.torch.upsample_bilinear(np.ones((1, 1, 2, 2)), 2)

    def test_feature_input_is_not_modified(self, backend, rng):
        x = _random_batch(rng, 3, 4, np.float32)
        tensor = backend.from_nhwc(x)
        backend.module.upsample_bilinear(tensor, 4)
        assert np.array_equal(backend.to_nhwc(tensor), x)


class TestBilinearUpsampleLayer:
    @pytest.mark.parametrize("factor", [1, 2, 3, 8, 32])
    def test_feature_same_padding_equals_upsample_bilinear(self, backend, dtype, factor, rng):
        layer = backend.module.BilinearUpsample(3, factor, dtype=dtype.name)
        x = _random_batch(rng, 4, 5, dtype)
        got = backend.to_nhwc(layer(backend.from_nhwc(x)))
        assert got.dtype == dtype
        assert_close(got, _zoom(x, factor).astype(dtype))

    @pytest.mark.parametrize("factor", [1, 2, 3, 8, 32])
    def test_feature_valid_padding_is_the_uncropped_deconvolution(self, backend, factor, rng):
        size = 2 * factor - factor % 2
        x = _random_batch(rng, 4, 5, np.float64)
        layer = backend.module.BilinearUpsample(3, factor, padding="valid", dtype="float64")
        full = backend.to_nhwc(layer(backend.from_nhwc(x)))
        assert full.shape == (2, 3 * factor + size, 4 * factor + size, 3)
        crop = factor // 2
        assert_close(full[:, crop:crop + 4 * factor, crop:crop + 5 * factor], _zoom(x, factor))

    def test_feature_weights_ported_with_the_layout_rules_agree(self, dtype, rng):
        """A learned (non-diagonal) kernel moved HWOI -> IOHW gives the same output everywhere."""
        import impls.numpy

        torch = pytest.importorskip("torch")
        pytest.importorskip("tensorflow")
        import impls.tf
        import impls.torch

        channels_in, factor = 4, 4
        x = _random_batch(rng, 5, 3, dtype, channels=channels_in)
        kernel = rng.standard_normal((8, 8, channels_in, channels_in)).astype(dtype)  # HWOI
        for padding in ("same", "valid"):
            numpy_layer = impls.numpy.BilinearUpsample(channels_in, factor, padding=padding, dtype=dtype.name)
            numpy_layer.kernel = kernel
            torch_layer = impls.torch.BilinearUpsample(channels_in, factor, padding=padding, dtype=dtype.name)
            with torch.no_grad():
                torch_layer.weight.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1)))
            tf_layer = impls.tf.BilinearUpsample(channels_in, factor, padding=padding, dtype=dtype.name)
            tf_layer.build(x.shape)
            tf_layer.kernel.assign(kernel)
            expected = numpy_layer(x)
            from_torch = Backend("torch").to_nhwc(torch_layer(Backend("torch").from_nhwc(x)))
            assert_close(from_torch, expected, msg=f"torch {padding}")
            assert_close(tf_layer(x), expected, msg=f"tf {padding}")

    def test_feature_trainable_flag_controls_learning(self, rng):
        torch = pytest.importorskip("torch")
        import impls.torch

        x = torch.from_numpy(_random_batch(rng, 3, 3, np.float32).transpose(0, 3, 1, 2))
        frozen = impls.torch.BilinearUpsample(3, 2)
        assert not frozen.weight.requires_grad and not list(filter(lambda p: p.requires_grad, frozen.parameters()))
        trainable = impls.torch.BilinearUpsample(3, 2, trainable=True)
        before = trainable.weight.detach().clone()
        optimizer = torch.optim.SGD(trainable.parameters(), lr=0.1)
        trainable(x).square().mean().backward()
        optimizer.step()
        assert not torch.equal(before, trainable.weight.detach())

    def test_feature_keras_trainable_flag_and_serialization(self, rng):
        keras = pytest.importorskip("keras")
        pytest.importorskip("tensorflow")
        import impls.tf

        x = _random_batch(rng, 3, 3, np.float32)
        frozen = impls.tf.BilinearUpsample(3, 2)
        frozen(x)
        assert not frozen.trainable_weights and len(frozen.non_trainable_weights) == 1
        trainable = impls.tf.BilinearUpsample(3, 2, trainable=True, padding="valid")
        trainable(x)
        assert len(trainable.trainable_weights) == 1
        restored = keras.layers.deserialize(keras.layers.serialize(trainable))
        assert (restored.channels, restored.factor, restored.padding, restored.trainable) == (3, 2, "valid", True)
        assert_close(restored(x), trainable(x))

    @pytest.mark.parametrize("arguments, error, match", [
        ((0, 2), ValueError, "argument 'channels' must be a positive integer"),
        ((3, 0), ValueError, "argument 'factor' must be a positive integer"),
        ((3, 2.5), TypeError, "argument 'factor' must be a positive integer"),
    ])
    def test_exception_bad_construction(self, backend, arguments, error, match):
        with pytest.raises(error, match=match):
            backend.module.BilinearUpsample(*arguments)

    def test_exception_bad_padding(self, backend):
        with pytest.raises(ValueError, match=r"argument 'padding' must be one of \('same', 'valid'\), got 'SAME'"):
            backend.module.BilinearUpsample(3, 2, padding="SAME")

    def test_exception_channel_mismatch(self, backend):
        layer = backend.module.BilinearUpsample(3, 2)
        with pytest.raises(ValueError, match="argument 'x' must have 3 channels .* got 4"):
            layer(backend.from_nhwc(np.ones((1, 2, 2, 4), np.float32)))


def _upsample_nhwc(backend, x, factor):
    """upsample_bilinear of NHWC NumPy `x` through a backend, back as NHWC NumPy."""
    return backend.to_nhwc(backend.module.upsample_bilinear(backend.from_nhwc(x), factor))


def _native_tensor(backend, array):
    """`array` as this backend's tensor without any layout change (for rank and dtype errors)."""
    if backend.name == "torch":
        import torch

        return torch.from_numpy(np.ascontiguousarray(array)).to(backend.device)
    if backend.name == "tf":
        import tensorflow as tf

        return tf.constant(array)
    return array


def _backward(backend, x, upstream, factor):
    """(gradient of <upsample(x), upstream> w.r.t. x, upsample(x)), both NHWC NumPy."""
    if backend.name == "torch":
        tensor = backend.from_nhwc(x, requires_grad=True)
        out = backend.module.upsample_bilinear(tensor, factor)
        out.backward(backend.from_nhwc(upstream))
        return backend.to_nhwc(tensor.grad), backend.to_nhwc(out)
    import tensorflow as tf

    tensor = backend.from_nhwc(x)
    with tf.GradientTape() as tape:
        tape.watch(tensor)
        out = backend.module.upsample_bilinear(tensor, factor)
    return tape.gradient(out, tensor, output_gradients=tf.constant(upstream)).numpy(), out.numpy()


def _strided_correlation(backend, upstream, factor):
    """The adjoint written as the framework's forward convolution: same kernel, stride f,
    f // 2 zero padding each side (2 * (f // 2) = k - f, so H*f maps back to H)."""
    crop = factor // 2
    channels = upstream.shape[-1]
    if backend.name == "torch":
        import torch

        g = backend.from_nhwc(upstream)
        kernel = torch.from_numpy(oracle_kernel(factor)).to(g).expand(channels, 1, -1, -1)
        return backend.to_nhwc(torch.nn.functional.conv2d(g, kernel, stride=factor, padding=crop, groups=channels))
    import tensorflow as tf

    kernel = np.tile(oracle_kernel(factor)[:, :, None, None], (1, 1, channels, 1)).astype(upstream.dtype)
    return tf.nn.depthwise_conv2d(upstream, kernel, strides=[1, factor, factor, 1],
                                  padding=[[0, 0], [crop, crop], [crop, crop], [0, 0]]).numpy()


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_feature_layer_dtype_accepts_names_and_framework_dtypes(backend, dtype_name):
    framework = importlib.import_module({"numpy": "numpy", "torch": "torch", "tf": "tensorflow"}[backend.name])
    for dtype in (dtype_name, getattr(framework, dtype_name)):
        layer = backend.module.BilinearUpsample(2, 2, dtype=dtype)
        out = layer(backend.from_nhwc(np.ones((1, 2, 2, 2), dtype_name)))
        assert backend.to_nhwc(out).dtype == np.dtype(dtype_name)


def test_exception_layer_rejects_integer_dtype(backend):
    with pytest.raises(TypeError, match="argument 'dtype' must be one of .* got int32"):
        backend.module.BilinearUpsample(2, 2, dtype="int32")


# --- properties (hypothesis; tests/strategies.py) ----------------------------------------------------

@pytest.mark.parametrize("profile", PROFILES)
def test_property_upsample_backends_and_layouts_equal_numpy_oracle_batch_equals_singles(profile):
    import impls.numpy

    backends = installed_frameworks()

    def prop(case):
        x, factor, how = case
        expected = impls.numpy.upsample_bilinear(x, factor)
        assert expected.shape == (x.shape[0], x.shape[1] * factor, x.shape[2] * factor, x.shape[3])
        assert expected.dtype == x.dtype
        view = lay_out(x, how)
        got = impls.numpy.upsample_bilinear(view, factor)
        np.testing.assert_array_equal(view, x)  # not mutated
        assert_close(got, expected, msg=f"layout {how}")
        singles = np.concatenate([impls.numpy.upsample_bilinear(view[n:n + 1], factor) for n in range(len(x))])
        assert_close(singles, expected, msg="batch != singles")
        for backend in backends:
            tensor = to_backend(backend, x, how)
            out = backend.to_nhwc(backend.module.upsample_bilinear(tensor, factor))
            assert_close(backend.to_nhwc(tensor), x, rtol=0, atol=0, msg=f"{backend} mutated x")
            assert out.dtype == x.dtype
            assert_close(out, expected, msg=f"{backend} factor {factor} layout {how}")

    check(profile, upsample_cases(), prop)


@pytest.mark.parametrize("profile", PROFILES)
def test_property_bilinear_kernel_is_a_symmetric_rank_one_tent_equal_in_every_backend(profile):
    import impls.numpy

    backends = installed_frameworks()

    def prop(factor):
        kernel = impls.numpy.bilinear_kernel(factor)
        size = 2 * factor - factor % 2
        assert kernel.shape == (size, size) and (kernel >= 0).all() and (kernel > 0).any()
        np.testing.assert_array_equal(kernel, kernel.T)
        np.testing.assert_array_equal(kernel, kernel[::-1, ::-1])
        taps = kernel[size // 2] / np.sqrt(kernel[size // 2, size // 2])
        assert_close(kernel, np.outer(taps, taps), rtol=1e-12, atol=1e-15, msg="not rank one")
        assert np.isclose(kernel.sum(), factor**2)
        if native.available():
            assert_close(native.bilinear_kernel(factor), kernel, rtol=0, atol=1e-15, msg="native")
        for backend in backends:
            assert_close(np.asarray(backend.module.bilinear_kernel(factor)), kernel, rtol=0, atol=1e-7,
                         msg=str(backend))

    check(profile, st.integers(1, 64), prop)
