"""Segmentation parity and dense-CRF benchmark harness.

Backends share public names: `impls.numpy` (the oracle, (N, H, W, C)), `impls.torch`
((N, C, H, W)) and `impls.tf` ((N, H, W, C)). Import the backend you need; importing
`impls` alone loads no framework (it loads the compiled engine, impls._native, and with it
OpenMP's library: see _bound_openmp_spinning).
"""

import os as _os
import sys as _sys

# The one table of backends (name, layout, framework, devices), in impls/_backends.py: the
# test grid (conftest.py), impls.testing and the benchmarks (bench/variants.py) read it.
from impls._backends import BACKEND_INFO, BACKENDS, BackendInfo, backend_info  # noqa: F401 (re-exported)


def _bound_openmp_spinning() -> None:
    """OpenMP's threads (libgomp: the engine's, and torch's, which shares the library once it
    is loaded) wait for work by spinning up to GOMP_SPINCOUNT, 300,000 pauses by default, after
    every parallel region; on a machine whose cores other processes want, that spinning is what
    made two threads slower than one (bench/README.md). libgomp reads the setting once, when it
    loads: so if no OpenMP library is loaded yet and the user set neither OMP_WAIT_POLICY nor
    GOMP_SPINCOUNT, load it now with a tenth of the default spin, and take the variable out of
    the environment again (child processes see the user's)."""
    if "torch" in _sys.modules or "OMP_WAIT_POLICY" in _os.environ or "GOMP_SPINCOUNT" in _os.environ:
        return
    _os.environ["GOMP_SPINCOUNT"] = OPENMP_SPIN_COUNT
    try:
        from impls import native  # noqa: F401 (loads impls._native, and with it libgomp)
    finally:
        del _os.environ["GOMP_SPINCOUNT"]


# Measured with a torch CrfRnn forward at 120x160 on two threads of two cores (bench/README.md):
# quiet 64 ms with the default spin, 67 with this; beside two busy processes 271-1013 ms against
# 156 (one thread: 150).
OPENMP_SPIN_COUNT = "30000"
_bound_openmp_spinning()


__version__ = "0.1.0"
