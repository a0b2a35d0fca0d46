"""Every layer type impls.caffe runs, against OpenCV's dnn (the goldens of reference/caffe_oracle.py
on tests/caffe_nets.py's zoo) or, where OpenCV has no such layer or differs from Caffe, against
Caffe's own formula written out in NumPy; MultiStageMeanfield against CrfRnn with the same blobs
and, on tiny images, against the CRF-RNN fork's mean field computed with the exact dense filter."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tests.caffe_nets import ZOO, caffe_interp, zoo_inputs, zoo_layers, zoo_weights

torch = pytest.importorskip("torch")

from impls import caffe  # noqa: E402
from impls.caffe import _layers  # noqa: E402

GOLDENS = np.load(__import__("pathlib").Path(__file__).resolve().parents[1] / "reference" / "caffe_layers.npz")
FLT_MAX = np.finfo(np.float32).max


def zoo_net(name, folder, **encoding):
    (folder / f"{name}.prototxt").write_text(ZOO[name].prototxt)
    weights = zoo_weights(folder / f"{name}.caffemodel", name, **encoding)
    return caffe.Net(str(folder / f"{name}.prototxt"), caffe.TEST, weights=None if weights is None else str(weights))


@pytest.mark.parametrize("name", [name for name, net in ZOO.items() if net.opencv])
def test_feature_layer_agrees_with_opencv(name, tmp_path):
    net = zoo_net(name, tmp_path)
    net.forward(**zoo_inputs(name))
    for top in ZOO[name].tops:
        golden = GOLDENS[f"{name}.{top}"]
        ours = net.blobs[top].data
        assert ours.shape == golden.shape, (top, ours.shape, golden.shape)
        # float32 sums in another order: 1e-7 measured
        np.testing.assert_allclose(ours, golden, rtol=0, atol=1e-5 * max(np.abs(golden).max(), 1.0), err_msg=top)


def test_feature_every_layer_type_is_tested():
    from impls.caffe._definition import definition_from_text

    tested = {layer.type for name in ZOO for layer in definition_from_text(
        ZOO[name].prototxt, phase=caffe.TEST, known_types=frozenset(caffe.LAYER_TYPES)).layers}
    tested |= {"MultiStageMeanfield"}  # below, against CrfRnn and the fork's mean field
    assert tested == set(caffe.LAYER_TYPES), sorted(set(caffe.LAYER_TYPES) ^ tested)


@pytest.mark.parametrize("encoding", [dict(version="V1"), dict(version="V2", shapes="legacy", floats="unpacked"),
                                      dict(version="V2", floats="double")], ids=["V1", "legacy-unpacked", "double"])
def test_feature_every_encoding_loads_the_same_net(encoding, tmp_path):
    for name in ("conv", "deconv", "inner_product"):
        reference = zoo_net(name, tmp_path).forward(**zoo_inputs(name))
        other = zoo_net(name, tmp_path, **encoding).forward(**zoo_inputs(name))
        np.testing.assert_array_equal(other[name], reference[name])


# ---- Caffe's formulas, where OpenCV has no such layer or differs --------------------------------

def caffe_argmax(x, *, top_k=1, out_max_val=False, axis=None):
    """Caffe's ArgMaxLayer::Forward_cpu: (value, index) pairs sorted with std::greater (ties: the
    larger index first)."""
    if axis is not None:
        moved = np.moveaxis(x, axis, -1)
        out = np.empty(moved.shape[:-1] + (top_k,), np.float32)
        for index in np.ndindex(moved.shape[:-1]):
            pairs = sorted(((v, i) for i, v in enumerate(moved[index])), reverse=True)[:top_k]
            out[index] = [v if out_max_val else i for v, i in pairs]
        return np.moveaxis(out, -1, axis)
    flat = x.reshape(len(x), -1)
    out = np.zeros((len(x), 2 if out_max_val else 1, top_k) + (1,) * (x.ndim - 3), np.float32)
    for n, row in enumerate(flat):
        pairs = sorted(((v, i) for i, v in enumerate(row)), reverse=True)[:top_k]
        out[n, 0, :, ...] = np.array([i for _, i in pairs]).reshape(top_k, *(1,) * (x.ndim - 3))
        if out_max_val:
            out[n, 1, :, ...] = np.array([v for v, _ in pairs]).reshape(top_k, *(1,) * (x.ndim - 3))
    return out


def caffe_pool(x, kernel, stride, pad, method, round_mode="CEIL"):
    """Caffe's PoolingLayer::Reshape and Forward_cpu, loop by loop (MAX from -FLT_MAX over the
    clipped window; AVE: the sum over the clipped window divided by the window's size up to H + pad)."""
    _, _, height, width = x.shape
    rounding = np.ceil if round_mode == "CEIL" else np.floor
    pooled = [int(rounding((size + 2 * pad - kernel) / stride)) + 1 for size in (height, width)]
    if pad:
        pooled = [n - 1 if (n - 1) * stride >= size + pad else n
                  for n, size in zip(pooled, (height, width), strict=True)]
    out = np.zeros(x.shape[:2] + tuple(pooled), np.float32)
    for ph, pw in itertools.product(range(pooled[0]), range(pooled[1])):
        hstart, wstart = ph * stride - pad, pw * stride - pad
        hend, wend = min(hstart + kernel, height + pad), min(wstart + kernel, width + pad)
        size = (hend - hstart) * (wend - wstart)
        hstart, wstart, hend, wend = max(hstart, 0), max(wstart, 0), min(hend, height), min(wend, width)
        window = x[:, :, hstart:hend, wstart:wend].reshape(*x.shape[:2], -1)
        if method == "MAX":
            out[:, :, ph, pw] = np.maximum(window.max(-1), -FLT_MAX) if window.size else -FLT_MAX
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                out[:, :, ph, pw] = window.sum(-1) / np.float32(size)
    return out


def test_feature_argmax_as_caffe_ranks_ties(tmp_path):
    for name, options in (("argmax", dict(axis=1)), ("argmax_top2", dict(top_k=2, out_max_val=True))):
        x = zoo_inputs(name)["data"]
        out = zoo_net(name, tmp_path).forward(data=x)[name]
        np.testing.assert_array_equal(out, caffe_argmax(x, **options), err_msg=name)
    assert len(np.unique(zoo_inputs("argmax")["data"])) < zoo_inputs("argmax")["data"].size / 4  # many ties


def test_feature_inner_product_transpose_as_caffe(tmp_path):
    """transpose: true stores the weights (in, out) (OpenCV reads them as (out, in))."""
    x = zoo_inputs("inner_product_transpose")["data"]
    (_, _, (weights,)), = zoo_layers("inner_product_transpose")
    out = zoo_net("inner_product_transpose", tmp_path).forward(data=x)["inner_product_transpose"]
    np.testing.assert_allclose(out, x.reshape(len(x), -1) @ weights, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("round_mode", ["CEIL", "FLOOR"])
def test_property_pooling_is_caffes_at_every_geometry(method, round_mode):
    """Both of the layer's paths (torch's pooling where its windows are Caffe's, the input padded by
    hand where they are not: stride over kernel, pad over half the kernel) against Caffe's loops."""
    rng = np.random.default_rng(0)
    from impls.caffe._definition import definition_from_text

    for size, kernel, stride, pad in itertools.product((4, 5, 7, 8), (1, 2, 3), (1, 2, 3), (0, 1, 2)):
        if pad >= kernel:
            continue
        text = (f'input: "data" input_dim: 1 input_dim: 2 input_dim: {size} input_dim: {size + 1}\n'
                f'layer {{ name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param {{ pool: {method} '
                f'kernel_size: {kernel} stride: {stride} pad: {pad} round_mode: {round_mode} }} }}')
        (definition,) = definition_from_text(text, phase=caffe.TEST, known_types=frozenset(caffe.LAYER_TYPES)).layers
        x = rng.standard_normal((1, 2, size, size + 1)).astype(np.float32)
        layer = _layers.Pooling(definition, [x.shape], caffe.TEST)
        (out,) = layer.forward([torch.from_numpy(x)], [])
        expected = caffe_pool(x, kernel, stride, pad, method, round_mode)
        assert tuple(out.shape) == expected.shape, (size, kernel, stride, pad)
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6, atol=1e-6,
                                   err_msg=str((size, kernel, stride, pad)))
        assert tuple(out.shape) == layer.top_shapes([x.shape])[0]


def test_feature_pooling_window_past_the_edge_is_caffes(tmp_path):
    x = zoo_inputs("pool_stride_over_kernel")["data"]
    out = zoo_net("pool_stride_over_kernel", tmp_path).forward(data=x)["pool_stride_over_kernel"]
    np.testing.assert_array_equal(out, caffe_pool(x, 1, 2, 0, "MAX"))
    assert (out[:, :, -1] == -FLT_MAX).all()  # the third row of windows starts past the 4-pixel height


def test_feature_interp_sizes_and_values_as_deeplab(tmp_path):
    """Interp's sizes (shrink (H - 1) / s + 1 before zoom H + (H - 1)(z - 1); pads crop) and its
    aligned-corner values against deeplab-public-ver2's formulas (OpenCV reads neither shrink_factor
    nor the pads)."""
    x = zoo_inputs("interp_shrink")["data"]
    for name, (cropped, size) in {"interp_shrink": (x, (7, 5)), "interp_shrink_zoom": (x, (10, 7)),
                                  "interp_crop": (x[:, :, 1:-2, 1:-2], (19, 11))}.items():
        out = zoo_net(name, tmp_path).forward(data=x)[name]
        assert out.shape[2:] == size, name
        np.testing.assert_allclose(out, caffe_interp(cropped, *size), rtol=0, atol=1e-6, err_msg=name)


# ---- TRAIN phase --------------------------------------------------------------------------------

def test_feature_train_phase_normalises_by_the_batch_and_updates_the_statistics(tmp_path):
    (tmp_path / "bn.prototxt").write_text(ZOO["batchnorm_zero_factor"].prototxt.replace(
        'type: "BatchNorm"', 'type: "BatchNorm"\n  batch_norm_param { moving_average_fraction: 0.9 }'))
    net = caffe.Net(str(tmp_path / "bn.prototxt"), caffe.TRAIN)
    x = zoo_inputs("batchnorm_zero_factor")["data"]
    out = net.forward(data=x)["batchnorm_zero_factor"]
    mean, variance = x.mean((0, 2, 3)), x.var((0, 2, 3))
    np.testing.assert_allclose(out, (x - mean[:, None, None]) / np.sqrt(variance[:, None, None] + 1e-5), atol=1e-5)
    count = x.size // 3
    blobs = net.params["batchnorm_zero_factor"]
    np.testing.assert_allclose(blobs[0].data, mean, rtol=1e-5)  # 0.9 * 0 + mean
    np.testing.assert_allclose(blobs[1].data, variance * count / (count - 1), rtol=1e-5)
    assert blobs[2].data[0] == 1.0


# ---- MultiStageMeanfield ------------------------------------------------------------------------

MEANFIELD = """input: "unary" input_dim: 1 input_dim: {c} input_dim: {h} input_dim: {w}
input: "image" input_dim: 1 input_dim: 3 input_dim: {h} input_dim: {w}
layer {{ name: "split" type: "Split" bottom: "unary" top: "u" top: "q0" }}
layer {{ name: "inference1" type: "MultiStageMeanfield" bottom: "u" bottom: "q0" bottom: "image" top: "pred"
  multi_stage_meanfield_param {{ num_iterations: {iterations} theta_alpha: 4 theta_beta: 30 theta_gamma: 2
                                spatial_filter_weight: 3 bilateral_filter_weight: 5 }} }}
"""


def fork_mean_field(unary, initial, image, weights, thetas, iterations):
    """The CRF-RNN fork's MultiStageMeanfield (multi_stage_meanfield.cpp, meanfield_iteration.cpp) in
    NumPy, one image, the exact Gaussian filter in place of its permutohedral lattice: features
    (x, y) / gamma and (x, y) / alpha + the image's three channels / beta; each step the softmax of
    the last logits, both filters normalised by their filter of ones, message = W_s spatial +
    W_b bilateral (C x C times C x P), logits = unary - compatibility message."""
    from impls.numpy import gaussian_filter_exact

    alpha, beta, gamma = thetas
    channels, height, width = unary.shape
    y, x = np.mgrid[:height, :width]
    position = np.stack([x.ravel(), y.ravel()], 1).astype(np.float64)
    spatial = position / gamma
    bilateral = np.concatenate([position / alpha, image.reshape(3, -1).T / beta], 1)
    ones = np.ones((height * width, 1))
    norms = [1 / (gaussian_filter_exact(ones, f) + 1e-20) for f in (spatial, bilateral)]
    spatial_weights, bilateral_weights, compatibility = (w.astype(np.float64) for w in weights)
    u = unary.reshape(channels, -1).astype(np.float64)
    q = initial.reshape(channels, -1).astype(np.float64)
    for _ in range(iterations):
        p = np.exp(q - q.max(0))
        p /= p.sum(0)
        s = (gaussian_filter_exact(p.T, spatial) * norms[0]).T
        b = (gaussian_filter_exact(p.T, bilateral) * norms[1]).T
        q = u - compatibility @ (spatial_weights @ s + bilateral_weights @ b)
    return q.reshape(channels, height, width)


def _meanfield_net(folder, channels, height, width, iterations, weights):
    (folder / "crf.prototxt").write_text(MEANFIELD.format(c=channels, h=height, w=width, iterations=iterations))
    from tests.caffe_files import write_caffemodel

    path = write_caffemodel(folder / "crf.caffemodel", [("inference1", "MultiStageMeanfield",
                                                         [w.reshape(1, 1, channels, channels) for w in weights])])
    return caffe.Net(str(folder / "crf.prototxt"), str(path), caffe.TEST)


def _meanfield_case(channels, height, width, seed=0):
    rng = np.random.default_rng(seed)
    unary = (3 * rng.standard_normal((1, channels, height, width))).astype(np.float32)
    image = rng.uniform(-120, 140, (1, 3, height, width)).astype(np.float32)  # mean-subtracted BGR
    base = (3 * np.eye(channels), 5 * np.eye(channels), -np.eye(channels))
    weights = [(b + 0.3 * rng.standard_normal((channels, channels))).astype(np.float32) for b in base]
    return unary, image, weights


def test_feature_multistage_meanfield_is_crfrnn_with_its_blobs(tmp_path):
    """Its blobs are CrfRnn's matrices as they are: the net's output equals impls.torch.CrfRnn with
    them, every image of a batch refined (the fork 'has not been tested with batch size > 1')."""
    import impls.torch

    unary, image, weights = _meanfield_case(4, 9, 11)
    net = _meanfield_net(tmp_path, 4, 9, 11, 5, weights)
    pred = net.forward(unary=unary, image=image)["pred"]
    crf = impls.torch.CrfRnn(4, theta_alpha=4, theta_beta=30, theta_gamma=2, iterations=5)
    with torch.no_grad():
        for parameter, value in zip((crf.spatial_ker_weights, crf.bilateral_ker_weights, crf.compatibility_matrix),
                                    weights, strict=True):
            parameter.copy_(torch.from_numpy(value))
        expected = crf(torch.from_numpy(unary), torch.from_numpy(image)).numpy()
    np.testing.assert_allclose(pred, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("iterations", [1, 5])
def test_feature_multistage_meanfield_is_the_forks_mean_field(iterations, tmp_path, monkeypatch):
    """On a tiny image the fork's mean field is computable in NumPy: with the NumPy oracle's lattice
    in place of its filter the layer equals it to float32 rounding (measured 1.6e-7: the weights'
    orientation, the features' order and the normalisation are the fork's); with the exact dense
    filter it is within the lattice's own approximation (measured 10 % and 17 % of the largest
    logit after 1 and 5 steps, the lattice's error; labels >= 95 % equal), much closer than with
    the weights transposed (57 % and 74 %)."""
    import impls.numpy

    unary, image, weights = _meanfield_case(3, 6, 7, seed=iterations)
    pred = _meanfield_net(tmp_path, 3, 6, 7, iterations, weights).forward(unary=unary, image=image)["pred"][0]
    exact = fork_mean_field(unary[0], unary[0], image[0], weights, (4, 30, 2), iterations)
    transposed = fork_mean_field(unary[0], unary[0], image[0], [w.T for w in weights], (4, 30, 2), iterations)
    monkeypatch.setattr(impls.numpy, "gaussian_filter_exact", impls.numpy.permutohedral_filter)
    lattice = fork_mean_field(unary[0], unary[0], image[0], weights, (4, 30, 2), iterations)
    scale = np.abs(exact).max()
    assert np.abs(pred - lattice).max() / scale < 1e-5
    error = np.abs(pred - exact).max() / scale
    assert error < 0.25 and (pred.argmax(0) == exact.argmax(0)).mean() >= 0.95, error
    assert np.abs(pred - transposed).max() / scale > 2 * error


def test_feature_multistage_meanfield_starts_from_its_second_bottom(tmp_path):
    """The first step's softmax reads bottom 1 (in CRF-RNN's nets a copy of the unary)."""
    unary, image, weights = _meanfield_case(3, 6, 7, seed=5)
    text = MEANFIELD.format(c=3, h=6, w=7, iterations=2).replace(
        'layer { name: "split" type: "Split" bottom: "unary" top: "u" top: "q0" }',
        'input: "q0" input_dim: 1 input_dim: 3 input_dim: 6 input_dim: 7\n'
        'layer { name: "split" type: "Split" bottom: "unary" top: "u" }')
    (tmp_path / "two.prototxt").write_text(text)
    from tests.caffe_files import write_caffemodel

    path = write_caffemodel(tmp_path / "w.caffemodel", [("inference1", "MultiStageMeanfield",
                                                         [w.reshape(1, 1, 3, 3) for w in weights])])
    net = caffe.Net(str(tmp_path / "two.prototxt"), str(path), caffe.TEST)
    initial = np.zeros_like(unary)
    pred = net.forward(unary=unary, image=image, q0=initial)["pred"][0]
    exact = fork_mean_field(unary[0], initial[0], image[0], weights, (4, 30, 2), 2)
    same_start = fork_mean_field(unary[0], unary[0], image[0], weights, (4, 30, 2), 2)
    assert np.abs(pred - exact).max() < np.abs(pred - same_start).max()


# ---- Winograd's F(4x4, 3x3) ---------------------------------------------------------------------

@pytest.mark.parametrize("shape, pad, outputs", [((2, 128, 9, 13), (1, 1), 256), ((1, 160, 17, 6), (0, 2), 256),
                                                 ((1, 128, 4, 5), (2, 2), 300), ((1, 128, 3, 3), (0, 0), 256)])
def test_feature_winograd_convolution_equals_the_direct_one(shape, pad, outputs):
    """impls.caffe._winograd against the direct convolution in float64, any size (tiles cut at the
    edges), pad, batch, and NCHW or channels-last input: float32 rounding of the transforms."""
    from impls.caffe import _winograd

    rng = np.random.default_rng(sum(shape))
    x = torch.from_numpy(np.maximum(rng.standard_normal(shape), 0).astype(np.float32))
    weight = torch.from_numpy((rng.standard_normal((outputs, shape[1], 3, 3)) / np.sqrt(9 * shape[1]))
                              .astype(np.float32))
    bias = torch.from_numpy(rng.standard_normal(outputs).astype(np.float32))
    expected = torch.nn.functional.conv2d(x.double(), weight.double(), bias.double(), padding=pad)
    transformed = _winograd.transform_weights(weight)
    for layout in (x, x.contiguous(memory_format=torch.channels_last)):
        out = _winograd.convolve(layout, transformed, bias, pad)
        assert out.shape == expected.shape
        error = float((out.double() - expected).abs().max() / expected.abs().max())
        assert error < 3e-5, error  # measured 5e-6 to 9e-6


def test_feature_net_uses_winograd_where_it_pays_and_can_do_without(tmp_path):
    text = ('input: "data" input_dim: 1 input_dim: 128 input_dim: 10 input_dim: 12\n'
            'layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 256 '
            'kernel_size: 3 pad: 1 weight_filler { type: "msra" } } }\n'
            'layer { name: "small" type: "Convolution" bottom: "c" top: "small" convolution_param { num_output: 8 '
            'kernel_size: 3 pad: 1 weight_filler { type: "msra" } } }\n')
    from impls.port.prototxt import parse_prototxt

    fast, direct = caffe.Net(parse_prototxt(text), caffe.TEST), caffe.Net(parse_prototxt(text), caffe.TEST,
                                                                         winograd=False)
    assert [layer.winograd for layer in fast.layers] == [True, False]
    assert [layer.winograd for layer in direct.layers] == [False, False]
    x = np.random.default_rng(0).standard_normal((1, 128, 10, 12)).astype(np.float32)
    a, b = fast.forward(data=x)["small"], direct.forward(data=x)["small"]
    assert np.abs(a - b).max() <= 3e-5 * np.abs(b).max()
    with pytest.raises(TypeError, match="argument 'winograd' must be a bool"):
        caffe.Net(parse_prototxt(text), caffe.TEST, winograd=1)
