"""The grid every test and benchmark runs on: backend x device x dtype.

Options:
    --backend numpy,torch,tf | all   which backends to run (default all)
    --device cpu | cuda | all        where torch/TF run (default cpu); asking for
                                     cuda on a machine without a GPU is an error,
                                     'all' skips the CUDA points with a reason
    --dtype float32,float64 | all    floating dtypes (default all)
"""

from __future__ import annotations

import os
import zlib

# Must precede the first import of TensorFlow anywhere in the session.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _share_cores_between_xdist_workers():
    """Each framework starts a pool of one thread per core in every pytest-xdist worker; on two
    cores the oversubscribed pools (spinning OpenMP threads, TF's eager op dispatch waiting on
    descheduled threads) made the slow tests three times slower (400 s against 136 s) and one
    Keras training test ten (211 s against 19 s alone). Values the caller set win."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        per_worker = str(max(1, len(os.sched_getaffinity(0)) // workers))
        for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
            os.environ.setdefault(name, per_worker)


_share_cores_between_xdist_workers()

import importlib  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# The checkout's tests/, bench/ and reference/ packages (tests.inputs, bench.variants, bench.report,
# reference.generate) become importable; appended, so that `impls` stays the installed package with
# its compiled extension (pytest runs with --import-mode=importlib and puts nothing on sys.path).
_CHECKOUT = pathlib.Path(__file__).resolve().parent
CHECKOUT_PACKAGES = ("tests", "bench", "reference")
if str(_CHECKOUT) not in sys.path:
    sys.path.append(str(_CHECKOUT))

from impls import BACKEND_INFO, BACKENDS  # noqa: E402
from impls.testing import Backend  # noqa: E402

DEVICES = ("cpu", "cuda")
DTYPES = ("float32", "float64")


def pytest_addoption(parser):
    group = parser.getgroup("impls grid")
    group.addoption("--backend", default="all", help="comma list of numpy,torch,tf or 'all' (default all)")
    group.addoption("--device", default="cpu", choices=("cpu", "cuda", "all"), help="device of torch/TF (default cpu)")
    group.addoption("--dtype", default="all", help="comma list of float32,float64 or 'all' (default all)")


def _selection(config, option, universe):
    value = config.getoption(option)
    chosen = universe if value == "all" else tuple(v.strip() for v in value.split(","))
    unknown = set(chosen) - set(universe)
    if unknown:
        raise pytest.UsageError(f"--{option}: unknown {sorted(unknown)}, expected a comma list of {universe} or 'all'")
    return chosen


def _devices(config):
    return DEVICES if config.getoption("device") == "all" else (config.getoption("device"),)


def _framework_available(name):
    framework = BACKEND_INFO[name].framework
    try:
        importlib.import_module(framework)
    except ImportError as error:
        return False, f"{framework} is not installed ({error})"
    return True, ""


def _cuda_available(name):
    if name == "torch":
        import torch

        return torch.cuda.is_available(), "torch.cuda.is_available() is False"
    if name == "tf":
        import tensorflow as tf

        reason = "TensorFlow sees no GPU (tensorflow-cpu build or no device)"
        return bool(tf.config.list_physical_devices("GPU")), reason
    return False, "NumPy runs on the CPU only"


def _check_checkout_packages():
    """tests/, bench/ and reference/ must be the checkout's: an installed distribution that ships a
    top-level package of the same name would otherwise shadow them (the checkout is appended)."""
    for name in CHECKOUT_PACKAGES:
        module = importlib.import_module(name)
        origin = pathlib.Path(module.__file__).resolve().parent
        if origin != _CHECKOUT / name:
            raise pytest.UsageError(f"`import {name}` finds {origin}, not this checkout's {_CHECKOUT / name}: an "
                                    f"installed package named {name!r} shadows it; uninstall it")


def pytest_configure(config):
    _check_checkout_packages()
    config.impls_backends = _selection(config, "backend", BACKENDS)
    config.impls_dtypes = _selection(config, "dtype", DTYPES)
    config.impls_devices = _devices(config)
    _disable_tf32(config.impls_backends)
    if config.getoption("device") == "cuda":
        _assert_gpu_is_real(config.impls_backends)


def _disable_tf32(backends):
    """Parity needs IEEE float32 matmuls and convolutions in both frameworks."""
    if "torch" in backends and _framework_available("torch")[0]:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    if "tf" in backends and _framework_available("tf")[0]:
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(False)


def _assert_gpu_is_real(backends):
    """--device cuda must not pass by skipping everything: the GPU has to exist and compute."""
    if "torch" not in backends or not _framework_available("torch")[0]:
        raise pytest.UsageError("--device cuda needs the torch backend to check the GPU (add --backend torch)")
    import torch

    if not torch.cuda.is_available():
        raise pytest.UsageError("--device cuda was asked for, but torch.cuda.is_available() is False on this machine")
    a = torch.arange(12.0).reshape(3, 4)
    on_gpu = (a.cuda() @ a.T.cuda()).cpu()
    if not torch.equal(on_gpu, a @ a.T):
        raise pytest.UsageError(f"--device cuda: {torch.cuda.get_device_name()} computed a wrong 3x4 matmul")


def pytest_report_header(config):
    lines = [f"impls grid: backends={','.join(config.impls_backends)} devices={','.join(config.impls_devices)} "
             f"dtypes={','.join(config.impls_dtypes)}; {platform.processor() or platform.machine()}"]
    if "cuda" in config.impls_devices and _framework_available("torch")[0]:
        import torch

        if torch.cuda.is_available():
            lines.append(f"GPU: {torch.cuda.get_device_name()} (torch {torch.__version__}, CUDA {torch.version.cuda})")
    return lines


def pytest_generate_tests(metafunc):
    config = metafunc.config
    if "backend" in metafunc.fixturenames:
        points = [Backend(name, device) for name in config.impls_backends for device in config.impls_devices
                  if device in BACKEND_INFO[name].devices]
        metafunc.parametrize("backend", points, ids=str, indirect=True)
    if "layer_backend" in metafunc.fixturenames:  # the frameworks with trainable layers
        points = [Backend(name, device) for name in config.impls_backends if name != "numpy"
                  for device in config.impls_devices if device in BACKEND_INFO[name].devices]
        metafunc.parametrize("layer_backend", points, ids=str, indirect=True)
    if "dtype" in metafunc.fixturenames:
        metafunc.parametrize("dtype", [np.dtype(d) for d in config.impls_dtypes], ids=str)


@pytest.fixture
def backend(request):
    """A point of the backend x device grid; skips with the reason where it cannot run."""
    return _available_point(request.param)


def _available_point(point):
    available, reason = _framework_available(point.name)
    if not available:
        pytest.skip(f"backend {point.name}: {reason}")
    if point.device == "cuda":
        available, reason = _cuda_available(point.name)
        if not available:
            pytest.skip(f"{point}: {reason}")
    return point


@pytest.fixture
def layer_backend(request):
    """A torch or TF point of the grid (layers have no NumPy counterpart); skips where it cannot run."""
    return _available_point(request.param)


@pytest.fixture
def rng(request):
    """A NumPy generator seeded from the test's id: reproducible, different per test."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


# ---- The device-on-host target: count the tests that ran against it -------------------
# Objects built on it are counted by impls._native; a test that built one "ran against the
# device code". `tox -e device-on-host` requires a count (IMPLS_MIN_DEVICE_ON_HOST_TESTS), so
# that a build or a selection that silently routes around the device code fails CI.
def _device_objects():
    try:
        from impls import _native
    except ImportError:
        return None
    return _native.device_on_host_objects()


@pytest.fixture(autouse=True)
def _count_device_on_host(request):
    before = _device_objects()
    yield
    if before is not None and _device_objects() > before:
        request.node.user_properties.append(("device_on_host", True))


def pytest_runtest_logreport(report):
    # Properties added in a fixture's teardown reach the teardown report (through xdist too).
    if report.when == "teardown" and ("device_on_host", True) in report.user_properties:
        config = _session_config[0]
        if config is not None:
            config.impls_device_on_host_tests = getattr(config, "impls_device_on_host_tests", 0) + 1


_session_config = [None]


def pytest_sessionstart(session):
    _session_config[0] = session.config


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    count = getattr(config, "impls_device_on_host_tests", 0)
    required = int(os.environ.get("IMPLS_MIN_DEVICE_ON_HOST_TESTS", "0"))
    if count or required:
        terminalreporter.write_line(f"impls: {count} tests ran on the device-on-host target (CUDA code on host threads)"
                                    + (f" (at least {required} required)" if required else ""))


def pytest_sessionfinish(session, exitstatus):
    required = int(os.environ.get("IMPLS_MIN_DEVICE_ON_HOST_TESTS", "0"))
    if required and exitstatus == 0 and getattr(session.config, "impls_device_on_host_tests", 0) < required:
        session.exitstatus = 1
