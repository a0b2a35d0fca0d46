"""The widths-learning example: `python -m impls.examples.learn_crf_widths` as a user runs it,
from another folder, on a reduced setting; its trajectory, summary, exit status and plot."""

import re
import subprocess
import sys

import numpy as np
import pytest

from impls.examples import learn_crf_widths
from tests.inputs import module_env

torch = pytest.importorskip("torch")

REDUCED = ["--steps", "30", "--every", "10", "--images", "6", "--held-out", "3", "--size", "48", "--grid", "3",
           "--workers", "1"]
NUMBER = r"([-+]?\d+(?:\.\d+)?)"
RECORD = re.compile(rf"^step +(\d+)  loss (nan|{NUMBER})  bilateral_sxy +{NUMBER}  bilateral_srgb +{NUMBER}  "
                    rf"held-out mIoU {NUMBER} +{NUMBER} s$", re.MULTILINE)
SETTING = rf"bilateral_sxy={NUMBER} bilateral_srgb={NUMBER}  held-out mIoU {NUMBER}"
SUMMARY = re.compile(rf"^start: +{SETTING}\n"
                     rf"learned: +{SETTING}  \(30 steps, {NUMBER} s, {NUMBER} s of it the records' held-out "
                     rf"evaluations\)\n"
                     rf"grid: +{SETTING}  \(3 x 3 settings, impls\.sweep, {NUMBER} s with its cluster's start\)\n"
                     rf"learned - grid best: {NUMBER}: (PASS|FAIL)", re.MULTILINE)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _run(argv, cwd):
    return subprocess.run([sys.executable, "-m", "impls.examples.learn_crf_widths", *argv], cwd=cwd,
                          env=module_env(), capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_smoke_command_learns_widths_and_compares_with_the_grid(tmp_path):
    pytest.importorskip("distributed", reason="the grid runs on impls.sweep (extra 'sweep')")
    done = _run([*REDUCED, "--output", "widths.png"], tmp_path)
    assert done.returncode in (0, 1), done
    assert "Traceback" not in done.stderr, done.stderr
    records = RECORD.findall(done.stdout)
    assert [int(r[0]) for r in records] == [0, 10, 20, 30], done.stdout
    start, last = records[0], records[-1]
    assert (float(start[3]), float(start[4])) == (learn_crf_widths.START["bilateral_sxy"],
                                                   learn_crf_widths.START["bilateral_srgb"])
    moved = np.abs(np.log([float(last[3]), float(last[4])]) - np.log([float(start[3]), float(start[4])]))
    assert (moved > 0.1).all(), f"the widths stayed near the start: {records}"
    assert all(np.isfinite(float(r[1])) for r in records[1:]) and all(0 <= float(r[5]) <= 1 for r in records)
    summary = SUMMARY.search(done.stdout)
    assert summary, done.stdout
    numbers = [float(value) for value in summary.groups()[:-1]]
    start_miou, learned_miou, grid_miou, difference = numbers[2], numbers[5], numbers[10], numbers[12]
    assert (start_miou, learned_miou) == (float(start[5]), float(last[5]))
    assert numbers[7] <= numbers[6], "the evaluations are part of the training's time"
    assert numbers[3:5] == pytest.approx([float(last[3]), float(last[4])], rel=1e-3)
    assert abs(difference - (learned_miou - grid_miou)) <= 1.5e-4
    passed = summary.groups()[-1] == "PASS"
    assert passed == (difference >= -learn_crf_widths.TOLERANCE)
    assert done.returncode == (0 if passed else 1)
    assert (tmp_path / "widths.png").read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.parametrize("argv, named", [(["--steps", "0"], "--steps"), (["--images", "4", "--held-out", "4"],
                                                                          "--held-out"),
                                         (["--grid", "1"], "--grid"), (["--bogus"], "--bogus")])
def test_exception_bad_option_exits_2_with_argparse_message(tmp_path, argv, named):
    done = _run(argv, tmp_path)
    assert done.returncode == 2, done
    assert "usage: python -m impls.examples.learn_crf_widths" in done.stderr and named in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "learn_crf_widths.png").exists()


def test_feature_grid_spans_the_start_and_doubles_each_width():
    grid = learn_crf_widths.grid_values(5)
    assert grid == {"bilateral_sxy": [10, 20, 40, 80, 160], "bilateral_srgb": [5, 10, 20, 40, 80]}
    for name, values in grid.items():
        assert min(values) <= learn_crf_widths.START[name] <= max(values)


def test_feature_loss_is_the_mean_negative_log_marginal_of_labelled_pixels():
    q = torch.tensor([[[[0.5, 0.25]], [[0.5, 0.75]]]])  # (N=1, C=2, H=1, W=2)
    labels = torch.tensor([[[1, 255]]])
    assert float(learn_crf_widths.true_label_nll(q, labels)) == pytest.approx(-np.log(0.5))
    labels = torch.tensor([[[0, 1]]])
    assert float(learn_crf_widths.true_label_nll(q, labels)) == pytest.approx(-(np.log(0.5) + np.log(0.75)) / 2)
