"""The native CPU engine under threads and on every instruction set: one object used from
several Python threads at once, the OpenMP thread count changed after construction (results
do not depend on it, bit for bit), every row width of the mean field, and each instruction
set the kernels were built for against the NumPy oracle."""

import json
import os
import pathlib
import subprocess
import sys
import threading

import numpy as np
import pytest

from impls import native
from impls.numpy.crf import dense_crf as oracle_dense_crf
from impls.testing import assert_close
from tests.inputs import crf_image, smooth_unary

pytestmark = pytest.mark.skipif(not native.available(), reason="impls._native is not built")


def _image_crf(height, width, labels, *, seed=7):
    """A native DenseCrf with pydensecrf's two kernels on a real image, and its inputs."""
    image = np.resize(crf_image("im2"), (height, width, 3)).astype(np.uint8)
    unary = smooth_unary(height, width, labels, seed=seed).reshape(-1, labels)
    y, x = np.meshgrid(np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32), indexing="ij")
    positions = np.stack([x.ravel(), y.ravel()], axis=1)
    kernels = [(positions / 3, 3.0), (np.concatenate([positions / 80, image.reshape(-1, 3) / np.float32(13)], 1), 10.0)]
    crf = native.DenseCrf(unary)
    for features, compat in kernels:
        crf.add_kernel(features, compat)
    return crf, unary, kernels


def _run_in_threads(count, work):
    """Runs work(index) on `count` Python threads at once; re-raises the first error."""
    errors = []
    barrier = threading.Barrier(count)

    def run(index):
        try:
            barrier.wait()
            work(index)
        except BaseException as error:  # noqa: BLE001 (reported in the main thread)
            errors.append(error)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


@pytest.fixture(params=["own", "openmp"])
def team_threads(request):
    """The CPU engine's teams on its own threads, then on OpenMP's (what it uses once torch is
    imported, as it is in this test process when torch is installed)."""
    with native.team_threads(request.param):
        yield request.param


def test_feature_results_do_not_depend_on_the_thread_count(team_threads):
    """Vertices are numbered, and every sum is taken, in an order fixed by the points alone."""
    with native.threads(1):
        crf, unary, kernels = _image_crf(120, 160, 5)
        expected = crf.inference(5)
    for count in (2, 3, 4, 7):
        with native.threads(count):
            assert np.array_equal(crf.inference(5), expected), f"{count} threads changed the marginals"
    with native.threads(4):
        built_on_four = native.DenseCrf(unary)
        for features, compat in kernels:
            built_on_four.add_kernel(features, compat)
    with native.threads(1):
        assert np.array_equal(built_on_four.inference(5), expected)
    features = kernels[1][0]
    with native.threads(1):
        lattice = native.Lattice(features)
        values = np.random.default_rng(3).random((len(features), 7)).astype(np.float32)
        filtered = lattice.filter(values)
    with native.threads(5):
        again = native.Lattice(features)
        assert again.num_vertices == lattice.num_vertices
        assert np.array_equal(again.weights, lattice.weights)
        assert np.array_equal(again.filter(values), filtered)


def test_feature_two_threads_share_one_dense_crf(team_threads):
    crf, _, _ = _image_crf(90, 120, 21)
    expected = crf.inference(5)
    stepped = crf.inference(2)
    crf.step(stepped)
    results = [[] for _ in range(2)]

    def work(index):
        for _ in range(6):
            results[index].append(crf.inference(5))
            q = crf.inference(2)
            crf.step(q)
            results[index].append(q)

    with native.threads(2):
        _run_in_threads(2, work)
    for thread_results in results:
        assert len(thread_results) == 12
        for k, result in enumerate(thread_results):
            assert np.array_equal(result, expected if k % 2 == 0 else stepped)


def test_feature_two_threads_share_one_lattice():
    features = np.random.default_rng(4).random((5000, 5)).astype(np.float32) * 4
    lattice = native.Lattice(features)
    inputs = [np.random.default_rng(seed).random((5000, channels)) for seed, channels in ((5, 1), (6, 21))]
    inputs = [inputs[0].astype(np.float32), inputs[1], inputs[1].astype(np.float32)]
    expected = [lattice.filter(values, reverse=bool(k % 2)) for k, values in enumerate(inputs)]

    def work(index):
        for _ in range(8):
            for k, values in enumerate(inputs):
                assert np.array_equal(lattice.filter(values, reverse=bool(k % 2)), expected[k])

    _run_in_threads(2, work)


def test_feature_kernels_added_while_another_thread_runs_inference():
    """add_kernel waits for running calls (and they for it): no crash, and afterwards the
    object equals one built in sequence."""
    crf, unary, kernels = _image_crf(60, 80, 4)
    extra = (np.random.default_rng(8).random((len(unary), 3)).astype(np.float32) * 5, 2.0)

    def work(index):
        if index == 0:
            for _ in range(10):
                crf.inference(3)
        else:
            crf.add_kernel(*extra)

    _run_in_threads(2, work)
    fresh = native.DenseCrf(unary)
    for features, compat in [*kernels, extra]:
        fresh.add_kernel(features, compat)
    assert np.array_equal(crf.inference(4), fresh.inference(4))


@pytest.mark.parametrize("labels", [2, 3, 7, 8, 9, 16, 21, 33, 60, 64, 65, 130])
def test_feature_every_row_width_equals_the_numpy_mean_field(labels):
    """2..7 labels run unpadded rows of scalars, 8 one vector, up to 64 rows held in
    registers, more rows in scratch: each against the NumPy oracle."""
    image = crf_image("im1")[:36, :52].copy()
    unary = smooth_unary(36, 52, labels, seed=labels)
    options = dict(gaussian_compat=3.0, bilateral_compat=-np.linspace(8, 12, labels), iterations=4)
    ours = oracle_dense_crf(unary[None], image[None], engine="native", **options)
    expected = oracle_dense_crf(unary[None], image[None], engine="framework", **options)
    assert_close(ours, expected)


def test_feature_strided_unary_and_marginals_are_read_and_written_in_place():
    """pydensecrf's (L, P) layout goes in and out as transposed views, without copies."""
    crf, unary, kernels = _image_crf(40, 50, 6)
    transposed = np.ascontiguousarray(unary.T)
    from_view = native.DenseCrf(transposed.T)
    for features, compat in kernels:
        from_view.add_kernel(np.asfortranarray(features), compat)
    q = np.empty((6, len(unary)), np.float32)
    assert from_view.inference(5, out=q.T) is not None
    assert np.array_equal(q.T, crf.inference(5))
    transposed_q = from_view.inference_transposed(5)
    assert transposed_q.shape == (6, len(unary)) and transposed_q.flags.c_contiguous
    assert np.array_equal(transposed_q, q)
    crf.set_unary(unary[:, ::-1].copy())
    assert np.array_equal(crf.unary(), unary[:, ::-1])


ISA_SCRIPT = """
import json, sys
sys.path.append(sys.argv[2])  # the checkout, behind the installed impls (for tests.inputs), as the conftest does
import numpy as np
from impls import native
from impls.numpy.crf import dense_crf
from tests.inputs import crf_image, smooth_unary
image = crf_image("im1")[:48, :64].copy()
for labels in (2, 5, 21):
    unary = smooth_unary(48, 64, labels, seed=labels)
    q = dense_crf(unary[None], image[None], engine="native", iterations=5)
    np.save(sys.argv[1] + f"/{labels}.npy", q)
print(json.dumps(native.instruction_set()))
"""


@pytest.mark.parametrize("isa", sorted(native.instruction_sets()) if native.available() else [])
def test_feature_every_instruction_set_equals_the_numpy_mean_field(isa, tmp_path):
    """Each build of the kernels, forced with IMPLS_NATIVE_ISA in a fresh process (the choice
    is made once per process), against the NumPy oracle."""
    if not native.instruction_sets()[isa]:
        pytest.skip(f"this CPU does not support {isa}")
    environment = dict(os.environ, IMPLS_NATIVE_ISA=isa)
    # From tmp_path: the checkout's own impls/ (without the built extension) must not shadow the installed one.
    checkout = str(pathlib.Path(__file__).resolve().parent.parent)
    done = subprocess.run([sys.executable, "-c", ISA_SCRIPT, str(tmp_path), checkout], env=environment,
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == isa
    image = crf_image("im1")[:48, :64].copy()
    for labels in (2, 5, 21):
        unary = smooth_unary(48, 64, labels, seed=labels)
        expected = oracle_dense_crf(unary[None], image[None], engine="framework", iterations=5)
        assert_close(np.load(tmp_path / f"{labels}.npy"), expected, msg=f"{isa}, {labels} labels")


def test_exception_unknown_instruction_set_is_named(tmp_path):
    environment = dict(os.environ, IMPLS_NATIVE_ISA="avx9000")
    script = "from impls import native; native.instruction_set()"
    done = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode != 0
    assert "IMPLS_NATIVE_ISA=avx9000: not one of the instruction sets built (baseline" in done.stderr


def test_exception_thread_count_must_be_positive():
    with pytest.raises(ValueError, match="argument 'count' must be a positive integer"):
        with native.threads(0):
            pass


@pytest.mark.skipif(native.available() and native.host_target() != "cpu", reason="the CPU engine's phase timer")
def test_cardinality_profile_reports_the_phases_that_ran():
    crf, _, _ = _image_crf(30, 40, 3)
    with native.profile() as phases:
        crf.inference(2)
    assert set(phases) == {"points", "merge", "blur"}
    assert phases["points"][1] == 1 and phases["points"][0] > 0


def _dense_crf_in_child(connection):
    """Runs in a forked child: a native call on two threads, whose answer goes back."""
    with native.threads(2):
        crf, _, _ = _image_crf(60, 80, 5)
        connection.send(crf.inference(3))
    connection.close()


@pytest.mark.skipif(native.available() and native.host_target() != "cpu",
                    reason="the host-executed device engine runs on OpenMP's threads, which libgomp cannot give a "
                           "forked child (its first region waits forever for the parent's threads)")
def test_feature_a_forked_child_runs_native_calls_on_several_threads(team_threads):
    """The engine's workers are threads of the parent; a forked child (multiprocessing's fork
    start method, Dask's nannies on some setups) starts its own instead of waiting forever on
    threads it does not have."""
    import multiprocessing

    with native.threads(2):
        crf, _, _ = _image_crf(60, 80, 5)
        expected = crf.inference(3)  # the parent's workers exist before the fork
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_dense_crf_in_child, args=(sender,))
    child.start()
    sender.close()
    try:
        assert receiver.poll(60), "the forked child's native call did not finish within 60 s"
        assert np.array_equal(receiver.recv(), expected)
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0


def test_feature_many_python_threads_call_at_once_on_more_threads_than_cores(team_threads):
    """Each call gets a team of its own (the pool grows): 6 Python threads x 3 native threads
    on 2 cores give the marginals of one call, and none waits on another's team."""
    crf, _, _ = _image_crf(40, 56, 4)
    with native.threads(1):
        expected = crf.inference(4)
    results = [None] * 6

    def work(index):
        with native.threads(3):
            for _ in range(4):
                results[index] = crf.inference(4)

    _run_in_threads(6, work)
    for result in results:
        assert np.array_equal(result, expected)


def test_feature_idle_native_threads_sleep_instead_of_spinning():
    """After a call, the engine's workers sleep: the process uses next to no CPU while it waits.
    libgomp's default policy kept its threads spinning for a while after every parallel region:
    measured here, 7.6-10 ms of CPU in the 0.3 s after a call (the engine's own workers: 0.5-2 ms)."""
    import resource
    import time

    crf, _, _ = _image_crf(120, 160, 21)

    def cpu_seconds():
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    idle = []
    with native.team_threads("own"), native.threads(2):
        for _ in range(5):
            crf.inference(5)
            before = cpu_seconds()
            time.sleep(0.3)
            idle.append(cpu_seconds() - before)
    # The quietest window: other threads of a test process (xdist, frameworks) may wake at times.
    assert min(idle) < 0.004, f"{min(idle) * 1e3:.1f} ms of CPU in the quietest 0.3 s after a native call"


@pytest.mark.skipif(native.available() and native.host_target() != "cpu", reason="the CPU engine's teams")
def test_feature_a_busy_machine_runs_teams_on_one_thread_with_the_same_results(team_threads):
    """While the engine counts the machine as busy (a recent call's threads mostly waited for
    each other), its short parallel phases run on one thread and the mean field probes with
    every thread for one iteration: the marginals, lattices and filters stay bit-identical."""
    module = native._module()
    with native.threads(1):
        crf, unary, kernels = _image_crf(120, 160, 5)
        expected = crf.inference(5)
        lattice_expected = native.Lattice(kernels[1][0])
    try:
        module.mark_machine_busy(60.0)
        assert module.machine_busy()
        with native.threads(3):
            rebuilt = native.DenseCrf(unary)
            for features, compat in kernels:
                rebuilt.add_kernel(features, compat)
            assert np.array_equal(rebuilt.inference(5), expected)
            lattice = native.Lattice(kernels[1][0])
            assert lattice.num_vertices == lattice_expected.num_vertices
            values = np.random.default_rng(5).random((lattice.num_points, 6)).astype(np.float32)
            assert np.array_equal(lattice.filter(values), lattice_expected.filter(values))
    finally:
        module.mark_machine_busy(0.0)
    assert not module.machine_busy()


@pytest.mark.skipif(native.available() and native.host_target() != "cpu", reason="the CPU engine's teams")
def test_feature_results_stay_bit_identical_while_busy_processes_share_the_cores(team_threads):
    """Two threads beside busy processes (their teams may shrink to one member mid-call) give
    the marginals of one thread on a quiet machine."""
    from bench.load import busy_processes, cores

    with native.threads(1):
        crf, _, _ = _image_crf(120, 160, 21)
        expected = crf.inference(10)
    try:
        with busy_processes(cores()), native.threads(2):
            for _ in range(5):
                assert np.array_equal(crf.inference(10), expected)
    finally:
        native._module().mark_machine_busy(0.0)


@pytest.mark.parametrize("user_setting", [{}, {"GOMP_SPINCOUNT": "123"}, {"OMP_WAIT_POLICY": "active"}])
def test_feature_importing_impls_leaves_the_users_openmp_settings_and_environment_as_they_were(user_setting,
                                                                                              tmp_path):
    """`import impls` loads libgomp with a bounded spin (GOMP_SPINCOUNT=impls.OPENMP_SPIN_COUNT)
    only when the user set neither variable, and takes the variable out of the environment
    again: child processes see exactly the user's environment."""
    script = ("import os, json, impls; "
              "print(json.dumps({k: os.environ.get(k) for k in ('GOMP_SPINCOUNT', 'OMP_WAIT_POLICY')}))")
    env = {key: value for key, value in os.environ.items() if key not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    result = subprocess.run([sys.executable, "-c", script], env={**env, **user_setting}, capture_output=True,
                            text=True, check=True, cwd=tmp_path)  # the installed package, not the checkout
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen == {"GOMP_SPINCOUNT": user_setting.get("GOMP_SPINCOUNT"),
                    "OMP_WAIT_POLICY": user_setting.get("OMP_WAIT_POLICY")}
