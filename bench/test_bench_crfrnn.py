"""The CRF-as-RNN layer, forward and forward + backward, in torch and Keras (CPU, and torch on
CUDA when present), 21 classes, 5 iterations, one image at each size of the sweep; and the
whole network of crfasrnn_keras (CrfRnnNet: FCN-8s + CrfRnn, 10 iterations) on its 500x500 input.

Before timing, each layer's softmax output is checked against the NumPy dense CRF with the
equivalent Potts parameters (the layer's defining property), and the network's output against
the original crfasrnn_keras's on the same photograph and seeded weights (reference/), so a fast
wrong answer cannot reach the report.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.variants import Variant
from impls.testing import assert_close

CLASSES = 21
ITERATIONS = 5
SOURCE_IMAGE = "astronaut"


def _inputs(size):
    from tests.inputs import crf_image, smooth_unary

    return -smooth_unary(*size, CLASSES, seed=2), crf_image(SOURCE_IMAGE, size=size)


def _expected_q(logits, image):
    import impls.numpy

    # Default CrfRnn weights are Potts: spatial 3, bilateral 5, compatibility -I.
    return impls.numpy.dense_crf(-logits[None], image[None], gaussian_sxy=3, gaussian_compat=3, bilateral_sxy=160,
                                 bilateral_srgb=3, bilateral_compat=5, iterations=ITERATIONS,
                                 normalization="after", engine="framework")[0]


@pytest.mark.parametrize("pass_", ["forward", "forward+backward"])
def test_crfrnn(benchmark, budget, layer_backend, sweep_size, pass_):
    height, width = sweep_size
    work = height * width * CLASSES * ITERATIONS * (3 if pass_ != "forward" else 1)
    variant = Variant(layer_backend.name, layer_backend.device)
    budget.check(f"crfrnn {pass_}", variant, work)
    logits, image = _inputs(sweep_size)
    run = _runner(layer_backend, logits, image, backward=pass_ != "forward")
    out = run()
    q = np.exp(out - out.max(-1, keepdims=True))
    assert_close(q / q.sum(-1, keepdims=True), _expected_q(logits, image), rtol=0, atol=1e-4,
                 msg=f"{variant} CrfRnn vs dense_crf")
    benchmark.group = f"crfrnn {pass_} {width}x{height}, {CLASSES} classes, {ITERATIONS} iterations"
    benchmark.extra_info.update(op=f"crfrnn {pass_}", case=f"{width}x{height}", backend=layer_backend.name,
                                device=layer_backend.device, pixels=height * width, labels=CLASSES)
    benchmark.pedantic(run, rounds=3, warmup_rounds=1, iterations=1)
    budget.record(f"crfrnn {pass_}", variant, work, benchmark)


def _runner(backend, logits, image, *, backward):
    """A call of the layer (and its backward pass) returning the output logits as NHWC NumPy."""
    layer = backend.module.CrfRnn(CLASSES, iterations=ITERATIONS)
    logits_in, image_in = backend.from_nhwc(logits[None]), backend.from_nhwc(image[None])
    if backend.name == "torch":
        import torch

        layer = layer.to(backend.device)

        def run():
            x = logits_in.detach().requires_grad_(backward)
            out = layer(x, image_in)
            if backward:
                out.square().sum().backward()
            if backend.device == "cuda":
                torch.cuda.synchronize()
            return backend.to_nhwc(out)[0]

        return run
    import tensorflow as tf

    def run():
        with tf.GradientTape() as tape:
            tape.watch(logits_in)
            out = layer(logits_in, image_in)
            loss = tf.reduce_sum(tf.square(out))
        if backward:
            tape.gradient(loss, [logits_in, *layer.trainable_variables])
        return out.numpy()[0]

    return run


# crfasrnn_keras's network: its fixed input size and CRF iterations.
NET_SIZE = 500
NET_ITERATIONS = 10
# |our CRF logits - the original's|, float32 (measured on the CPU: torch 1.6e-5, Keras 3.7e-5, of
# logits up to 16); the margin is for GPU convolution algorithms.
NET_ATOL = 1e-3


@pytest.fixture(scope="module")
def crfasrnn_nets(tmp_path_factory):
    """`net(backend)`: crfasrnn_keras's network in that backend with the seeded weights of
    tests/keras2_h5.py, the file written and each backend's network loaded once per module."""
    pytest.importorskip("h5py")
    from impls import crfasrnn_keras
    from impls.port import load_keras2_h5
    from tests.keras2_h5 import write_crfasrnn_h5

    path = write_crfasrnn_h5(tmp_path_factory.mktemp("crfasrnn") / "crfrnn_keras_model.h5")
    nets = {}

    def net(backend):
        if backend not in nets:
            model = crfasrnn_keras.get_crfrnn_model_def(backend.name)
            load_keras2_h5(model, path, strict=True)
            nets[backend] = model.to(backend.device) if backend.name == "torch" else model
        return nets[backend]

    return net


def test_crfrnnnet(benchmark, budget, layer_backend, crfasrnn_nets, tmp_path):
    from PIL import Image
    from skimage import data

    from impls import crfasrnn_keras
    from reference import generate

    work = NET_SIZE * NET_SIZE * CLASSES * NET_ITERATIONS
    variant = Variant(layer_backend.name, layer_backend.device)
    budget.check("crfrnnnet forward", variant, work)
    Image.fromarray(data.coffee()).save(tmp_path / "coffee.png")  # the photograph the original ran on
    batch = crfasrnn_keras.get_preprocessed_image(tmp_path / "coffee.png")[0]
    net = crfasrnn_nets(layer_backend)

    def run():
        return crfasrnn_keras.predict(net, batch)[0]

    with np.load(generate.FOLDER / "crfasrnn_keras.npz", allow_pickle=False) as golden:
        expected = golden["crf_logits"]
    assert_close(run()[::5, ::5], expected, rtol=0, atol=NET_ATOL, msg=f"{variant} CrfRnnNet vs crfasrnn_keras")
    benchmark.group = f"crfrnnnet forward {NET_SIZE}x{NET_SIZE}, {CLASSES} classes, {NET_ITERATIONS} iterations"
    benchmark.extra_info.update(op="crfrnnnet forward", case=f"{NET_SIZE}x{NET_SIZE}", backend=layer_backend.name,
                                device=layer_backend.device, pixels=NET_SIZE * NET_SIZE, labels=CLASSES)
    benchmark.pedantic(run, rounds=3, warmup_rounds=1, iterations=1)
    budget.record("crfrnnnet forward", variant, work, benchmark)
