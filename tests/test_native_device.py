"""The CUDA engine's code (native/lattice/device/): equal to the NumPy lattice and the CPU
engine, deterministic, differentiable, strict with memory. Every test runs on the
host-executed build of that code (here and in CI, no GPU needed) and, where a GPU is
visible, on CUDA too; no test here is skipped for lack of a GPU.

The whole native suite also runs on the device-on-host target in `tox -e device-on-host`
(IMPLS_NATIVE_HOST_TARGET=device-on-host): this file holds what is specific to the device code."""

import contextlib
import os
import pathlib
import subprocess
import sys
import threading

import numpy as np
import pytest

from impls import native
from impls.numpy import PermutohedralLattice
from impls.testing import assert_close
from tests.inputs import crf_image, smooth_unary

pytestmark = pytest.mark.skipif(not native.built_with_device_on_host(), reason=(
    "impls._native was built without the host execution of the CUDA engine (CCCL headers not found)"))

DEVICES = ["device-on-host"] + (["cuda"] if native.has_cuda() else [])


class Device:
    """Where the device engine runs: host arrays sent to the host-executed build, or CUDA
    torch tensors."""

    def __init__(self, name):
        self.name = name

    def put(self, array):
        if self.name == "cuda":
            import torch

            return torch.from_numpy(np.ascontiguousarray(array)).cuda()
        return array

    def get(self, value):
        return value.cpu().numpy() if hasattr(value, "cpu") else np.asarray(value)

    def target(self):
        """Objects built inside run the device engine's code."""
        return native.use_host_target("device-on-host") if self.name == "device-on-host" else contextlib.nullcontext()


@pytest.fixture(params=DEVICES)
def device(request):
    return Device(request.param)


def _points(rng, count, dim, channels=5, dtype=np.float32):
    return (rng.random((count, dim)) * 3).astype(np.float32), rng.random((count, channels)).astype(dtype)


@pytest.mark.parametrize("dim", [1, 2, 3, 5, 16])
def test_feature_device_filter_equals_numpy_lattice_and_cpu_engine(device, dim, rng):
    features, values = _points(rng, 3000, dim, channels=21)
    oracle, cpu = PermutohedralLattice(features), native.Lattice(features)
    with device.target():
        lattice = native.Lattice(device.put(features))
    assert lattice.target == ("cuda" if device.name == "cuda" else "device-on-host")
    assert lattice.num_vertices == cpu.num_vertices == oracle.num_vertices
    for reverse in (False, True):
        got = device.get(lattice.filter(device.put(values), reverse=reverse))
        assert_close(got, oracle.filter(values, reverse=reverse))
        assert_close(got, cpu.filter(values, reverse=reverse))


def test_feature_device_filter_in_float64_equals_the_cpu_engine(device, rng):
    features, values = _points(rng, 500, 3, channels=4, dtype=np.float64)
    with device.target():
        lattice = native.Lattice(device.put(features))
    got = device.get(lattice.filter(device.put(values)))
    assert got.dtype == np.float64
    assert_close(got, native.Lattice(features).filter(values))


def test_feature_device_mean_field_equals_cpu_engine_and_is_deterministic(device):
    torch = pytest.importorskip("torch")
    import impls.torch

    image = torch.from_numpy(crf_image("im2")).permute(2, 0, 1)[None]
    unary = torch.from_numpy(smooth_unary(image.shape[2], image.shape[3], 21, seed=6)).permute(2, 0, 1)[None]
    on_cpu = impls.torch.dense_crf(unary, image, iterations=10, engine="native")
    put = (lambda t: t.cuda()) if device.name == "cuda" else (lambda t: t)
    with device.target():
        first = impls.torch.dense_crf(put(unary), put(image), iterations=10, engine="native")
        again = impls.torch.dense_crf(put(unary), put(image), iterations=10, engine="native")
    assert_close(first.cpu(), on_cpu, atol=1e-5)
    assert torch.equal(first, again)


def test_feature_device_results_do_not_depend_on_the_thread_count(rng):
    """Two threads race for hash slots (compare-and-swap); who wins changes vertex numbers,
    never a value: splats gather in corner order, whichever corner owns the key."""
    features, values = _points(rng, 20000, 5, channels=3)
    unary = rng.random((20000, 4)).astype(np.float32)
    results = []
    for threads in (1, 2):
        with native.threads(threads), native.use_host_target("device-on-host"):
            lattice = native.Lattice(features)
            crf = native.DenseCrf(unary)
            crf.add_kernel(features, 3.0)
            results.append((lattice.num_vertices, lattice.filter(values), crf.inference(3)))
    assert results[0][0] == results[1][0]
    assert np.array_equal(results[0][1], results[1][1]) and np.array_equal(results[0][2], results[1][2])


def test_gradcheck_device_native_filter_in_float64(device, rng):
    torch = pytest.importorskip("torch")
    from impls.torch.lattice import DifferentiableNativeLattice

    features, values = _points(rng, 40, 3, channels=2, dtype=np.float64)
    with device.target():
        lattice = DifferentiableNativeLattice(torch.from_numpy(device.put(features)) if device.name != "cuda"
                                            else device.put(features))
    values = torch.from_numpy(values)
    values = (values.cuda() if device.name == "cuda" else values).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: lattice.filter(v), (values,))


def test_feature_device_crf_rnn_matches_the_cpu_engine():
    torch = pytest.importorskip("torch")
    from impls.torch import CrfRnn

    torch.manual_seed(0)
    image = torch.from_numpy(crf_image("im1")[:24, :32].copy()).permute(2, 0, 1)[None].float()
    logits = torch.randn(1, 3, 24, 32, dtype=torch.float32, requires_grad=True)
    layer = CrfRnn(3, iterations=3)
    expected = layer(logits, image)
    expected.sum().backward()
    expected_grad, logits.grad = logits.grad.clone(), None
    with native.use_host_target("device-on-host"):
        before = native._module().device_on_host_objects()
        got = layer(logits, image)
        got.sum().backward()
        assert native._module().device_on_host_objects() > before
    assert_close(got, expected, atol=1e-5)
    assert_close(logits.grad, expected_grad, atol=1e-5)


def test_feature_device_objects_are_safe_from_two_threads(rng):
    features, values = _points(rng, 4000, 3, channels=6)
    with native.use_host_target("device-on-host"):
        lattice = native.Lattice(features)
    expected = lattice.filter(values)
    failures = []

    def work():
        for _ in range(5):
            if not np.array_equal(lattice.filter(values), expected):
                failures.append("different result")

    workers = [threading.Thread(target=work) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert failures == []


def test_feature_device_memory_is_given_back(rng):
    features, values = _points(rng, 1000, 3)
    before = native._module().device_memory_in_use()
    with native.use_host_target("device-on-host"):
        crf = native.DenseCrf(rng.random((1000, 3)).astype(np.float32))
        crf.add_kernel(features, 3.0)
        crf.inference(2)
    assert native._module().device_memory_in_use()[0] > before[0]
    del crf
    assert native._module().device_memory_in_use() == before


@pytest.mark.parametrize("rule, match", [
    ("host pointer as device input", "are host memory where a device pointer belongs"),
    ("copy past an allocation", "run past the end of their device allocation"),
    ("device pointer as host target", "device memory where a host pointer belongs"),
    ("host pointer as device output", "are host memory where a device pointer belongs"),
])
def test_exception_device_memory_rules_are_enforced_on_the_host(rule, match):
    """What a GPU would fault on (or silently corrupt) raises in the host build."""
    with pytest.raises(ValueError, match=match):
        native._module().break_device_memory_rule(rule)


def test_exception_device_lattice_checks_the_values_it_is_given(device, rng):
    features, values = _points(rng, 50, 2)
    with device.target():
        lattice = native.Lattice(device.put(features))
    if device.name == "cuda":
        with pytest.raises(ValueError, match="must be a CUDA tensor on cuda"):
            lattice.filter(values)
    with pytest.raises(ValueError, match=r"must have shape \(50, C\)"):
        lattice.filter(device.put(values[:49]))
    with pytest.raises(ValueError, match="values must have 50 rows"):
        lattice._lattice.filter_into(device.put(values[:49]), device.put(values[:49].copy()))


def test_feature_former_host_engine_names_still_work_and_warn():
    """use_host_engine("device"), host_engine() and `.engine` (before the target was named
    apart from the engine) still work for one release, with a warning naming the replacement."""
    with pytest.warns(DeprecationWarning, match=r"use impls.native.use_host_target\('device-on-host'\)"):
        block = native.use_host_engine("device")
    with block:
        with pytest.warns(DeprecationWarning, match=r"use impls.native.host_target\(\)"):
            assert native.host_engine() == native.host_target() == "device-on-host"
        lattice, crf = native.Lattice(np.zeros((4, 2), np.float32)), native.DenseCrf(np.zeros((4, 3), np.float32))
    for value, name in ((lattice, "Lattice"), (crf, "DenseCrf")):
        with pytest.warns(DeprecationWarning, match=f"{name}.engine is deprecated, use {name}.target"):
            assert value.engine == value.target == "device-on-host"


@pytest.mark.parametrize("variable, value", [("IMPLS_NATIVE_HOST_TARGET", "device-on-host"),
                                             ("IMPLS_NATIVE_HOST_ENGINE", "device")])  # the deprecated name
def test_feature_host_target_is_read_from_the_environment_at_import(variable, value, tmp_path):
    env = {key: item for key, item in os.environ.items() if not key.startswith("IMPLS_NATIVE_HOST_")}
    env.update({variable: value, "PYTHONPATH": str(pathlib.Path(native.__file__).parents[1])})
    command = "from impls import native; print(native.host_target())"
    # From a folder of its own: `-c` puts the working directory first on sys.path, and a checkout's
    # impls/ (without the compiled module) would shadow the installed package.
    result = subprocess.run([sys.executable, "-W", "error", "-c", command], env=env, capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "device-on-host"
