"""impls.sweep on Dask distributed: a VOC-layout dataset written from synthetic scenes, swept on a
real multi-process LocalCluster, equals a plain loop exactly; an interrupted run resumes computing
only what is missing; a killed worker's tasks are rerun and the totals stay exact; bad files are
named (or skipped and listed); bad input is refused before any cluster starts; rewritten files
and lost --apply labels are recomputed; a real Ctrl-C to `python -m impls.sweep` exits quietly."""

import csv
import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import impls.native
import impls.numpy
from impls import sweep
from impls.datasets import BadImage, VocDataset, unary_from_scores
from impls.examples.sweep_synthetic import CLASSES, write_voc_dataset
from impls.voc import write_label_png

distributed = pytest.importorskip("distributed", reason="impls.sweep runs on dask.distributed (extra 'sweep')")

GRID = {"bilateral_compat": [3, 6], "bilateral_sxy": [20, 50]}


def write_dataset(root, count=6, size=(40, 56), *, layout="HWC", seed=0):
    write_voc_dataset(root, count, size, layout=layout, seed=seed)
    return VocDataset(root, "val", root / "scores", scores_layout=layout)


def plain_loop(dataset, grid, ids=None):
    """{setting values: confusion} by impls.numpy.dense_crf and confusion_matrix, image by image."""
    totals = {}
    for setting in sweep.settings_of(grid):
        confusion = np.zeros((CLASSES, CLASSES), np.int64)
        for image_id in ids or dataset.ids():
            image, labels, unary = dataset.load(image_id)
            q = impls.numpy.dense_crf(unary[None], image[None], **setting)
            confusion += impls.numpy.confusion_matrix(np.argmax(q, -1), labels[None], CLASSES)
        totals[tuple(setting.values())] = confusion
    return totals


@pytest.fixture(scope="module")
def client():
    """A real LocalCluster: two worker processes, one thread each."""
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    with distributed.Client(cluster) as connected:
        yield connected
    cluster.close()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("voc"))


@pytest.fixture(scope="module")
def expected(dataset):
    return plain_loop(dataset, GRID)


def test_feature_sweep_on_a_local_cluster_equals_the_plain_loop_exactly(client, dataset, expected, tmp_path):
    result = sweep.run(dataset, GRID, tmp_path, chunk_size=2, client=client, progress=False)
    assert (result.computed, result.reused) == (12, 0)
    assert set(result.confusion) == set(expected)
    for values, confusion in expected.items():
        np.testing.assert_array_equal(result.confusion[values], confusion, err_msg=str(values))
        assert result.images[values] == 6
    assert len({worker for worker in client.scheduler_info()["workers"]}) == 2


def test_feature_scores_in_chw_and_as_logits_give_the_same_unaries(tmp_path):
    hwc = write_dataset(tmp_path / "hwc", count=2)
    chw = write_dataset(tmp_path / "chw", count=2, layout="CHW")
    for image_id in hwc.ids():
        np.testing.assert_array_equal(hwc.load(image_id)[2], chw.load(image_id)[2])
    logits = np.log(np.array([[[0.2, 0.5, 0.3]]]))
    np.testing.assert_allclose(unary_from_scores(logits + 7.0, logits=True), -logits, rtol=1e-6)


def _stored_tasks(out):
    """Complete lines of the store (a line being written does not count, as for the store)."""
    path = out / sweep.STORE
    return path.read_text().count("\n") if path.exists() else 0


def _interrupt_after(count):
    """An on_result callback that raises KeyboardInterrupt (what Ctrl-C raises) once `count`
    tasks of this call are stored: a deterministic interrupt, where a real SIGINT raced a fast
    sweep on CI (all tasks were done before the signal landed)."""
    stored = []

    def callback(done, total):
        stored.append(done)
        if len(stored) == count:
            raise KeyboardInterrupt
    return callback


def test_feature_interrupted_run_resumes_and_computes_only_missing_tasks(client, dataset, expected, tmp_path):
    """Ctrl-C after 9 of 24 tasks are stored: the store keeps them, and the same run again
    computes the 15 missing tasks only and gives the uninterrupted table."""
    with pytest.raises(KeyboardInterrupt):
        sweep.run(dataset, GRID, tmp_path, chunk_size=1, client=client, progress=False, on_result=_interrupt_after(9))
    assert _stored_tasks(tmp_path) == 9
    result = sweep.run(dataset, GRID, tmp_path, chunk_size=1, client=client, progress=False)
    assert (result.computed, result.reused) == (15, 9)
    for values, confusion in expected.items():
        np.testing.assert_array_equal(result.confusion[values], confusion)
    again = sweep.run(dataset, GRID, tmp_path, chunk_size=1, client=client, progress=False)
    assert (again.computed, again.reused) == (0, 24)


def test_feature_ctrl_c_in_the_command_exits_130_and_says_how_to_resume(client, dataset, tmp_path, monkeypatch,
                                                                         capsys):
    real_run = sweep.run
    monkeypatch.setattr(sweep, "run", lambda *args, **kwargs: real_run(*args, **kwargs, client=client,
                                                                        on_result=_interrupt_after(2)))
    code = sweep.main([str(dataset.root), "--split", "val", "--scores", str(dataset.scores), "--grid",
                       "bilateral_compat=3,6", "--out", str(tmp_path), "--chunk-size", "1", "--quiet"])
    assert code == 130 and "run the same command to resume" in capsys.readouterr().err
    assert _stored_tasks(tmp_path) == 2


def test_feature_a_killed_worker_has_its_tasks_rerun_and_totals_stay_exact(client, dataset, expected, tmp_path):
    killed = []

    def kill_a_worker(done, total):
        if not killed:
            pids = client.run(os.getpid)  # the worker processes (their nannies restart them)
            victim = sorted(pids.values())[0]
            os.kill(victim, signal.SIGKILL)
            killed.append(done)

    result = sweep.run(dataset, GRID, tmp_path, chunk_size=1, client=client, progress=False, on_result=kill_a_worker)
    assert killed and killed[0] < 24, "the worker should die mid-run"
    assert result.computed == 24
    for values, confusion in expected.items():
        np.testing.assert_array_equal(result.confusion[values], confusion)
    client.wait_for_workers(2, timeout=60)


def _break(dataset, kind):
    ids = dataset.ids()
    if kind == "corrupt-jpeg":
        path = dataset.image_path(ids[1])
        path.write_bytes(path.read_bytes()[:200])
        return ids[1], path
    if kind == "label-size":
        path = dataset.label_path(ids[2])
        write_label_png(path, np.zeros((10, 10), np.uint8))
        return ids[2], path
    path = dataset.score_path(ids[4])
    np.save(path, np.full((40, 56, CLASSES + 1), 1.0 / (CLASSES + 1), np.float16))
    return ids[4], path


@pytest.mark.parametrize("kind", ["corrupt-jpeg", "label-size", "class-count"])
def test_exception_a_bad_file_is_named_or_skipped_and_listed(client, tmp_path, kind):
    dataset = write_dataset(tmp_path / "voc")
    bad_id, bad_path = _break(dataset, kind)
    with pytest.raises(sweep.SweepError, match=str(bad_path).replace("\\", "\\\\")):
        sweep.run(dataset, GRID, tmp_path / "out", num_classes=CLASSES, chunk_size=2, client=client, progress=False)
    result = sweep.run(dataset, GRID, tmp_path / "out-skip", num_classes=CLASSES, chunk_size=2, client=client,
                       progress=False, skip_bad=True)
    assert [(image_id, path) for image_id, path, _ in result.skipped] == [(bad_id, str(bad_path))]
    good = [image_id for image_id in dataset.ids() if image_id != bad_id]
    expected = plain_loop(dataset, GRID, ids=good)
    for values, confusion in expected.items():
        np.testing.assert_array_equal(result.confusion[values], confusion)
        assert result.images[values] == 5


def test_exception_bad_image_messages_say_what_was_expected(tmp_path):
    dataset = write_dataset(tmp_path, count=5)
    _break(dataset, "class-count")
    with pytest.raises(BadImage, match=r"scores of shape \(40, 56, 6\), expected \(40, 56, 5\)"):
        dataset.load(dataset.ids()[4], num_classes=CLASSES)
    dataset.score_path(dataset.ids()[0]).unlink()
    with pytest.raises(BadImage, match=r"scene_000.npy: missing \(expected \(40, 56, C\) scores"):
        dataset.load(dataset.ids()[0])


def test_smoke_command_line_writes_the_table_the_heatmap_and_labels(client, dataset, expected, tmp_path, capsys):
    address = client.scheduler.address
    common = [str(dataset.root), "--split", "val", "--scores", str(dataset.scores), "--scheduler", address, "--quiet"]
    assert sweep.main([*common, "--grid", "bilateral_compat=3,6", "bilateral_sxy=20,50", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO((tmp_path / "results.csv").read_text())))
    assert len(rows) == 4 and set(rows[0]) >= {"bilateral_compat", "bilateral_sxy", "mean_iou", "pixel_accuracy",
                                               "iou_0", "iou_4", "images", "seconds"}
    for row in rows:
        confusion = expected[(int(row["bilateral_compat"]), int(row["bilateral_sxy"]))]
        assert float(row["mean_iou"]) == pytest.approx(impls.numpy.mean_iou(confusion), abs=1e-12)
    best = max(rows, key=lambda row: float(row["mean_iou"]))
    assert f"best: bilateral_compat={best['bilateral_compat']}, bilateral_sxy={best['bilateral_sxy']}" in printed
    assert (tmp_path / "heatmap.png").stat().st_size > 1000
    out = tmp_path / "apply"
    assert sweep.main([*common, "--grid", "bilateral_compat=6", "bilateral_sxy=50", "--out", str(out), "--apply"]) == 0
    from impls.voc import read_label_png

    image_id = dataset.ids()[3]
    image, _, unary = dataset.load(image_id)
    q = impls.numpy.dense_crf(unary[None], image[None], bilateral_compat=6, bilateral_sxy=50)
    np.testing.assert_array_equal(read_label_png(out / "labels" / f"{image_id}.png"), np.argmax(q[0], -1))


def test_exception_command_line_errors_name_what_is_wrong(dataset, tmp_path, capsys):
    common = [str(dataset.root), "--split", "val", "--scores", str(dataset.scores), "--out", str(tmp_path)]
    assert sweep.main([*common, "--grid", "bilateral_sigma=3"]) == 2
    assert "'bilateral_sigma' is not a dense_crf argument" in capsys.readouterr().err
    assert sweep.main([*common, "--grid", "bilateral_compat=3,4", "--apply"]) == 2
    assert "--apply takes one setting" in capsys.readouterr().err
    assert sweep.main([str(dataset.root), "--split", "test", "--scores", str(dataset.scores), "--out", str(tmp_path),
                       "--grid", "bilateral_compat=3"]) == 2
    assert "test.txt: the split's image list is missing" in capsys.readouterr().err


def test_feature_progress_bar_reports_rate_and_eta():
    stream = io.StringIO()
    bar = sweep.Progress(10, done=2, stream=stream)
    for _ in range(8):
        bar.advance(4)
    lines = stream.getvalue().splitlines()
    assert lines[-1].startswith("[" + "#" * 30 + "] 10/10 tasks") and "ETA 0:00:00" in lines[-1]
    assert 5 <= len(lines) <= 9


def test_feature_native_threads_times_dask_threads_stay_within_the_cores(client):
    threads_on_host = sweep._threads_by_host(client)
    assert sum(threads_on_host.values()) == 2  # two workers of one thread, on this host
    workers = list(client.scheduler_info()["workers"])
    per_task = client.gather([client.submit(sweep._threads, threads_on_host, workers=[address], pure=False)
                              for address in workers])
    cores = len(os.sched_getaffinity(0))
    assert all(count == max(1, cores // 2) for count in per_task), (per_task, cores)


# Defects found in review: each test below failed before its fix ----------------------------------

def _exit_code(argv):
    """sweep.main's exit code, argparse's SystemExit included."""
    try:
        return sweep.main(argv)
    except SystemExit as stop:
        return stop.code


def _no_cluster(*args, **kwargs):
    raise AssertionError("a cluster was started")


def _command(dataset, out, *grid, extra=()):
    return [str(dataset.root), "--split", "val", "--scores", str(dataset.scores), "--grid", *grid, "--out", str(out),
            "--quiet", *extra]


def test_smoke_python_m_impls_sweep_runs_in_a_subprocess(tmp_path):
    """`python -m impls.sweep` (the module as __main__) ships its tasks to real worker processes."""
    write_voc_dataset(tmp_path / "voc", 2)
    done = subprocess.run([sys.executable, "-m", "impls.sweep", "voc", "--split", "val", "--scores", "voc/scores",
                           "--grid", "bilateral_compat=3,6", "--out", "out", "--workers", "1", "--quiet"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len((tmp_path / "out" / "results.csv").read_text().splitlines()) == 3


@pytest.mark.parametrize("item", ["bilateral_sxy=-40", "iterations=0", "iterations=2.5", "normalization=bogus",
                                  "bilateral_compat=3,,5", "bilateral_compat=3,3"])
def test_exception_bad_grid_values_are_refused_before_any_cluster_starts(dataset, tmp_path, monkeypatch, capsys,
                                                                         item):
    monkeypatch.setattr(sweep, "_client", _no_cluster)
    assert _exit_code(_command(dataset, tmp_path, item)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and item.partition("=")[0] in err and "--grid" in err, err


@pytest.mark.parametrize("extra, flag", [(["--heatmap", "bilateral_compat,iterations"], "--heatmap"),
                                         (["--heatmap", "bilateral_compat"], "--heatmap"),
                                         (["--workers", "-2"], "--workers"), (["--workers", "0"], "--workers"),
                                         (["--chunk-size", "0"], "--chunk-size"),
                                         (["--chunk-size", "-1"], "--chunk-size"),
                                         (["--threads", "0"], "--threads"), (["--threads", "-1"], "--threads"),
                                         (["--threads", "x"], "--threads")])
def test_exception_bad_options_are_refused_before_computing(dataset, tmp_path, monkeypatch, capsys, extra, flag):
    monkeypatch.setattr(sweep, "_client", _no_cluster)
    command = _command(dataset, tmp_path, "bilateral_compat=3,6", "bilateral_sxy=20,50", extra=extra)
    assert _exit_code(command) == 2
    err = capsys.readouterr().err
    assert flag in err and "Traceback" not in err, err
    assert not (tmp_path / sweep.STORE).exists()


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("suffix", [".npz", ".npy"])
def test_exception_a_truncated_score_file_is_a_named_bad_file(client, tmp_path, suffix):
    dataset = write_dataset(tmp_path / "voc", count=4)
    bad_id = next(i for i in dataset.ids() if dataset.score_path(i).suffix == suffix)
    bad_path = dataset.score_path(bad_id)
    _truncate(bad_path)
    with pytest.raises(BadImage, match="not a readable score file"):
        dataset.load(bad_id)
    with pytest.raises(sweep.SweepError, match=str(bad_path)):
        sweep.run(dataset, GRID, tmp_path / "out", num_classes=CLASSES, client=client, progress=False)
    result = sweep.run(dataset, GRID, tmp_path / "skip", num_classes=CLASSES, client=client, progress=False,
                       skip_bad=True)
    assert [(image_id, path) for image_id, path, _ in result.skipped] == [(bad_id, str(bad_path))]
    assert set(result.images.values()) == {3}


def test_feature_skip_bad_works_when_the_first_image_is_the_bad_one(client, tmp_path):
    dataset = write_dataset(tmp_path / "voc", count=4)
    first = dataset.ids()[0]
    _truncate(dataset.score_path(first))
    result = sweep.run(dataset, GRID, tmp_path / "out", chunk_size=2, client=client, progress=False, skip_bad=True)
    assert [image_id for image_id, _, _ in result.skipped] == [first]
    expected = plain_loop(dataset, GRID, ids=dataset.ids()[1:])
    for values, confusion in expected.items():
        np.testing.assert_array_equal(result.confusion[values], confusion)


@pytest.mark.parametrize("num_classes", [[], ["--num-classes", str(CLASSES)]])
def test_exception_every_image_skipped_is_an_error(client, tmp_path, capsys, num_classes):
    dataset = write_dataset(tmp_path / "voc", count=2)
    for image_id in dataset.ids():
        _truncate(dataset.score_path(image_id))
    command = _command(dataset, tmp_path / "out", "bilateral_compat=3,6",
                       extra=["--skip-bad", "--scheduler", client.scheduler.address, *num_classes])
    assert _exit_code(command) == 2
    assert "error: " in capsys.readouterr().err
    assert not (tmp_path / "out" / "results.csv").exists()


def test_feature_relative_paths_reach_workers_started_in_another_directory(client, tmp_path, monkeypatch, capsys):
    write_voc_dataset(tmp_path / "voc", 3)
    monkeypatch.chdir(tmp_path)
    assert str(tmp_path) not in client.run(os.getcwd).values()  # the workers started elsewhere
    dataset = VocDataset("voc", "val", "voc/scores")
    assert dataset.root.is_absolute() and dataset.scores.is_absolute()
    common = ["voc", "--split", "val", "--scores", "voc/scores", "--scheduler", client.scheduler.address, "--quiet"]
    assert sweep.main([*common, "--grid", "bilateral_compat=3,6", "--out", "out"]) == 0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "results.csv").read_text())))
    assert [int(row["images"]) for row in rows] == [3, 3]
    assert sweep.main([*common, "--grid", "bilateral_compat=3", "--out", "applied", "--apply"]) == 0
    assert len(list((tmp_path / "applied" / "labels").glob("*.png"))) == 3
    capsys.readouterr()


def _rewrite(path, data):
    """Write `data` in place with an mtime surely different from the old one."""
    old = path.stat().st_mtime_ns
    path.write_bytes(data)
    os.utime(path, ns=(old + 2_000_000_000, old + 2_000_000_000))


def test_feature_rewritten_or_repaired_files_recompute_their_tasks(client, tmp_path):
    dataset = write_dataset(tmp_path / "voc", count=4)
    other = write_dataset(tmp_path / "other", count=4, seed=7)
    ids = dataset.ids()
    first = sweep.run(dataset, GRID, tmp_path / "out", chunk_size=2, client=client, progress=False)
    assert first.computed == 8
    _rewrite(dataset.score_path(ids[1]), other.score_path(ids[1]).read_bytes())  # new scores, same name
    again = sweep.run(dataset, GRID, tmp_path / "out", chunk_size=2, client=client, progress=False)
    assert (again.computed, again.reused) == (4, 4)
    for values, confusion in plain_loop(dataset, GRID).items():
        np.testing.assert_array_equal(again.confusion[values], confusion)
    label = dataset.label_path(ids[2])
    good = label.read_bytes()
    _rewrite(label, good[:100])
    broken = sweep.run(dataset, GRID, tmp_path / "out", chunk_size=2, client=client, progress=False, skip_bad=True)
    assert [image_id for image_id, _, _ in broken.skipped] == [ids[2]]
    _rewrite(label, good)
    repaired = sweep.run(dataset, GRID, tmp_path / "out", chunk_size=2, client=client, progress=False,
                         skip_bad=True)
    assert (repaired.computed, repaired.skipped) == (4, [])
    assert set(repaired.images.values()) == {4}


def test_feature_apply_output_is_checked_against_the_setting_that_wrote_it(client, dataset, tmp_path, capsys):
    def apply(compat):
        command = _command(dataset, tmp_path, f"bilateral_compat={compat}", "bilateral_sxy=20",
                           extra=["--apply", "--scheduler", client.scheduler.address])
        assert sweep.main(command) == 0
        assert "labels of 6 images" in capsys.readouterr().out
        return {path.name: path.read_bytes() for path in (tmp_path / "labels").glob("*.png")}

    written = apply(3)
    assert len(written) == 6
    shutil.rmtree(tmp_path / "labels")
    assert apply(3) == written
    assert apply(60) != written
    assert apply(3) == written


def test_exception_a_store_line_cut_mid_write_is_cut_off_before_the_next_append(client, dataset, tmp_path):
    sweep.run(dataset, GRID, tmp_path, chunk_size=3, client=client, progress=False)
    store = tmp_path / sweep.STORE
    text = store.read_text()
    store.write_text(text[: len(text) - 40])  # the last record cut mid-write
    resumed = sweep.run(dataset, GRID, tmp_path, chunk_size=3, client=client, progress=False)
    assert (resumed.computed, resumed.reused) == (1, 7)
    assert [json.loads(line)["key"] for line in store.read_text().splitlines()]  # every line parses
    assert sweep.run(dataset, GRID, tmp_path, chunk_size=3, client=client, progress=False).computed == 0


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:1", "closed"])
def test_exception_an_unreachable_scheduler_fails_fast_with_one_line(dataset, tmp_path, capsys, address):
    if address == "closed":
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            address = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    started = time.monotonic()
    code = sweep.main(_command(dataset, tmp_path, "bilateral_compat=3", extra=["--scheduler", address]))
    assert time.monotonic() - started < 10
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--scheduler" in err and address in err, err


def test_feature_local_cluster_listens_on_localhost_only(monkeypatch):
    seen = {}

    class Stop(Exception):
        pass

    def local_cluster(**kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(distributed, "LocalCluster", local_cluster)
    with pytest.raises(Stop):
        sweep._client(1, None)
    assert seen["host"] == "127.0.0.1" and seen["dashboard_address"] == "127.0.0.1:0"


def test_feature_ctrl_c_race_in_distributed_is_not_logged():
    """distributed's sync() may cancel a future it has not set yet when Ctrl-C lands early; the
    command's filter drops tornado's record of that NameError and nothing else."""
    def record(error):
        try:
            raise error
        except Exception:
            return logging.LogRecord("tornado.application", logging.ERROR, __file__, 1, "Exception in callback",
                                     None, sys.exc_info())

    race = record(NameError("cannot access free variable 'future' where it is not associated with a value"))
    assert not sweep._CANCEL_RACE_FILTER.filter(race)
    assert sweep._CANCEL_RACE_FILTER.filter(record(NameError("name 'other' is not defined")))
    assert sweep._CANCEL_RACE_FILTER.filter(record(ValueError("future")))


def test_feature_ctrl_c_to_the_process_group_prints_only_the_resume_message(tmp_path):
    """A real SIGINT to the whole process group (a terminal's Ctrl-C) during a LocalCluster run:
    exit 130 with the resume message and no worker's traceback; the same command then completes."""
    write_voc_dataset(tmp_path / "voc", 6, (240, 320))
    command = [sys.executable, "-m", "impls.sweep", "voc", "--split", "val", "--scores", "voc/scores", "--grid",
               "bilateral_compat=3,6", "bilateral_sxy=20,50", "--out", "out", "--chunk-size", "1", "--workers", "2",
               "--quiet"]
    process = subprocess.Popen(command, cwd=tmp_path, start_new_session=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while _stored_tasks(tmp_path / "out") < 1 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert process.poll() is None, "the sweep finished before the interrupt"
        os.killpg(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, err
    assert "run the same command to resume" in err and "Traceback" not in err, err
    stored = _stored_tasks(tmp_path / "out")
    assert 1 <= stored < 24
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"{24 - stored} tasks computed, {stored} reused" in done.stdout


def test_feature_usage_puts_root_first_and_help_lists_the_grid_arguments(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["/venv/bin/impls-sweep"])
    with pytest.raises(SystemExit):
        sweep.main(["--help"])
    printed = capsys.readouterr().out
    assert printed.startswith("usage: impls-sweep ROOT --split SPLIT --scores SCORES --grid ARG=V1,V2 "
                              "[ARG=V1,V2 ...] --out OUT [options]")
    for name, default in [("bilateral_sxy", 80), ("bilateral_compat", 10), ("iterations", 5),
                          ("normalization", "symmetric")]:
        assert f"{name} (default {default})" in printed
    assert "--threads N native engine threads per task (default: the host's cores divided by the Dask threads on it)" \
        in " ".join(printed.split())


def _threads_column(out):
    rows = csv.DictReader(io.StringIO((out / "results.csv").read_text()))
    return {(int(row["bilateral_compat"]), int(row["bilateral_sxy"])): row["threads"] for row in rows}


def test_feature_threads_per_task_leave_results_bit_identical_and_are_recorded(client, dataset, expected, tmp_path):
    """--threads 1 and 2 give the default's confusion matrices exactly; results.csv's threads is
    the count each setting's tasks ran on, by default _threads's share of the host's cores."""
    threads_on_host = sweep._threads_by_host(client)
    shares = set(client.gather([client.submit(sweep._threads, threads_on_host, workers=[address], pure=False)
                                for address in client.scheduler_info()["workers"]]))
    assert len(shares) == 1
    default = str(shares.pop()) if impls.native.available() else ""
    assert default in ("", str(max(1, len(os.sched_getaffinity(0)) // 2)))
    for threads, recorded in [(None, default), (1, "1"), (2, "2")]:
        out = tmp_path / str(threads)
        result = sweep.run(dataset, GRID, out, chunk_size=3, client=client, progress=False, threads=threads)
        assert (result.computed, result.reused) == (8, 0)
        for values, confusion in expected.items():
            np.testing.assert_array_equal(result.confusion[values], confusion, err_msg=f"{threads} {values}")
        sweep.write_results(result, out)
        column = _threads_column(out)
        want = recorded if impls.native.available() else ""
        assert column == {values: want for values in expected}, (threads, column)
        for line in (out / sweep.STORE).read_text().splitlines():
            assert json.loads(line)["threads"] == (int(want) if want else None)


def test_feature_threads_are_not_in_the_key_and_old_stores_without_them_still_load(client, dataset, expected,
                                                                                    tmp_path, capsys):
    """A resumed sweep with another --threads reuses the stored tasks, which keep the count they
    ran on; a task stored before threads were recorded counts as unknown: a setting whose tasks
    all lack it has an empty threads, otherwise the min-max of those recorded."""
    if not impls.native.available():
        pytest.skip("threads are recorded when the native engine runs")
    common = ["--scheduler", client.scheduler.address, "--chunk-size", "3"]
    grid = ("bilateral_compat=3,6", "bilateral_sxy=20,50")
    assert sweep.main(_command(dataset, tmp_path, *grid, extra=[*common, "--threads", "1"])) == 0
    assert set(_threads_column(tmp_path).values()) == {"1"}
    store = tmp_path / sweep.STORE
    records = [json.loads(line) for line in store.read_text().splitlines()]
    assert len(records) == 8

    def setting(record):
        values = json.loads(record["key"].split(":", 1)[1].rsplit(":", 1)[0])
        return values["bilateral_compat"], values["bilateral_sxy"]

    seen = {}
    for record in records:
        values = setting(record)
        first = values not in seen
        seen[values] = True
        if values == (3, 20) or (values == (3, 50) and first):
            del record["threads"]  # as a store written before threads were recorded
        elif values == (6, 20) and first:
            record["threads"] = 2
    store.write_text("".join(json.dumps(record) + "\n" for record in records))
    capsys.readouterr()
    assert sweep.main(_command(dataset, tmp_path, *grid, extra=[*common, "--threads", "2"])) == 0
    assert "0 tasks computed, 8 reused" in capsys.readouterr().out
    assert _threads_column(tmp_path) == {(3, 20): "", (6, 20): "1-2", (3, 50): "1", (6, 50): "1"}
    rows = csv.DictReader(io.StringIO((tmp_path / "results.csv").read_text()))
    for row in rows:
        confusion = expected[(int(row["bilateral_compat"]), int(row["bilateral_sxy"]))]
        assert float(row["mean_iou"]) == pytest.approx(impls.numpy.mean_iou(confusion), abs=1e-12)


@pytest.mark.parametrize("threads", [0, -1, True, 1.5, "2"])
def test_exception_run_refuses_a_bad_threads_before_any_cluster_starts(dataset, tmp_path, monkeypatch, threads):
    monkeypatch.setattr(sweep, "_client", _no_cluster)
    with pytest.raises((TypeError, ValueError), match="'threads' must be a positive integer"):
        sweep.run(dataset, GRID, tmp_path, threads=threads, progress=False)
    assert not (tmp_path / sweep.STORE).exists()


def test_exception_another_sweep_in_out_names_only_what_differs(tmp_path):
    config = {"root": "/data/voc", "split": "val", "chunk_size": 4}
    sweep.TaskStore(tmp_path, config)
    with pytest.raises(sweep.SweepError) as error:
        sweep.TaskStore(tmp_path, {**config, "chunk_size": 2})
    message = str(error.value)
    assert "chunk_size: stored 4, now 2" in message and "/data/voc" not in message


def test_feature_a_stale_heatmap_and_skipped_table_are_removed(client, tmp_path, capsys):
    dataset = write_dataset(tmp_path / "voc", count=3)
    label = dataset.label_path(dataset.ids()[1])
    good = label.read_bytes()
    _rewrite(label, good[:100])
    common = ["--skip-bad", "--scheduler", client.scheduler.address]
    assert sweep.main(_command(dataset, tmp_path / "out", "bilateral_compat=3,6", "bilateral_sxy=20,50",
                               extra=common)) == 0
    assert (tmp_path / "out" / "heatmap.png").exists() and (tmp_path / "out" / "skipped.csv").exists()
    _rewrite(label, good)
    assert sweep.main(_command(dataset, tmp_path / "out", "bilateral_compat=3,6", extra=common)) == 0
    assert not (tmp_path / "out" / "heatmap.png").exists() and not (tmp_path / "out" / "skipped.csv").exists()
    capsys.readouterr()


def test_feature_progress_rate_leaves_start_up_out():
    """Cluster start-up (100 s here before the first task ends) is not in the rate."""
    now = [0.0]
    stream = io.StringIO()
    bar = sweep.Progress(4, stream=stream, clock=lambda: now[0])
    for now[0] in (100.0, 101.0, 102.0, 103.0):
        bar.advance(5)
    last = stream.getvalue().splitlines()[-1]
    assert "5.00 image-settings/s" in last, last
