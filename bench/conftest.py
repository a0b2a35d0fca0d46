"""Benchmark-only fixtures: machine information recorded into every JSON result."""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
import subprocess

DISTRIBUTIONS = ("numpy", "scipy", "scikit-image", "torch", "tensorflow-cpu", "tensorflow", "keras",
                 "pydensecrf2", "nanobind", "impls")


def _versions():
    versions = {}
    for name in DISTRIBUTIONS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _gpu():
    if shutil.which("nvidia-smi") is None:
        return None
    query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    try:
        return subprocess.run(query, capture_output=True, text=True, timeout=20, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def pytest_benchmark_update_machine_info(config, machine_info):
    from impls import native

    machine_info["impls"] = {
        "libraries": _versions(),
        "gpu": _gpu(),
        "native": {"built": native.available(), "cuda_build": native.built_with_cuda(),
                   "cuda_device": native.has_cuda()},
        "python": platform.python_version(),
    }
