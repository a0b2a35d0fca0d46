"""The conftest grid: a GPU run cannot pass by skipping, bad options are refused, the points come from
the one backend table, and the checkout's tests/bench/reference packages are the ones imported."""

import importlib
import pathlib
import subprocess
import sys

import pytest

from impls import BACKEND_INFO, BACKENDS

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _pytest(*arguments):
    # -P: the working directory is not put on sys.path, so that `impls` is the installed package, as
    # under the `pytest` command tox runs.
    command = [sys.executable, "-P", "-m", "pytest", "-p", "no:cacheprovider", "-q", *arguments, "tests/test_grid.py"]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_exception_device_cuda_without_a_gpu_is_a_usage_error():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    run = _pytest("--device", "cuda", "-k", "nothing")
    assert run.returncode == pytest.ExitCode.USAGE_ERROR
    assert "--device cuda was asked for, but torch.cuda.is_available() is False" in run.stderr


def test_exception_unknown_backend_is_a_usage_error():
    run = _pytest("--backend", "jax", "-k", "nothing")
    assert run.returncode == pytest.ExitCode.USAGE_ERROR
    assert "--backend: unknown ['jax']" in run.stderr


def test_cardinality_grid_points():
    """Every selected backend x device point is generated; NumPy only on the CPU."""
    run = _pytest("--backend", "numpy,torch", "--device", "all", "--dtype", "float64", "--collect-only",
                  "-k", "grid_probe")
    assert run.returncode == pytest.ExitCode.OK, run.stdout + run.stderr
    probes = sorted(line.split("::")[-1] for line in run.stdout.splitlines() if "grid_probe" in line)
    assert probes == ["test_grid_probe[numpy-cpu-float64]", "test_grid_probe[torch-cpu-float64]",
                      "test_grid_probe[torch-cuda-float64]"]


def test_grid_probe(backend, dtype):
    assert backend.name in BACKENDS and dtype.kind == "f"
    assert backend.device in BACKEND_INFO[backend.name].devices


@pytest.mark.parametrize("name", ["tests", "tests.inputs", "bench", "bench.variants", "reference"])
def test_feature_checkout_packages_are_importable(name):
    """The root conftest puts the checkout behind the installed packages: tests.inputs, bench.* and
    reference.* import by name (no spec_from_file_location) and are the checkout's files."""
    module = importlib.import_module(name)
    assert pathlib.Path(module.__file__).resolve().is_relative_to(ROOT)
