"""Thin wrapper over the compiled extension `impls._native`: the permutohedral lattice and
the dense-CRF mean field in C++ (OpenMP on the CPU) and CUDA.

On the CPU, inputs may be NumPy arrays or CPU torch/TF tensors (read without copies
where they are already contiguous float32) and results are NumPy arrays. CUDA torch
tensors go to the CUDA lattice when the build has it and a GPU is visible (results are
CUDA torch tensors on the same device); otherwise they raise a ValueError that says why.
"""

from __future__ import annotations

import contextlib

import numpy as np

from impls import _checks

try:
    from impls import _native
except ImportError as error:  # a source checkout that was never built
    _native = None
    _import_error = error
else:
    _import_error = None

__all__ = ["available", "has_cuda", "built_with_cuda", "bilinear_kernel", "Lattice", "DenseCrf", "threads",
           "instruction_set", "instruction_sets", "profile"]

NORMALIZATION_CODES = {"none": 0, "before": 1, "after": 2, "symmetric": 3}


def available() -> bool:
    """True when the compiled extension imports."""
    return _native is not None


def _module():
    if _native is None:
        raise ImportError(
            "impls._native is not built: install the package (pip install .) so that "
            "scikit-build-core compiles native/"
        ) from _import_error
    return _native


def built_with_cuda() -> bool:
    """True when the extension was compiled with its CUDA sources."""
    return available() and _native.built_with_cuda()


def has_cuda() -> bool:
    """True when the extension has CUDA code and a CUDA device is visible: tests skip on False."""
    return built_with_cuda() and _native.cuda_device_count() > 0


@contextlib.contextmanager
def threads(count):
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


def bilinear_kernel(factor):
    """`impls.numpy.bilinear_kernel` computed in C++ (float64, (k, k))."""
    factor = _checks.positive_int(factor, op="bilinear_kernel", name="factor")
    return _module().bilinear_kernel(factor)


def host_array(value, *, op, name):
    """`value` as a NumPy array on the host: NumPy as is, CPU torch/TF tensors without a copy;
    device tensors are refused with a message saying why."""
    device = str(getattr(value, "device", "cpu"))
    if "cuda" in device.lower() or "gpu" in device.lower():
        raise ValueError(
            f"{op}: argument '{name}' is on {device}, but the native CUDA lattice is not available "
            f"(built_with_cuda()={built_with_cuda()}, has_cuda()={has_cuda()}); move it to the CPU "
            f"or use the framework backend"
        )
    if hasattr(value, "detach"):
        return value.detach().numpy()
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        return value.numpy()
    return np.asarray(value)


def _on_cuda(value):
    device = getattr(value, "device", None)
    return getattr(device, "type", None) == "cuda"


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


def _float_matrix(value, *, op, name, dtypes=("float32",), columns=None):
    """A 2-D host array of one of `dtypes`, strides kept (the C++ side reads any layout and
    checks finiteness itself, in the same pass as its copy)."""
    array = host_array(value, op=op, name=name)
    if array.ndim != 2:
        raise ValueError(f"{op}: argument '{name}' must be 2-D, got shape {array.shape}")
    if array.dtype.name not in dtypes:
        raise TypeError(f"{op}: argument '{name}' must have dtype {' or '.join(dtypes)}, got {array.dtype.name}")
    if array.shape[0] == 0 or (columns is None and array.shape[1] == 0):
        raise ValueError(f"{op}: argument '{name}' must not be empty, got shape {array.shape}")
    if columns is not None and array.shape[1] != columns:
        raise ValueError(f"{op}: argument '{name}' must have {columns} columns, got {array.shape[1]}")
    return array


class Lattice:
    """The permutohedral lattice of (P, d) features, built once in C++ and reused for any
    number of filters: the native counterpart of `impls.numpy.PermutohedralLattice`, equal
    to it to float32 rounding. The lattice is built in float32 (as pydensecrf's); values
    may be float32 or float64 and are filtered in their own precision."""

    def __init__(self, features):
        self.cuda = _on_cuda(features)
        if self.cuda:
            import torch

            features = _cuda_matrix(features, op="Lattice", name="features", dtype=torch.float32)
            self.device = features.device
        else:
            features = _float_matrix(features, op="Lattice", name="features", dtypes=("float32", "float64"))
        if features.shape[1] > 63:
            raise ValueError(f"Lattice: argument 'features' must have at most 63 dimensions, got {features.shape[1]}")
        if self.cuda:
            self._lattice = _module().LatticeCUDA(features)
        else:
            self._lattice = _module().LatticeCPU(features.astype(np.float32, copy=False))

    @property
    def num_points(self):
        return self._lattice.num_points

    @property
    def dim(self):
        return self._lattice.dim

    @property
    def num_vertices(self):
        return self._lattice.num_vertices

    @property
    def weights(self):
        """(P, d+1) barycentric weights of each point's simplex vertices."""
        return self._lattice.weights

    def filter(self, values, *, reverse=False):
        """(P, C) values splatted, blurred and sliced; `reverse` applies the transposed filter.
        A CUDA lattice takes and returns CUDA torch tensors on its device."""
        if self.cuda:
            return self._filter_cuda(values, reverse)
        values = host_array(values, op="Lattice.filter", name="values")
        if values.ndim != 2 or values.shape[0] != self.num_points:
            raise ValueError(f"Lattice.filter: argument 'values' must have shape ({self.num_points}, C), "
                             f"got {values.shape}")
        if values.dtype.name not in ("float32", "float64"):
            raise TypeError(f"Lattice.filter: argument 'values' must be float32 or float64, got {values.dtype.name}")
        return self._lattice.filter(np.ascontiguousarray(values), bool(reverse))

    def _filter_cuda(self, values, reverse):
        import torch

        if not _on_cuda(values) or values.device != self.device:
            raise ValueError(f"Lattice.filter: argument 'values' must be a CUDA tensor on {self.device}, "
                             f"got one on {getattr(values, 'device', 'the host')}")
        if values.ndim != 2 or values.shape[0] != self.num_points:
            raise ValueError(f"Lattice.filter: argument 'values' must have shape ({self.num_points}, C), "
                             f"got {tuple(values.shape)}")
        if values.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"Lattice.filter: argument 'values' must be float32 or float64, got {values.dtype}")
        values = values.detach().contiguous()
        out = torch.empty_like(values)
        self._lattice.filter_into(values, out, bool(reverse))
        return out


class DenseCrf:
    """Mean-field inference of the dense CRF over (P, L) float32 unaries, the whole loop in
    C++: one lattice per kernel, built once; no Python per iteration."""

    def __init__(self, unary):
        self.cuda = _on_cuda(unary)
        if self.cuda:
            import torch

            unary = _cuda_matrix(unary, op="DenseCrf", name="unary", dtype=torch.float32)
            self.device = unary.device
        else:
            unary = _float_matrix(unary, op="DenseCrf", name="unary")
        if unary.shape[1] < 2:
            raise ValueError(f"DenseCrf: argument 'unary' must have at least 2 labels, got {unary.shape[1]}")
        self.num_points, self.num_labels = unary.shape
        self._crf = (_module().DenseCrfCUDA if self.cuda else _module().DenseCrfCPU)(unary)

    def add_kernel(self, features, compat, normalization="symmetric"):
        """Add a Gaussian kernel on (P, d) features with a pydensecrf compatibility (number:
        Potts, (L,): diagonal, (L, L): matrix, symmetrised here) and normalisation."""
        if self.cuda:
            import torch

            features = _cuda_matrix(features, op="DenseCrf.add_kernel", name="features", dtype=torch.float32)
        else:
            features = _float_matrix(features, op="DenseCrf.add_kernel", name="features",
                                     dtypes=("float32", "float64")).astype(np.float32, copy=False)
        if features.shape[0] != self.num_points:
            raise ValueError(f"DenseCrf.add_kernel: argument 'features' must have {self.num_points} rows, "
                             f"got {features.shape[0]}")
        compat = np.asarray(compat, np.float64)
        kinds = {(): 0, (self.num_labels,): 1, (self.num_labels, self.num_labels): 2}
        if compat.shape not in kinds:
            raise ValueError(f"DenseCrf.add_kernel: argument 'compat' must be a number, ({self.num_labels},) or "
                             f"({self.num_labels}, {self.num_labels}), got shape {compat.shape}")
        if compat.ndim == 2:
            compat = 0.5 * (compat + compat.T)
        if normalization not in NORMALIZATION_CODES:
            raise ValueError(f"DenseCrf.add_kernel: argument 'normalization' must be one of "
                             f"{tuple(NORMALIZATION_CODES)}, got {normalization!r}")
        self._crf.add_kernel(features, kinds[compat.shape], np.ascontiguousarray(compat.ravel(), np.float32),
                             NORMALIZATION_CODES[normalization])

    def set_unary(self, unary):
        """Replace the (P, L) float32 unary (any strides, e.g. the transpose of pydensecrf's
        (L, P)); the kernels and their lattices stay. A CPU object only."""
        if self.cuda:
            raise NotImplementedError("DenseCrf.set_unary: not available for a CUDA unary; make a new DenseCrf")
        unary = _float_matrix(unary, op="DenseCrf.set_unary", name="unary")
        if unary.shape != (self.num_points, self.num_labels):
            raise ValueError(f"DenseCrf.set_unary: argument 'unary' must have shape "
                             f"({self.num_points}, {self.num_labels}), got {unary.shape}")
        self._crf.set_unary(unary)

    def inference(self, iterations, *, out=None):
        """(P, L) marginals after `iterations` (>= 0) mean-field updates from softmax(-unary):
        a NumPy array, or a CUDA torch tensor for a CUDA unary. `out`, a writable (P, L)
        float32 NumPy array of any strides (the transpose of an (L, P) one, say), receives
        them instead of a new array and is returned."""
        if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 0:
            raise ValueError(f"DenseCrf.inference: argument 'iterations' must be a non-negative integer, "
                             f"got {iterations!r}")
        if self.cuda:
            import torch

            q = torch.empty(self.num_points, self.num_labels, dtype=torch.float32, device=self.device)
            self._crf.inference_into(int(iterations), q)
            return q
        if out is None:
            return self._crf.inference(int(iterations))
        if not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != (self.num_points,
                                                                                       self.num_labels):
            raise ValueError(f"DenseCrf.inference: argument 'out' must be a float32 NumPy array of shape "
                             f"({self.num_points}, {self.num_labels}), got "
                             f"{getattr(out, 'dtype', type(out).__name__)} {getattr(out, 'shape', '')}")
        if not out.flags.writeable:
            raise ValueError("DenseCrf.inference: argument 'out' must be writeable")
        self._crf.inference_into(int(iterations), out)
        return out

    def inference_transposed(self, iterations):
        """`inference` in pydensecrf's (L, P) layout, written directly (CPU objects)."""
        if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 0:
            raise ValueError(f"DenseCrf.inference_transposed: argument 'iterations' must be a non-negative integer, "
                             f"got {iterations!r}")
        if self.cuda:
            return self.inference(iterations).T.contiguous()
        return self._crf.inference_transposed(int(iterations))

    def unary(self):
        """A (P, L) copy of the unary (CPU objects)."""
        return self._crf.unary()

    def step(self, q):
        """One mean-field update of (P, L) float32 marginals `q`, in place (a CUDA tensor for a
        CUDA unary)."""
        if self.cuda:
            self._crf.step(q)
            return
        if not isinstance(q, np.ndarray) or q.dtype != np.float32 or q.shape != (self.num_points, self.num_labels) \
                or not q.flags.writeable:
            raise ValueError(f"DenseCrf.step: argument 'q' must be a writeable float32 NumPy array of shape "
                             f"({self.num_points}, {self.num_labels}) (any strides)")
        self._crf.step(q)
