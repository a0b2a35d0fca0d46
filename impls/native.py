"""Thin wrapper over the compiled extension `impls._native`: the permutohedral lattice and
the dense-CRF mean field in C++ (OpenMP on the CPU) and CUDA.

On the CPU, inputs may be NumPy arrays or CPU torch/TF tensors (read without copies
where they are already contiguous float32) and results are NumPy arrays. CUDA torch
tensors go to the CUDA lattice when the build has it and a GPU is visible (results are
CUDA torch tensors on the same device); otherwise they raise a ValueError that says why.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings

import numpy as np

from impls import _checks
from impls._meanfield import NORMALIZATIONS
from impls._types import Compat, Tensor

try:
    from impls import _native
except ImportError as error:  # a source checkout that was never built
    _native = None
    _import_error = error
else:
    _import_error = None

__all__ = ["available", "has_cuda", "built_with_cuda", "bilinear_kernel", "Lattice", "DenseCrf", "threads",
           "thread_count", "team_threads", "instruction_set", "instruction_sets", "profile", "host_target",
           "use_host_target", "HOST_TARGETS", "built_with_device_on_host",
           "host_engine", "use_host_engine"]  # the last two: deprecated aliases

# Where the native engine's code runs, its target: "cpu" (its CPU code), "cuda" (its CUDA code on
# a GPU, for CUDA tensors) or "device-on-host" (its CUDA code executed on host threads). Host
# arrays go to one of HOST_TARGETS; impls._native calls these two "cpu" and "device" when it is
# told where to send them (set_host_engine), and reports targets by the names used here.
HOST_TARGETS = ("cpu", "device-on-host")
_NATIVE_HOST_NAMES = {"cpu": "cpu", "device-on-host": "device"}  # target -> impls._native's name


def available() -> bool:
    """True when the compiled extension imports."""
    return _native is not None


def _module():
    if _native is None:
        raise ImportError(
            "impls._native is not built: install the package (pip install .) so that "
            "scikit-build-core compiles native/"
        ) from _import_error
    _share_threads_with_torch()
    return _native


_team_threads_forced = False  # team_threads() holds the choice


def _share_threads_with_torch() -> None:
    """Once torch is imported, the CPU engine's teams run on OpenMP's threads, which torch's own
    operations use (and leave spinning for a while after each): its own threads would compete
    with those for the cores (native/runtime/parallel.h)."""
    if not _team_threads_forced and "torch" in sys.modules and not _native.uses_openmp_threads():
        _native.use_openmp_threads(True)


@contextlib.contextmanager
def team_threads(provider: str):
    """Inside the block the CPU engine's teams run on "own" threads (the engine's pool, the
    default without torch) or "openmp" threads (the default once torch is imported), whatever
    is imported: for tests and measurements. Results do not depend on it."""
    global _team_threads_forced
    _checks.one_of(provider, ("own", "openmp"), op="team_threads", name="provider")
    module = _module()
    previous, previous_forced = module.uses_openmp_threads(), _team_threads_forced
    _team_threads_forced = True
    module.use_openmp_threads(provider == "openmp")
    try:
        yield
    finally:
        module.use_openmp_threads(previous)
        _team_threads_forced = previous_forced


def built_with_cuda() -> bool:
    """True when the extension was compiled with its CUDA sources."""
    return available() and _native.built_with_cuda()


def has_cuda() -> bool:
    """True when the extension has CUDA code and a CUDA device is visible: tests skip on False."""
    return built_with_cuda() and _native.cuda_device_count() > 0


@contextlib.contextmanager
def threads(count: int):
    """Run the native calls made from this Python thread on `count` OpenMP threads inside the
    block (results do not depend on it; only the time does)."""
    count = _checks.positive_int(count, op="threads", name="count")
    module = _module()
    previous = module.get_num_threads()
    module.set_num_threads(count)
    try:
        yield
    finally:
        module.set_num_threads(previous)


def thread_count() -> int:
    """The threads the native calls made from this Python thread run on: `threads(n)`'s inside
    its block, else OpenMP's default (OMP_NUM_THREADS, or the cores)."""
    return int(_module().get_num_threads())


def instruction_set() -> str:
    """The instruction set the CPU kernels run: the best this CPU supports among those built
    ("baseline", "x86-64-v3" (AVX2 + FMA), "x86-64-v4" (AVX-512)), or IMPLS_NATIVE_ISA's."""
    return _module().instruction_set()


def instruction_sets() -> dict[str, bool]:
    """{instruction set: supported by this CPU} for every one the CPU kernels were built for."""
    return dict(_module().instruction_sets())


@contextlib.contextmanager
def profile():
    """Time the CPU engine's phases inside the block: yields a dict that, on exit, holds
    {phase: (seconds, calls)} for the phases that ran (lattice build, kernel setup, the mean
    field's points pass, merge and blur, filters). Not meant to be nested or used from
    several threads at once."""
    module = _module()
    module.profile_reset()
    module.profile_enable(True)
    phases = {}
    try:
        yield phases
    finally:
        module.profile_enable(False)
        phases.update({name: value for name, value in module.profile_read().items() if value[1]})


def bilinear_kernel(factor: int) -> np.ndarray:
    """`impls.numpy.bilinear_kernel` computed in C++ (float64, (k, k))."""
    factor = _checks.positive_int(factor, op="bilinear_kernel", name="factor")
    return _module().bilinear_kernel(factor)


def host_array(value, *, op: str, name: str) -> np.ndarray:
    """`value` as a NumPy array on the host: NumPy as is, CPU torch/TF tensors without a copy;
    device tensors are refused with a message saying why."""
    device = str(getattr(value, "device", "cpu"))
    if "cuda" in device.lower() or "gpu" in device.lower():
        raise ValueError(
            f"{op}: argument '{name}' is on {device}, but the native CUDA lattice is not available "
            f"(built_with_cuda()={built_with_cuda()}, has_cuda()={has_cuda()}); move it to the CPU "
            f"or use the framework engine"
        )
    if hasattr(value, "detach"):
        return value.detach().numpy()
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        return value.numpy()
    return np.asarray(value)


def host_target() -> str:
    """The target host arrays go to: "cpu" (the native engine's CPU code), or "device-on-host"
    (its CUDA code executed on host threads, chosen by IMPLS_NATIVE_HOST_TARGET=device-on-host
    at import: how CI runs every line of the device code without a GPU)."""
    return _module().host_engine()


@contextlib.contextmanager
def use_host_target(target: str):
    """Inside the block, Lattice and DenseCrf objects built from host arrays run on `target`:
    "cpu" or "device-on-host" (the CUDA code on host threads, to check device code without a
    GPU). Objects keep the target they were built with. Process-wide: not for use
    while other threads build native objects."""
    _checks.one_of(target, HOST_TARGETS, op="use_host_target", name="target")
    module = _module()
    previous = module.host_engine()
    module.set_host_engine(_NATIVE_HOST_NAMES[target])
    try:
        yield
    finally:
        module.set_host_engine(_NATIVE_HOST_NAMES[previous])


def host_engine() -> str:
    """Deprecated: `host_target()`."""
    _deprecated("impls.native.host_engine()", "impls.native.host_target()")
    return host_target()


def use_host_engine(name: str):
    """Deprecated: `use_host_target`, with "device" now named "device-on-host"."""
    target = {"device": "device-on-host"}.get(name, name)
    _deprecated(f"impls.native.use_host_engine({name!r})", f"impls.native.use_host_target({target!r})")
    return use_host_target(target)


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated, use {new} instead", DeprecationWarning, stacklevel=3)


def _host_target_from_environment() -> None:
    """IMPLS_NATIVE_HOST_TARGET=cpu|device-on-host sends host arrays to that target from import
    on. The former IMPLS_NATIVE_HOST_ENGINE=cpu|device (read by impls._native itself when it
    loads) is still honoured, as a deprecated alias; the new name wins when both are set."""
    target = os.environ.get("IMPLS_NATIVE_HOST_TARGET")
    if not target:
        old = os.environ.get("IMPLS_NATIVE_HOST_ENGINE")
        target = {"device": "device-on-host"}.get(old, old) if old else None
        name = "IMPLS_NATIVE_HOST_ENGINE"
    else:
        name = "IMPLS_NATIVE_HOST_TARGET"
    if target is None:
        return
    if target not in HOST_TARGETS:
        raise ValueError(f"{name} must be one of {HOST_TARGETS}, got {target!r}")
    try:
        _native.set_host_engine(_NATIVE_HOST_NAMES[target])
    except ValueError as error:
        raise ValueError(f"{name}={os.environ[name]}: {error}") from None


if _native is not None:
    _host_target_from_environment()


def built_with_device_on_host() -> bool:
    """True when the CUDA code was also compiled for host execution (the "device-on-host" target)."""
    return available() and _native.built_with_device_on_host()


def _on_cuda(value):
    device = getattr(value, "device", None)
    return getattr(device, "type", None) == "cuda"


def _stream_of(value):
    """The caller's current CUDA stream for a CUDA tensor (work is enqueued there), else 0."""
    if not _on_cuda(value):
        return 0
    import torch

    return torch.cuda.current_stream(value.device).cuda_stream


def _cuda_matrix(value, *, op, name, dtype):
    """A contiguous CUDA torch tensor of `dtype`, checked like _float_matrix."""
    if not has_cuda():
        host_array(value, op=op, name=name)  # raises the "no CUDA lattice" error
    if value.ndim != 2 or value.shape[0] == 0:
        raise ValueError(f"{op}: argument '{name}' must be 2-D and not empty, got shape {tuple(value.shape)}")
    if not value.is_floating_point():
        raise TypeError(f"{op}: argument '{name}' must be floating point, got {value.dtype}")
    if not bool(value.isfinite().all()):
        raise ValueError(f"{op}: argument '{name}' must be finite (no NaN or inf)")
    return value.detach().to(dtype).contiguous()


def _float_matrix(value, *, op, name, dtypes=("float32",)):
    """A 2-D host array of one of `dtypes`, strides kept (the C++ side reads any layout and
    checks finiteness itself, in the same pass as its copy)."""
    array = host_array(value, op=op, name=name)
    if array.ndim != 2:
        raise ValueError(f"{op}: argument '{name}' must be 2-D, got shape {array.shape}")
    if array.dtype.name not in dtypes:
        raise TypeError(f"{op}: argument '{name}' must have dtype {' or '.join(dtypes)}, got {array.dtype.name}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{op}: argument '{name}' must not be empty, got shape {array.shape}")
    return array


def _matrix(value, *, op, name, dtypes=("float32",), cast=None):
    """`value` checked as a 2-D float matrix on its device: a CUDA torch tensor (contiguous,
    cast to `cast`), or a host array of one of `dtypes` (cast to `cast` when given)."""
    if _on_cuda(value):
        import torch

        return _cuda_matrix(value, op=op, name=name, dtype=getattr(torch, cast or dtypes[0]))
    array = _float_matrix(value, op=op, name=name, dtypes=dtypes)
    return array.astype(cast, copy=False) if cast else array


def _same_device(value, like, *, op, name):
    """A clear error when `value` is not on the device of `like` (the binding checks again)."""
    if _on_cuda(value) != _on_cuda(like) or (_on_cuda(value) and value.device != like.device):
        where = getattr(like, "device", "the host") if _on_cuda(like) else "the host"
        got = getattr(value, "device", "the host") if _on_cuda(value) else "the host"
        kind = "a CUDA tensor on" if _on_cuda(like) else "a host array on"
        raise ValueError(f"{op}: argument '{name}' must be {kind} {where}, got one on {got}")


def _empty(like, shape, dtype):
    """An uninitialised array of `shape` on the device of `like`: a torch tensor on a CUDA
    device, else a NumPy array."""
    if _on_cuda(like):
        import torch

        return torch.empty(shape, dtype=getattr(torch, dtype), device=like.device)
    # From the engine's block cache: large results do not pay fresh page faults every call.
    return getattr(_module(), f"empty_{dtype}")(*shape)


def _forwarded(wrapped: str, name: str, doc: str | None = None) -> property:
    """A read-only property returning attribute `name` of the compiled object `self.<wrapped>`."""
    return property(lambda self: getattr(getattr(self, wrapped), name), doc=doc)


_TARGET_DOC = 'Where this object\'s code runs: "cpu", "cuda" or "device-on-host" (see `host_target`).'


def _deprecated_engine_property() -> property:
    def engine(self):
        _deprecated(f"{type(self).__name__}.engine", f"{type(self).__name__}.target")
        return self.target

    return property(engine, doc="Deprecated: `target`.")


class Lattice:
    """The permutohedral lattice of (P, d) features, built once in C++ and reused for any
    number of filters: the native counterpart of `impls.numpy.PermutohedralLattice`, equal
    to it to float32 rounding. The lattice is built in float32 (as pydensecrf's); values
    may be float32 or float64 and are filtered in their own precision. Host features give a
    host lattice (NumPy results); CUDA torch features a lattice on their device (CUDA torch
    results, work on the current stream)."""

    def __init__(self, features: Tensor):
        features = _matrix(features, op="Lattice", name="features", dtypes=("float32", "float64"), cast="float32")
        if features.shape[1] > 63:
            raise ValueError(f"Lattice: argument 'features' must have at most 63 dimensions, got {features.shape[1]}")
        self._features_like = features[:0]
        self._lattice = _module().Lattice(features, _stream_of(features))

    target = _forwarded("_lattice", "engine", _TARGET_DOC)
    engine = _deprecated_engine_property()
    num_points = _forwarded("_lattice", "num_points")
    dim = _forwarded("_lattice", "dim")
    num_vertices = _forwarded("_lattice", "num_vertices")
    weights = _forwarded("_lattice", "weights",
                         "(P, d+1) barycentric weights of each point's simplex vertices (host lattices).")

    def filter(self, values: Tensor, *, reverse: bool = False) -> Tensor:
        """(P, C) values splatted, blurred and sliced; `reverse` applies the transposed filter.
        Values live on the lattice's device; so does the result."""
        op = "Lattice.filter"
        if not _on_cuda(values):
            values = host_array(values, op=op, name="values")
        _same_device(values, self._features_like, op=op, name="values")
        if values.ndim != 2 or values.shape[0] != self.num_points:
            raise ValueError(f"{op}: argument 'values' must have shape ({self.num_points}, C), "
                             f"got {tuple(values.shape)}")
        if _on_cuda(values):
            values = values.detach().contiguous()
            dtype = str(values.dtype).removeprefix("torch.")
        else:
            dtype = values.dtype.name
        if dtype not in ("float32", "float64"):
            raise TypeError(f"{op}: argument 'values' must be float32 or float64, got {dtype}")
        # One NaN would reach every point that shares a lattice vertex with it: refuse it here
        # (about 3% of a 500x375x21 filter) rather than return a silently poisoned result.
        if not bool(values.isfinite().all() if _on_cuda(values) else np.isfinite(values).all()):
            raise ValueError(f"{op}: argument 'values' must be finite (no NaN or inf)")
        out = _empty(values, tuple(values.shape), dtype)
        self._lattice.filter_into(values, out, bool(reverse), _stream_of(values))
        return out


def mean_field(unary: Tensor, kernels: list, params: _checks.CrfParameters) -> Tensor:
    """The whole mean field of one image in C++: a (P, L) float32 unary, its kernels
    [(features (P, d), compat)] (impls._meanfield.crf_features), and dense_crf's checked
    `params` (normalization, iterations). Q (P, L) on the unary's device."""
    crf = DenseCrf(unary)
    for features, compat in kernels:
        crf.add_kernel(features, compat, params.normalization)
    return crf.inference(params.iterations)


class DenseCrf:
    """Mean-field inference of the dense CRF over (P, L) float32 unaries, the whole loop in
    C++: one lattice per kernel, built once; no Python per iteration. A host unary gives a
    host CRF (NumPy arrays), a CUDA torch unary one on its device (every later array on it)."""

    def __init__(self, unary: Tensor):
        unary = _matrix(unary, op="DenseCrf", name="unary")
        if unary.shape[1] < 2:
            raise ValueError(f"DenseCrf: argument 'unary' must have at least 2 labels, got {unary.shape[1]}")
        self.num_points, self.num_labels = unary.shape
        self._like = unary[:0]
        self._crf = _module().DenseCrf(unary, _stream_of(unary))

    target = _forwarded("_crf", "engine", _TARGET_DOC)
    engine = _deprecated_engine_property()

    def add_kernel(self, features: Tensor, compat: Compat, normalization: str = "symmetric") -> None:
        """Add a Gaussian kernel on (P, d) features with a pydensecrf compatibility (number:
        Potts, (L,): diagonal, (L, L): matrix, symmetrised here) and normalisation."""
        _same_device(features, self._like, op="DenseCrf.add_kernel", name="features")
        features = _matrix(features, op="DenseCrf.add_kernel", name="features", dtypes=("float32", "float64"),
                           cast="float32")
        if features.shape[0] != self.num_points:
            raise ValueError(f"DenseCrf.add_kernel: argument 'features' must have {self.num_points} rows, "
                             f"got {features.shape[0]}")
        compat = _checks.compat(compat, self.num_labels, op="DenseCrf.add_kernel")
        normalization = _checks.normalization(normalization, op="DenseCrf.add_kernel")
        self._crf.add_kernel(features, compat.ndim, np.ascontiguousarray(compat.ravel(), np.float32),
                             NORMALIZATIONS[normalization], _stream_of(features))

    def set_unary(self, unary: Tensor) -> None:
        """Replace the (P, L) float32 unary (host: any strides, e.g. the transpose of
        pydensecrf's (L, P)); the kernels and their lattices stay."""
        _same_device(unary, self._like, op="DenseCrf.set_unary", name="unary")
        unary = _matrix(unary, op="DenseCrf.set_unary", name="unary")
        if tuple(unary.shape) != (self.num_points, self.num_labels):
            raise ValueError(f"DenseCrf.set_unary: argument 'unary' must have shape "
                             f"({self.num_points}, {self.num_labels}), got {tuple(unary.shape)}")
        self._crf.set_unary(unary, _stream_of(unary))

    def inference(self, iterations: int, *, out: Tensor | None = None) -> Tensor:
        """(P, L) marginals after `iterations` (>= 0) mean-field updates from softmax(-unary),
        on the CRF's device. `out`, a writable (P, L) float32 array there (host: any strides,
        e.g. the transpose of an (L, P) one), receives them instead of a new array and is
        returned."""
        iterations = _checks.non_negative_int(iterations, op="DenseCrf.inference", name="iterations")
        if out is None:
            out = _empty(self._like, (self.num_points, self.num_labels), "float32")
        self._check_marginals(out, "DenseCrf.inference", "out")
        self._crf.inference_into(iterations, out, _stream_of(out))
        return out

    def inference_transposed(self, iterations: int) -> np.ndarray:
        """`inference` in pydensecrf's (L, P) layout, written directly (host CRFs)."""
        iterations = _checks.non_negative_int(iterations, op="DenseCrf.inference_transposed", name="iterations")
        return self._crf.inference_transposed(iterations)

    def unary(self) -> np.ndarray:
        """A (P, L) copy of the unary (host CRFs)."""
        return self._crf.unary()

    def step(self, q: Tensor) -> None:
        """One mean-field update of (P, L) float32 marginals `q`, in place, on the CRF's device."""
        self._check_marginals(q, "DenseCrf.step", "q")
        self._crf.step(q, _stream_of(q))

    def _check_marginals(self, q, op, name):
        _same_device(q, self._like, op=op, name=name)
        shape = (self.num_points, self.num_labels)
        if _on_cuda(q):
            import torch

            ok = q.dtype == torch.float32 and tuple(q.shape) == shape and q.is_contiguous()
            what = "a contiguous float32 CUDA tensor"
        else:
            ok = isinstance(q, np.ndarray) and q.dtype == np.float32 and q.shape == shape and q.flags.writeable
            what = "a writeable float32 NumPy array (any strides)"
        if not ok:
            raise ValueError(f"{op}: argument '{name}' must be {what} of shape {shape}, got "
                             f"{getattr(q, 'dtype', type(q).__name__)} {tuple(getattr(q, 'shape', ()))}")
