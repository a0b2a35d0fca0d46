"""Which engine runs a backend's dense_crf: the choice, written once for every backend."""

from __future__ import annotations

from impls import _checks

# The engine is what computes a dense CRF or lattice filter: "native" (the compiled C++/CUDA
# code of impls._native) or "framework" (the backend's own operations; in impls.numpy, the
# oracle); "auto" picks one. dense_crf's `engine=`, impls.densecrf's and impls.sweep's take
# these values.
ENGINES = ("auto", "native", "framework")


def choose_engine(engine: str, *, native_usable: bool, why_not: str) -> str:
    """"native" or "framework" for dense_crf's `engine` argument: "auto" takes the native
    engine when it can serve these inputs (`native_usable`), "native" insists on it,
    "framework" avoids it."""
    _checks.one_of(engine, ENGINES, op="dense_crf", name="engine")
    if engine == "native" and not native_usable:
        raise ValueError(f"dense_crf: engine='native' cannot serve these inputs: {why_not}")
    if engine == "framework" or not native_usable:
        return "framework"
    return "native"
