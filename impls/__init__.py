"""Segmentation parity and dense-CRF benchmark harness.

Backends share public names: `impls.numpy` (reference, (N, H, W, C)), `impls.torch`
((N, C, H, W)) and `impls.tf` ((N, H, W, C)). Import the backend you need; importing
`impls` alone loads no framework.
"""

# The one table of backends: name -> (layout, the framework it imports). impls.testing, the
# test grid (conftest.py) and the benchmarks (bench/variants.py) read it.
BACKEND_INFO = {
    "numpy": {"layout": "NHWC", "framework": "numpy"},
    "torch": {"layout": "NCHW", "framework": "torch"},
    "tf": {"layout": "NHWC", "framework": "tensorflow"},
}
BACKENDS = tuple(BACKEND_INFO)

__version__ = "0.1.0"
