"""impls.sweep on Dask distributed: a VOC-layout dataset written from synthetic scenes, swept on a
real multi-process LocalCluster, equals a plain loop exactly; an interrupted run resumes computing
only what is missing; a killed worker's tasks are rerun and the totals stay exact; bad files are
named (or skipped and listed)."""

import csv
import io
import os
import signal

import numpy as np
import pytest

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
