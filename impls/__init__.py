"""Segmentation parity and dense-CRF benchmark harness.

Backends share public names: `impls.numpy` (reference, (N, H, W, C)), `impls.torch`
((N, C, H, W)) and `impls.tf` ((N, H, W, C)). Import the backend you need; importing
`impls` alone loads no framework.
"""

# The one table of backends (name, layout, framework, devices), in impls/_backends.py: the
# test grid (conftest.py), impls.testing and the benchmarks (bench/variants.py) read it.
from impls._backends import BACKEND_INFO, BACKENDS, BackendInfo, backend_info  # noqa: F401 (re-exported)

__version__ = "0.1.0"
