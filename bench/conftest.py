"""Benchmark-only fixtures and hooks.

- Machine information (CPU, GPU, driver, library versions, native build) goes into the JSON.
- Which backends are present, and why the others are absent, goes into the JSON, and so
  does every skipped benchmark with its reason: the report lists both.
- `budget` skips a case whose predicted time per call exceeds `--bench-budget` seconds, so
  the default run stays short on a small machine; the prediction is calibrated on the
  cases already measured in this run.
"""

from __future__ import annotations

import functools
import importlib
import platform
import shutil
import subprocess
from collections import defaultdict

import pytest

from bench.variants import NATIVE1, PYDENSECRF, SIMPLECRF, Variant
from impls import BACKEND_INFO
from tests.inputs import library_versions

# The grid of the size sweeps: (height, width) from 160x120 to 1920x1080, and label counts.
SIZES = [(120, 160), (240, 320), (375, 500), (720, 1280), (1080, 1920)]
LABELS = [2, 21, 60]

# Prior cost of one call per unit of work (ns per pixel x effective label x iteration for the
# dense CRF; per pixel x channel for the filter alone), from the 2-core development VM. It only
# decides what the first case of a backend may cost; this run's own measurements replace it.
PRIOR_NS = {Variant("numpy"): 60, Variant("torch"): 60, Variant("tf"): 75, Variant("native"): 4, NATIVE1: 8,
            PYDENSECRF: 16, SIMPLECRF: 16, Variant("torch", "cuda"): 2, Variant("native", "cuda"): 1}

# SimpleCRF (PyPI `simplecrf`) is a peer dense CRF; its newest release does not build here.
SIMPLECRF_BUILD_FAILURE = ("its newest release on PyPI (SimpleCRF 0.2.1.1) does not build against NumPy 2: its C "
                           "sources use NPY_IN_ARRAY, which NumPy 2.0 removed")

DISTRIBUTIONS = ("numpy", "scipy", "scikit-image", "matplotlib", "torch", "tensorflow-cpu", "tensorflow", "keras",
                 "pydensecrf2", "nanobind", "impls")


def pytest_addoption(parser):
    parser.addoption("--bench-budget", type=float, default=3.0,
                     help="skip a case whose predicted seconds per call exceed this (default 3)")


def _gpu():
    if shutil.which("nvidia-smi") is None:
        return None
    query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    try:
        return subprocess.run(query, capture_output=True, text=True, timeout=20, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _importable(module: str) -> str | None:
    try:
        importlib.import_module(module)
    except ImportError as error:
        return f"{module} is not installed ({error})"
    return None


@functools.cache
def backend_availability() -> dict[Variant, str | None]:
    """{variant: None if present, else why it is absent} for every implementation the suite knows."""
    from impls import native

    absent = {Variant(name): _importable(info.framework) for name, info in BACKEND_INFO.items()}
    native_cpu = None if native.available() else "impls._native is not built (pip install .)"
    simplecrf = _importable("denseCRF")
    absent |= {PYDENSECRF: _importable("pydensecrf.densecrf"), Variant("native"): native_cpu, NATIVE1: native_cpu,
               SIMPLECRF: simplecrf and f"SimpleCRF is not installed: {SIMPLECRF_BUILD_FAILURE}"}
    torch_cuda = Variant("torch", "cuda")
    if absent[Variant("torch")]:
        absent[torch_cuda] = absent[Variant("torch")]
    else:
        import torch

        absent[torch_cuda] = None if torch.cuda.is_available() else "torch.cuda.is_available() is False"
    if not native.built_with_cuda():
        absent[Variant("native", "cuda")] = "impls._native was built without CUDA (no nvcc at configure time)"
    else:
        absent[Variant("native", "cuda")] = None if native.has_cuda() else "no CUDA device is visible"
    return absent


def pytest_configure(config):
    config.impls_cost_model = CostModel(config.getoption("bench_budget"))


_SKIPPED = []


def pytest_runtest_logreport(report):
    if report.skipped and report.when in ("setup", "call"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _SKIPPED.append({"test": report.nodeid, "reason": reason.removeprefix("Skipped: ")})


def pytest_generate_tests(metafunc):
    if "sweep_size" in metafunc.fixturenames:
        metafunc.parametrize("sweep_size", SIZES, ids=[f"{w}x{h}" for h, w in SIZES])
    if "sweep_labels" in metafunc.fixturenames:
        metafunc.parametrize("sweep_labels", LABELS, ids=[f"{n}labels" for n in LABELS])
    # Variants are the parameters; their ids ("native1-cpu") name the tests.
    if "crf_backend" in metafunc.fixturenames:
        metafunc.parametrize("crf_backend", crf_backends(metafunc.config), indirect=True, ids=str)
    if "filter_backend" in metafunc.fixturenames:
        metafunc.parametrize("filter_backend", lattice_backends(metafunc.config), indirect=True, ids=str)
    if "volume_backend" in metafunc.fixturenames:
        volume = [Variant("numpy"), Variant("native"), NATIVE1, PYDENSECRF]
        metafunc.parametrize("volume_backend", volume, indirect=True, ids=str)


def lattice_backends(config: pytest.Config) -> list[Variant]:
    """The permutohedral lattices of the grid (--backend, --device; TF's on the CPU only) plus native's."""
    devices = config.impls_devices
    variants = [Variant(name, device) for name in config.impls_backends for device in devices
                if device in BACKEND_INFO[name].devices and not (name == "tf" and device == "cuda")]
    return variants + [Variant("native", device) for device in devices]


def crf_backends(config: pytest.Config) -> list[Variant]:
    """The dense CRFs: the lattices, native on one thread (its speed per core), pydensecrf and SimpleCRF."""
    return lattice_backends(config) + [NATIVE1, PYDENSECRF, SIMPLECRF]


@pytest.fixture
def filter_backend(request) -> Variant:
    """A permutohedral-lattice implementation (numpy-cpu, native-cuda, ...); skips where it is absent."""
    reason = backend_availability().get(request.param)
    if reason:
        pytest.skip(f"{request.param}: {reason}")
    return request.param


@pytest.fixture
def crf_backend(request) -> Variant:
    """A dense-CRF implementation (numpy-cpu, native-cuda, ...); skips with the reason where it is absent."""
    reason = backend_availability().get(request.param)
    if reason:
        pytest.skip(f"{request.param}: {reason}")
    if request.param != PYDENSECRF and backend_availability()[PYDENSECRF]:
        pytest.skip("pydensecrf is absent, and every result is checked against it before it is timed")
    return request.param


volume_backend = crf_backend


def pytest_benchmark_update_machine_info(config, machine_info):
    from impls import native

    machine_info["impls"] = {
        "libraries": library_versions(DISTRIBUTIONS),
        "gpu": _gpu(),
        "native": {"built": native.available(), "cuda_build": native.built_with_cuda(),
                   "cuda_device": native.has_cuda()},
        "python": platform.python_version(),
    }


def pytest_benchmark_update_json(config, benchmarks, output_json):
    output_json["impls"] = {"absent_backends": {k.id: v for k, v in backend_availability().items() if v},
                            "skipped": _SKIPPED, "budget_s": config.getoption("bench_budget")}


class CostModel:
    """Predicts the seconds of one call as work x the highest cost per unit of work measured in this
    run for the same op and backend, over the cases at least 1/8 the size of the largest measured
    (small cases are dominated by fixed overheads); the prior cost per unit where nothing was
    measured yet. A call predicted to exceed the budget is skipped with the numbers."""

    def __init__(self, budget_s: float):
        if not budget_s > 0:
            raise pytest.UsageError(f"--bench-budget: expected a positive number of seconds, got {budget_s}")
        self.budget_s = budget_s
        self.measured: dict[tuple[str, Variant], dict[float, float]] = defaultdict(dict)  # work -> seconds

    def predict(self, op: str, backend: Variant, work: float) -> float:
        points = self.measured[(op, backend)]
        if not points:
            return PRIOR_NS.get(backend, PRIOR_NS[Variant("numpy")]) * work * 1e-9
        largest = max(points)
        return work * max(seconds / size for size, seconds in points.items() if size >= largest / 8)

    def check(self, op: str, backend: Variant, work: float) -> None:
        seconds = self.predict(op, backend, work)
        if seconds > self.budget_s:
            source = "extrapolated from this run" if self.measured[(op, backend)] else "prior estimate"
            pytest.skip(f"{backend}: one call predicted to take {seconds:.1f} s ({source}) "
                        f"> budget {self.budget_s:g} s (--bench-budget)")

    def record(self, op: str, backend: Variant, work: float, benchmark) -> None:
        if benchmark.stats is None:  # --benchmark-disable: the checks ran once, nothing was timed
            return
        self.measured[(op, backend)][float(work)] = benchmark.stats.stats.median


@pytest.fixture
def budget(request) -> CostModel:
    """The run's cost model: `budget.check(op, variant, work)` skips where one call would exceed the budget,
    `budget.record(op, variant, work, benchmark)` calibrates it after a measurement."""
    return request.config.impls_cost_model


def pytest_benchmark_compare_machine_info(config, benchmarksession, machine_info, compared_benchmark):
    """A baseline is only comparable on the machine that made it: refuse another CPU or core count."""
    def identity(info):
        return info.get("cpu", {}).get("brand_raw"), info.get("cpu", {}).get("count"), info.get("node")

    ours, theirs = identity(machine_info), identity(compared_benchmark["machine_info"])
    if ours != theirs:
        raise pytest.UsageError(f"--benchmark-compare: the baseline was measured on (CPU, cores, host) {theirs}, "
                                f"this machine is {ours}; save a baseline here first (tox -e bench-baseline)")
