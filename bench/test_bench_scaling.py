"""How the native dense CRF scales with pixels (160x120 to 1920x1080) and labels (2 to 60):
5 iterations, pydensecrf's parameters, a real image tiled to size. Time should grow
linearly in pixels and in labels (padded to multiples of 8)."""

import numpy as np
import pytest

from impls import native
from impls.testing import crf_image

SIZES = [(120, 160), (240, 320), (375, 500), (720, 1280), (1080, 1920)]
LABELS = [2, 21, 60]


@pytest.mark.parametrize("labels", LABELS)
@pytest.mark.parametrize("height, width", SIZES, ids=[f"{w}x{h}" for h, w in SIZES])
def test_native_dense_crf_scaling(benchmark, height, width, labels):
    if not native.available():
        pytest.skip("impls._native is not built")
    import impls.numpy

    image = np.resize(crf_image("astronaut"), (height, width, 3)).astype(np.uint8)
    unary = (np.random.default_rng(0).random((height, width, labels), dtype=np.float32) * 4)[None]

    def run():
        return impls.numpy.dense_crf(unary, image[None], iterations=5, engine="native")

    q = run()
    assert np.isfinite(q).all() and np.allclose(q.sum(-1), 1, atol=1e-5)
    benchmark.group = f"native dense_crf scaling, {labels} labels"
    benchmark.extra_info.update(op="dense_crf scaling", case=f"{width}x{height}", backend="native", device="cpu",
                                pixels=height * width, labels=labels, iterations=5)
    benchmark.pedantic(run, rounds=3, warmup_rounds=1, iterations=1)
