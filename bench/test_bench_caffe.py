"""The authors' FCN-8s from its Caffe files (voc-fcn8s/deploy.prototxt and the seeded weights of
tests/caffe_files.py in the layout of fcn8s-heavy-pascal.caffemodel) at 500x500, as infer.py runs
it: impls.caffe.Net, OpenCV's dnn on the same files (the other way to run Caffe models without
Caffe; skipped with the reason where OpenCV is not installed), and the file loaded into
impls.torch.FCN and impls.tf.FCN, in one run, on the same threads; and Net on CUDA
(set_mode_gpu) where torch sees a GPU.

Every arm is checked first: its scores against OpenCV's (or Net's where OpenCV is absent) within
1e-4 of the largest score, and >= 99.9 % of the labels equal. Each arm then records, from one
extra call, where its time goes: Net per layer, OpenCV from its own getPerfProfile.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.caffe_files import prototxt, write_seeded

SIZE = 500
GROUP = f"caffe fcn8s {SIZE}x{SIZE}"
ARMS = ("impls.caffe", "opencv", "torch", "tf", "impls.caffe-cuda")
TOLERANCE = 1e-4
MIN_LABELS_EQUAL = 0.999


def _image():
    """A 500x500 crop of skimage's astronaut, as infer.py prepares an image (BGR, mean subtracted)."""
    from skimage import data

    from impls.examples.fcn_infer import preprocess

    return preprocess(data.astronaut()[:SIZE, :SIZE])


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_seeded(tmp_path_factory.mktemp("fcn8s") / "fcn8s-heavy-pascal.caffemodel", "voc-fcn8s")


def _threads():
    import torch

    return torch.get_num_threads()


def _arm(name, weights, image):
    """(run: () -> (1, 21, H, W) scores, breakdown: () -> {stage: seconds})."""
    if name.startswith("impls.caffe"):
        import torch

        from impls import caffe

        cuda = name.endswith("cuda")
        if cuda and not torch.cuda.is_available():
            pytest.skip("impls.caffe-cuda: torch sees no CUDA device")
        net = caffe.Net(str(prototxt("voc-fcn8s")), str(weights), caffe.TEST)
        net.blobs["data"].reshape(*image.shape)

        def run():
            if cuda:
                caffe.set_mode_gpu()
            try:
                net.blobs["data"].data[...] = image
                net.forward()  # its outputs come back to the host: synchronised
                return net.blobs["score"].data
            finally:
                caffe.set_mode_cpu()

        return run, (dict if cuda else lambda: _net_layers(net, image))
    if name == "opencv":
        cv2 = pytest.importorskip("cv2", reason="OpenCV (opencv-python-headless<5) is not installed")
        cv2.setNumThreads(_threads())
        net = cv2.dnn.readNetFromCaffe(str(prototxt("voc-fcn8s")), str(weights))

        def run():
            net.setInput(image)
            return net.forward("score")

        return run, lambda: _opencv_layers(cv2, net, run)
    from impls import port

    if name == "torch":
        import torch

        import impls.torch

        model = impls.torch.FCN("8s").eval()
        port.load_caffemodel(model, weights)
        x = torch.from_numpy(image)

        def run():
            with torch.no_grad():
                return model(x).numpy()

        return run, dict
    pytest.importorskip("tensorflow")
    import impls.tf

    model = impls.tf.FCN("8s")
    model(np.zeros((1, 8, 8, 3), np.float32))
    port.load_caffemodel(model, weights)
    nhwc = np.ascontiguousarray(image.transpose(0, 2, 3, 1))
    return (lambda: model(nhwc).numpy().transpose(0, 3, 1, 2)), dict


def _net_layers(net, image):
    import torch

    net.blobs["data"].data[...] = image
    times = {}
    for layer in net.layers:
        start = time.perf_counter()
        net._forward_layer(layer, torch.device("cpu"))
        times[layer.name] = time.perf_counter() - start
    return times


def _opencv_layers(cv2, net, run):
    run()
    _, per_layer = net.getPerfProfile()
    return {name: float(ticks) / cv2.getTickFrequency() for name, ticks in zip(net.getLayerNames(), per_layer.ravel(),
                                                                               strict=True)}


@pytest.fixture(scope="module")
def reference(weights):
    """The scores every arm is checked against: OpenCV's, or Net's where OpenCV is absent."""
    image = _image()
    try:
        run, _ = _arm("opencv", weights, image)
        return "opencv", run().copy()
    except pytest.skip.Exception:
        run, _ = _arm("impls.caffe", weights, image)
        return "impls.caffe", run().copy()


@pytest.mark.parametrize("arm", ARMS)
def test_caffe_fcn8s(benchmark, arm, weights, reference):
    image = _image()
    run, breakdown = _arm(arm, weights, image)
    against, expected = reference
    scores = run()
    error = float(np.abs(scores - expected).max() / np.abs(expected).max())
    equal = float((scores[0].argmax(0) == expected[0].argmax(0)).mean())
    assert error <= TOLERANCE and equal >= MIN_LABELS_EQUAL, f"{arm} vs {against}: {error:.3g}, labels {equal:.4f}"
    benchmark.group = GROUP
    benchmark.extra_info.update(op="caffe_fcn", backend=arm, device="cuda" if arm.endswith("cuda") else "cpu",
                                case=f"{SIZE}x{SIZE}",
                                threads=_threads(), checked_against=against, max_error=error, labels_equal=equal,
                                stage_s=breakdown())
    benchmark.pedantic(run, rounds=5, warmup_rounds=1, iterations=1)
