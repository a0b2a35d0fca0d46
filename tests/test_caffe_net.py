"""impls.caffe as pycaffe: Net's two signatures, its blobs and params as writable arrays, reshape,
forward and forward_all, weights with the loaders' strictness, the net's definition (phases,
stages, V1 nets, inputs), deploy(), fillers, the fork's automatic crops, threads and the mode."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest

from tests.caffe_files import prototxt, write_caffemodel
from tests.caffe_nets import ZOO, zoo_inputs, zoo_weights

torch = pytest.importorskip("torch")

from impls import caffe  # noqa: E402
from impls.port.prototxt import parse_prototxt, read_prototxt  # noqa: E402

SMALL = """name: "small"
input: "data"
input_shape { dim: 1 dim: 3 dim: 8 dim: 10 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1
                            weight_filler { type: "gaussian" std: 0.1 } bias_filler { type: "constant" value: 0.5 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "drop" type: "Dropout" bottom: "pool" top: "pool" include { phase: TRAIN } }
layer { name: "score" type: "Convolution" bottom: "pool" top: "score"
        convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
input: "label"
input_shape { dim: 1 dim: 1 dim: 4 dim: 5 }
"""


@pytest.fixture
def small(tmp_path):
    path = tmp_path / "small.prototxt"
    path.write_text(SMALL)
    rng = np.random.default_rng(0)
    weights = write_caffemodel(tmp_path / "small.caffemodel", [
        ("conv", "Convolution", [rng.standard_normal((4, 3, 3, 3)).astype(np.float32), np.ones(4, np.float32)]),
        ("score", "Convolution", [rng.standard_normal((2, 4, 1, 1)).astype(np.float32), np.zeros(2, np.float32)])])
    return path, weights


def test_feature_both_signatures_and_the_pycaffe_attributes(small, caplog):
    path, weights = small
    with caplog.at_level(logging.WARNING, logger="impls.caffe"):
        net = caffe.Net(str(path), str(weights), caffe.TEST)
    same = caffe.Net(str(path), caffe.TEST, weights=str(weights))
    assert "skipped layer 'loss' (SoftmaxWithLoss)" in caplog.text and net.skipped[0][:2] == ("loss", "SoftmaxWithLoss")
    assert list(net.blobs) == ["data", "label", "conv", "pool", "score"] and net.inputs == ["data", "label"]
    assert net.outputs == ["label", "score"]  # Caffe's rule: blobs no layer reads (the skipped loss read label)
    assert [layer.type for layer in net.layers] == ["Convolution", "ReLU", "Pooling", "Convolution"]
    assert net._layer_names == ["conv", "relu", "pool", "score"] and list(net.layer_dict) == net._layer_names
    assert net.top_names["relu"] == ["conv"] and net.bottom_names["pool"] == ["conv"]
    assert [blob.shape for blob in net.params["conv"]] == [(4, 3, 3, 3), (4,)]
    assert net.blobs["score"].shape == (1, 2, 4, 5) and net.blobs["data"].count == 240
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 10)).astype(np.float32)
    np.testing.assert_array_equal(net.forward(data=x)["score"], same.forward(data=x)["score"])
    blob = net.blobs["score"]
    assert (blob.num, blob.channels, blob.height, blob.width) == (1, 2, 4, 5)
    with pytest.raises(AttributeError, match="forward only: blobs have no diff"):
        blob.diff  # noqa: B018
    with pytest.raises(ValueError, match=r"Blob.reshape: argument 'shape' must be non-negative integers, got "
                                         r"\(1, -2\)"):
        blob.reshape(1, -2)


def test_feature_data_is_writable_and_read_by_forward(small):
    """pycaffe's idiom: reshape the input blob, write into its data, forward, read a blob's data;
    writing into a parameter's data changes the next forward."""
    path, weights = small
    net = caffe.Net(str(path), str(weights), caffe.TEST)
    x = np.random.default_rng(2).standard_normal((2, 3, 12, 9)).astype(np.float32)
    net.blobs["data"].reshape(*x.shape)
    net.blobs["data"].data[...] = x
    out = net.forward()
    assert out["score"].shape == (2, 2, 6, 5) and net.blobs["pool"].shape == (2, 4, 6, 5)
    conv = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(net.params["conv"][0].data), padding=1)
    expected = torch.nn.functional.max_pool2d(torch.relu(conv + 1), 2, 2, ceil_mode=True)
    np.testing.assert_allclose(net.blobs["pool"].data, expected.numpy(), rtol=1e-5, atol=1e-5)
    net.params["score"][1].data[...] = 7.0
    assert np.allclose(net.forward()["score"] - out["score"], 7.0, atol=1e-5)


def test_feature_reshape_forward_ranges_and_extra_blobs(small):
    path, weights = small
    net = caffe.Net(str(path), str(weights), caffe.TEST)
    net.blobs["data"].reshape(1, 3, 16, 16)
    net.reshape()
    assert net.blobs["score"].shape == (1, 2, 8, 8)
    x = np.ones((1, 3, 16, 16), np.float32)
    out = net.forward(end="pool", data=x)
    assert list(out) == ["pool"]
    pool = net.blobs["pool"].data.copy()
    net.blobs["pool"].data[...] = 0  # from a layer on: the blobs as they are
    assert np.allclose(net.forward(start="score")["score"], net.params["score"][1].data[None, :, None, None])
    full = net.forward(blobs=["pool"], data=x)
    np.testing.assert_array_equal(full["pool"], pool)
    with pytest.raises(ValueError, match=r"input 'data' must have the blob's shape \(1, 3, 16, 16\), got "
                                         r"\(1, 3, 8, 8\)"):
        net.forward(data=np.ones((1, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match="argument 'end' must name a layer, got 'nope'"):
        net.forward(end="nope")
    net.blobs["data"].reshape(1, 5, 16, 16)  # another channel count than conv's weights
    with pytest.raises(ValueError, match=r"layer 'conv' \(Convolution\): has weights of shapes \[\(4, 3, 3, 3\)\]"):
        net.reshape()


def test_feature_forward_all_batches_and_pads_as_pycaffe(small):
    path, weights = small
    net = caffe.Net(str(path), str(weights), caffe.TEST)
    net.blobs["data"].reshape(2, 3, 8, 10)
    images = np.random.default_rng(3).standard_normal((5, 3, 8, 10)).astype(np.float32)
    out = net.forward_all(data=images)
    assert out["score"].shape == (5, 2, 4, 5)
    net.blobs["data"].reshape(1, 3, 8, 10)
    for i in range(5):
        # (a batch of two sums its convolutions in another order: 1e-6 measured)
        np.testing.assert_allclose(out["score"][i], net.forward(data=images[i:i + 1])["score"][0], rtol=1e-5,
                                   atol=1e-5)


def test_feature_train_phase_includes_its_layers_and_refuses_losses(small):
    path, _ = small
    with pytest.raises(ValueError, match=r"layer 'loss' has type 'SoftmaxWithLoss', which impls.caffe does not "
                                         r"implement"):
        caffe.Net(str(path), caffe.TRAIN)
    net = caffe.Net(_without_loss(path), caffe.TRAIN)
    assert "drop" in net.layer_dict


def _without_loss(path):
    text = path.read_text().replace('layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" '
                                    'top: "loss" }', "")
    (path.parent / "train.prototxt").write_text(text)
    return str(path.parent / "train.prototxt")


# ---- Weights: the loaders' strictness ----------------------------------------------------------

def test_exception_weight_files_that_do_not_match_are_refused(small, tmp_path, caplog):
    path, _ = small
    rng = np.random.default_rng(0)
    conv = [rng.standard_normal((4, 3, 3, 3)).astype(np.float32), np.ones(4, np.float32)]
    only_conv = write_caffemodel(tmp_path / "conv.caffemodel", [("conv", "Convolution", conv)])
    with pytest.raises(ValueError, match=r"missing from the file .*: score \[0, 1\]"):
        caffe.Net(str(path), str(only_conv), caffe.TEST)
    with caplog.at_level(logging.WARNING, logger="impls.caffe"):
        net = caffe.Net(str(path), str(only_conv), caffe.TEST, strict=False)  # Caffe's behaviour: fillers
    assert "layer 'score' is not in" in caplog.text
    assert not net.params["score"][0].data.any()  # no weight_filler: Caffe's default, constant 0
    assert net.forward(data=np.ones((1, 3, 8, 10), np.float32))["score"].shape == (1, 2, 4, 5)
    extra = write_caffemodel(tmp_path / "extra.caffemodel", [("conv", "Convolution", conv),
                                                             ("score", "Convolution", [np.ones((2, 4, 1, 1)),
                                                                                       np.ones(2)]),
                                                             ("fc8", "InnerProduct", [np.ones((3, 3))])])
    with pytest.raises(ValueError, match=r"unused .*: fc8 \[0\]"):
        caffe.Net(str(path), str(extra), caffe.TEST)
    one_blob = write_caffemodel(tmp_path / "one.caffemodel", [("conv", "Convolution", conv[:1])])
    with pytest.raises(ValueError, match="mismatched: conv: Incompatible number of blobs: the file has 1, the net 2"):
        caffe.Net(str(path), str(one_blob), caffe.TEST)
    shape = write_caffemodel(tmp_path / "shape.caffemodel", [("conv", "Convolution", [conv[0][:, :2], conv[1]])])
    with pytest.raises(ValueError, match=r"conv: blob 0: \(4, 2, 3, 3\) in the file vs \(4, 3, 3, 3\) in the net"):
        caffe.Net(str(path), str(shape), caffe.TEST)


def test_exception_nothing_is_copied_when_copy_from_refuses(small, tmp_path):
    path, weights = small
    net = caffe.Net(str(path), str(weights), caffe.TEST)
    before = [blob.data.copy() for blob in net.params["conv"]]
    bad = write_caffemodel(tmp_path / "bad.caffemodel", [("conv", "Convolution", [np.zeros((4, 3, 3, 3)),
                                                                                  np.zeros(4)])])
    with pytest.raises(ValueError, match="nothing was loaded"):
        net.copy_from(str(bad))
    for blob, value in zip(net.params["conv"], before, strict=True):
        np.testing.assert_array_equal(blob.data, value)
    report = net.copy_from(str(bad), strict=False)
    assert not net.params["conv"][0].data.any() and [name for name, _ in report.missing] == ["score"]


# ---- The definition -----------------------------------------------------------------------------

def test_exception_what_cannot_run_is_refused_before_anything_is_built(tmp_path):
    cases = {
        'layer { name: "lrn" type: "LRN" bottom: "data" top: "lrn" }':
            r"layer 'lrn' has type 'LRN', which impls.caffe does not implement",
        'layer { name: "data" type: "Python" top: "x" python_param { module: "voc_layers" layer: "VOCSegDataLayer" } }':
            r"layer 'data' \(Python: voc_layers.VOCSegDataLayer\) reads a dataset.*impls.caffe.deploy",
        'layer { name: "c" type: "Convolution" bottom: "nope" top: "c" convolution_param { num_output: 1 '
        'kernel_size: 1 } }': r"layer 'c' reads blob\(s\) \['nope'\], which no earlier layer or input makes",
        'layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { kernel_size: 1 } }':
            r"layer 'c' \(Convolution\): needs convolution_param.num_output",
        'layer { name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param { pool: STOCHASTIC kernel_size: 2 } }':
            r"STOCHASTIC pooling is not implemented",
        'layer { name: "e" type: "Eltwise" bottom: "data" bottom: "data" top: "e" eltwise_param { operation: MAX '
        'coeff: 1 coeff: 2 } }': r"only SUM takes them",
        'layers { name: "x" type: NOT_A_TYPE }': r"has type 'NOT_A_TYPE', which is neither a V2 type name nor",
    }
    for layer, why in cases.items():
        path = tmp_path / "net.prototxt"
        path.write_text(f'input: "data" input_dim: 1 input_dim: 3 input_dim: 4 input_dim: 4\n{layer}\n')
        with pytest.raises(ValueError, match=f"net.prototxt:2: .*{why}"):
            caffe.Net(str(path), caffe.TEST)
    (tmp_path / "dims.prototxt").write_text('input: "data" input_dim: 1 input_dim: 3\nlayer { name: "r" type: "ReLU" '
                                           'bottom: "data" top: "r" }')
    with pytest.raises(ValueError, match=r"1 input\(s\) need 4 input_dim values \(four each\), got 2"):
        caffe.Net(str(tmp_path / "dims.prototxt"), caffe.TEST)
    for phase in (2, True, "TEST", None):
        with pytest.raises(ValueError, match="argument 'phase' must be impls.caffe.TEST or impls.caffe.TRAIN"):
            caffe.Net(str(prototxt("voc-fcn8s")), phase)


def test_feature_rules_include_layers_by_phase_stage_and_level():
    text = ('input: "data" input_dim: 1 input_dim: 1 input_dim: 2 input_dim: 2\n'
            'layer { name: "a" type: "ReLU" bottom: "data" top: "a" include { phase: TEST } }\n'
            'layer { name: "b" type: "ReLU" bottom: "data" top: "b" include { stage: "deploy" } }\n'
            'layer { name: "c" type: "ReLU" bottom: "data" top: "c" exclude { min_level: 2 } }\n'
            'layer { name: "d" type: "ReLU" bottom: "data" top: "d" include { not_stage: "deploy" phase: TRAIN } }\n')
    names = lambda **state: [layer.name for layer in caffe.Net(parse_prototxt(text), **state).layers]  # noqa: E731
    assert names(phase=caffe.TEST) == ["a", "c"]
    assert names(phase=caffe.TEST, stages=["deploy"], level=3) == ["a", "b"]
    assert names(phase=caffe.TRAIN) == ["c", "d"]


def test_feature_deploy_makes_the_authors_deploy_net_from_their_val_net():
    """impls.caffe.deploy(val.prototxt) is exactly what the authors' voc-fcn8s/deploy.prototxt is to
    their val.prototxt (comments aside); and it runs."""
    made = parse_prototxt(caffe.deploy(prototxt("voc-fcn8s", "val")))
    assert made.to_dict() == read_prototxt(prototxt("voc-fcn8s")).to_dict()
    net = caffe.Net(parse_prototxt(caffe.deploy(prototxt("voc-fcn32s", "val"), (1, 3, 64, 48))), caffe.TEST)
    assert net.inputs == ["data"] and net.outputs == ["score"] and net.blobs["score"].shape == (1, 21, 64, 48)


def test_feature_deploy_of_a_v1_net_uses_input_fields():
    v1 = ('name: "v1"\nlayers { name: "data" type: DATA top: "data" top: "label" include { phase: TRAIN } }\n'
          'layers { name: "data" type: DATA top: "data" top: "label" include { phase: TEST } }\n'
          'layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv" convolution_param { num_output: 2 '
          'kernel_size: 3 } }\nlayers { name: "loss" type: SOFTMAX_LOSS bottom: "conv" bottom: "label" }\n')
    made = parse_prototxt(caffe.deploy(v1, (2, 3, 7, 7)))
    assert made.strings("input") == ["data"] and made.ints("input_dim") == [2, 3, 7, 7]
    assert [layer.string("name") for layer in made.messages("layers")] == ["conv"]
    assert caffe.Net(made, caffe.TEST).blobs["conv"].shape == (2, 2, 5, 5)


# ---- Fillers, automatic crops -------------------------------------------------------------------

def test_feature_fillers_without_weights(tmp_path):
    text = ('input: "data" input_dim: 1 input_dim: 8 input_dim: 6 input_dim: 6\n' + "".join(
        f'layer {{ name: "{name}" type: "{kind}" bottom: "data" top: "{name}" convolution_param {{ num_output: 8 '
        f'kernel_size: 4 stride: 2 {"group: 8 " if kind == "Deconvolution" else ""}weight_filler {{ {filler} }} }} }}\n'
        for name, kind, filler in (
            ("constant", "Convolution", 'type: "constant" value: 0.25'),
            ("gaussian", "Convolution", 'type: "gaussian" mean: 1 std: 0.5'),
            ("uniform", "Convolution", 'type: "uniform" min: -2 max: -1'),
            ("xavier", "Convolution", 'type: "xavier"'),
            ("msra", "Convolution", 'type: "msra"'),
            ("bilinear", "Deconvolution", 'type: "bilinear"'))))
    net = caffe.Net(parse_prototxt(text), caffe.TEST)
    weights = {name: blobs[0].data for name, blobs in net.params.items()}
    assert (weights["constant"] == 0.25).all() and not net.params["constant"][1].data.any()  # bias: constant 0
    assert abs(weights["gaussian"].mean() - 1) < 0.1 and abs(weights["gaussian"].std() - 0.5) < 0.1
    assert weights["uniform"].min() >= -2 and weights["uniform"].max() <= -1
    assert np.abs(weights["xavier"]).max() <= np.sqrt(3 / 128) and abs(weights["msra"].std() - np.sqrt(2 / 128)) < 0.02
    from tests.caffe_files import bilinear_weights

    np.testing.assert_array_equal(weights["bilinear"][:, 0], bilinear_weights((1, 1, 4, 4))[0, 0][None].repeat(8, 0))
    again = caffe.Net(parse_prototxt(text), caffe.TEST)
    np.testing.assert_array_equal(again.params["gaussian"][0].data, weights["gaussian"])  # seeded by name
    with pytest.raises(ValueError, match="filler 'sparse_thing' is not implemented"):
        caffe.Net(parse_prototxt(text.replace('type: "msra"', 'type: "sparse_thing"')), caffe.TEST)


def test_feature_automatic_crop_offsets_are_the_forks(tmp_path):
    """A Crop without crop_param (the CRF-RNN fork's) derives its offsets from the layers' coordinate
    maps: CRF-RNN's three are FCN-8s's 5, 9 and 31 (crfasrnn_keras's constants), in its V2 and V1
    nets; through a layer without a map it is refused, naming the layer."""
    for name in ("TVG_CRFRNN_new_deploy", "TVG_CRFRNN_COCO_VOC"):
        net = caffe.Net(str(prototxt("crfasrnn", name)), caffe.TEST)
        assert [layer.offsets for layer in net.layers if layer.type == "Crop"] == [(5, 5), (9, 9), (31, 31)]
    text = ('input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8\n'
            'layer { name: "g" type: "Pooling" bottom: "data" top: "g"\n'
            '        pooling_param { pool: AVE global_pooling: 1 } }\n'
            'layer { name: "c" type: "Crop" bottom: "data" bottom: "g" top: "c" }\n')
    with pytest.raises(ValueError, match=r"cannot derive its offsets through layer 'g' \(Pooling\)"):
        caffe.Net(parse_prototxt(text), caffe.TEST)


# ---- Threads, the mode --------------------------------------------------------------------------

def test_feature_one_net_from_several_threads(tmp_path):
    (tmp_path / "conv.prototxt").write_text(ZOO["conv"].prototxt)
    net = caffe.Net(str(tmp_path / "conv.prototxt"), str(zoo_weights(tmp_path / "w.caffemodel", "conv")), caffe.TEST)
    inputs = [np.random.default_rng(i).standard_normal((2, 3, 9, 11)).astype(np.float32) for i in range(4)]
    expected = [net.forward(data=x)["conv"].copy() for x in inputs]
    results, errors = {}, []

    def work(index):
        try:
            for _ in range(10):
                results.setdefault(index, []).append(net.forward(data=inputs[index])["conv"].copy())
        except Exception as error:  # noqa: BLE001 (reported below)
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for index, outputs in results.items():
        assert all(np.array_equal(out, expected[index]) for out in outputs)


def test_exception_gpu_mode_without_a_gpu_and_device_index():
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(RuntimeError, match="torch sees no CUDA device"):
        caffe.set_mode_gpu()
    with pytest.raises(ValueError, match="argument 'index' must be a non-negative integer"):
        caffe.set_device(-1)
    caffe.set_mode_cpu()


def test_feature_blobs_follow_the_device_as_caffes_synced_memory(tmp_path):
    """The host copy and the device copy of a blob (here the meta device, which every machine has):
    a forward on the device leaves the tops there; writing into .data goes back before the next."""
    (tmp_path / "bn.prototxt").write_text(ZOO["batchnorm"].prototxt)
    net = caffe.Net(str(tmp_path / "bn.prototxt"), str(zoo_weights(tmp_path / "w.caffemodel", "batchnorm")),
                    caffe.TEST)
    net.blobs["data"].data[...] = zoo_inputs("batchnorm")["data"]
    for layer in net.layers:  # net.forward's steps, without its reading the tops back at the end
        net._forward_layer(layer, torch.device("meta"))
    assert net.blobs["scale"]._head == "device" and net.blobs["scale"]._device_tensor.device.type == "meta"
    assert net.blobs["scale"].shape == (2, 3, 9, 11)
    assert net.params["scale"][0]._head == "both"  # uploaded, unchanged
    net.params["scale"][0].data[...] = 2.0  # now the host copy is newer: the next forward uploads it
    assert net.params["scale"][0]._head == "host"


def test_exception_without_torch_the_engine_names_its_extra():
    """deploy() and the text reader need no torch (nor read_caffemodel, NumPy alone: test_caffe_files);
    Net says which extra to install."""
    import subprocess
    import sys

    from tests.inputs import module_env

    script = ("import sys\nsys.modules['torch'] = None  # as if torch were not installed\n"
              "from impls import caffe, port\nassert caffe.deploy(sys.argv[1]).startswith('layer')\n"
              "assert port.read_prototxt(sys.argv[1]).messages('layer')\n"
              "try:\n    caffe.Net\nexcept ImportError as error:\n    print(error)\n")
    result = subprocess.run([sys.executable, "-c", script, str(prototxt("voc-fcn8s", "val"))], capture_output=True,
                            text=True, timeout=120, env=module_env())
    assert result.returncode == 0, result.stderr
    assert "impls.caffe.Net runs Caffe nets on PyTorch, which is not installed: pip install 'impls[torch]'" in \
        result.stdout


def test_feature_gpu_mode_equals_the_cpu(tmp_path):
    """set_mode_gpu runs the same net on torch's CUDA device (skipped where there is none: the meta
    test above checks the host/device bookkeeping without one)."""
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    (tmp_path / "bn.prototxt").write_text(ZOO["batchnorm"].prototxt)
    net = caffe.Net(str(tmp_path / "bn.prototxt"), str(zoo_weights(tmp_path / "w.caffemodel", "batchnorm")),
                    caffe.TEST)
    x = zoo_inputs("batchnorm")["data"]
    cpu = net.forward(data=x)["scale"].copy()
    caffe.set_mode_gpu()
    try:
        gpu = net.forward(data=x)["scale"]
        assert net.blobs["scale"]._device_tensor is not None  # it ran there
    finally:
        caffe.set_mode_cpu()
    np.testing.assert_allclose(gpu, cpu, rtol=1e-5, atol=1e-5)
