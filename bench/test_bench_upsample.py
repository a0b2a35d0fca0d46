"""FCN bilinear upsampling across backends, on the shapes FCN produces for a 500x375 image.

Each case checks the backend's result against the NumPy oracle before it is timed,
so a fast wrong answer cannot reach the report.
"""

import numpy as np
import pytest

from impls.numpy import upsample_bilinear as oracle_upsample
from impls.testing import assert_close

# (name, score-map shape NHWC, factor): FCN-32s and FCN-8s final upsamplers on
# a 500x375 PASCAL image with 21 classes, and FCN-16s's 2x step.
CASES = [
    ("fcn32s-final", (1, 16, 12, 21), 32),
    ("fcn8s-final", (1, 63, 47, 21), 8),
    ("fcn16s-2x", (1, 16, 12, 21), 2),
]


def _synchronize(backend):
    if backend.name == "torch" and backend.device == "cuda":
        import torch

        return torch.cuda.synchronize
    return lambda: None


@pytest.mark.parametrize("case, shape, factor", CASES, ids=[c[0] for c in CASES])
def test_upsample_bilinear(benchmark, backend, case, shape, factor):
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    native = backend.from_nhwc(x)
    upsample = backend.module.upsample_bilinear
    assert_close(backend.to_nhwc(upsample(native, factor)), oracle_upsample(x, factor))

    synchronize = _synchronize(backend)

    def run():
        out = upsample(native, factor)
        synchronize()
        return out

    benchmark.group = f"upsample_bilinear {case} {shape[1]}x{shape[2]}x{shape[3]} x{factor}"
    benchmark.extra_info.update(op="upsample_bilinear", case=case, backend=backend.name, device=backend.device,
                                pixels=shape[1] * shape[2] * factor * factor)
    benchmark.pedantic(run, rounds=20, warmup_rounds=3, iterations=1)
