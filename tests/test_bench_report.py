"""The benchmark report shows the numbers of the JSON it was rendered from, draws its figures,
the ratio gate passes and fails where it should, and the benchmarks name their variants with the
text the report and the gate read."""

import json
import pathlib
import re

import pytest

from bench import gate, report
from bench.variants import NATIVE1, PYDENSECRF, Variant, variant_id

ROOT = pathlib.Path(__file__).parent.parent
SMALL = ROOT / "tests" / "data" / "benchmark_small.json"


def _table(markdown, group):
    section = markdown.split(f"## {group}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| backend")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows if not set(row) <= set("|-: ")]


def test_feature_report_tables_hold_the_json_numbers():
    results = json.loads(SMALL.read_text())
    markdown = report.render(results)
    table = _table(markdown, "upsample_bilinear fcn32s-final 16x12x21 x32")
    assert table == [
        ["numpy", "cpu", "18.000", "0.400", "20", "1.00x", "2.00x"],
        ["torch", "cpu", "3.000", "0.500", "20", "6.00x", "12.00x"],
        ["tf", "cpu", "45.000", "3.600", "20", "0.40x", "0.80x"],
        ["pydensecrf", "cpu", "36.000", "1.000", "5", "0.50x", "1.00x"],
    ]
    # A group without a baseline has no speedup rather than a made-up one.
    assert _table(markdown, "only torch") == [["torch", "cuda", "0.250", "0.010", "7", "n/a", "n/a"]]
    assert "Example CPU @ 2.0GHz, 2 cores; GPU: none" in markdown
    assert re.search(r"numpy 2\.4\.6, torch 2\.13\.0\+cpu\n", markdown)


def test_feature_dense_crf_speedups_in_the_table():
    table = _table(report.render(json.loads(SMALL.read_text())), "dense_crf 320x240-21labels-5it")
    assert [row[0] for row in table] == ["numpy", "native", "native1", "pydensecrf"]
    assert [row[5:] for row in table] == [["1.00x", "0.25x"], ["10.00x", "2.50x"], ["5.00x", "1.25x"],
                                          ["4.00x", "1.00x"]]


# Lines the report of benchmark_small.json holds, by what they show.
REPORT_LINES = [
    ("absent-backend", "- backend **torch-cuda** absent: torch.cuda.is_available() is False"),
    ("skipped-cases", "1 case(s) skipped (the budget per call was 3.0 s)"),
    ("skipped-case-reason", "`test_dense_crf_sweep[1920x1080-60labels-numpy-cpu]`: numpy-cpu: one call predicted"),
    ("fastest-backend-per-case", "| 320x240-21labels-5it | native-cpu | 40.0 | 2.50x | native1-cpu (80.0 ms) |"),
    ("fastest-backend-per-case",
     "| astronaut-500x375-21labels-10it | native-cpu | 250.0 | 2.20x | native1-cpu (275.0 ms) |"),
    ("fastest-backend-per-case",
     "| volume-69x51x72-5labels-5it | native-cpu | 200.0 | 3.00x | native1-cpu (300.0 ms) |"),
    ("native-on-every-core-and-per-core",
     "| astronaut-500x375-21labels-10it | 250.0 ms on 2 cores | 275.0 ms on 1 core | 2.20x | 2.00x |"),
    ("native-on-every-core-and-per-core", "| 1280x720-21labels-5it | 600.0 ms on 2 cores | n/a | 2.50x | n/a |"),
]


@pytest.mark.parametrize("line", [pytest.param(line, id=what) for what, line in REPORT_LINES])
def test_feature_report_holds_the_line(line):
    assert line in report.render(json.loads(SMALL.read_text()))


def test_feature_native_scaling_table():
    """ns per pixel x label x iteration over the sweep, and the largest image's over 500x375's."""
    section = report.render(json.loads(SMALL.read_text())).split("## Native: time per pixel", 1)[1]
    native = section.split("**native** (ns):", 1)[1].split("**native1**", 1)[0]
    # 0.01 s / (19200 px x 21 x 5) = 4.96 ns; 0.12 s at 187500 px: 6.10; 0.6 s at 921600 px: 6.20.
    assert "| 21 | 4.96 | 4.96 | 6.10 | 6.20 | 1.02x |" in native
    assert "| 21 | 9.92 | 9.92 | 10.16 | 1.00x |" in section.split("**native1** (ns):", 1)[1]


def test_smoke_command_line_writes_the_report_and_figures(tmp_path):
    output = tmp_path / "nested" / "report.md"
    assert report.main([str(SMALL), "--output", str(output), "--no-example"]) == 0
    figures = [report.FIGURE_TIME, report.FIGURE_SPEEDUP]
    assert output.read_text() == report.render(json.loads(SMALL.read_text()), figures)
    for name in figures:
        assert (output.parent / name).read_bytes().startswith(b"\x89PNG"), name
        assert f"]({name})" in output.read_text()


def test_feature_example_picture(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "example.png"
    assert report.plot_example(path, size=(60, 80), labels=3, iterations=2)
    assert path.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("min_speedup, status", [(1.5, 0), (2.0, 0), (2.01, 1), (4.0, 1)])
def test_feature_ratio_gate_per_core(min_speedup, status):
    # The small JSON's target case: native on one thread 275 ms, pydensecrf 550 ms, so 2.0x.
    code, message = gate.check(json.loads(SMALL.read_text()), min_speedup=min_speedup)
    assert code == status, message
    assert "native1 vs pydensecrf on astronaut-500x375-21labels-10it: 2.00x" in message
    assert "on 1 core(s)" in message
    assert f"threshold {min_speedup:g}x" in message and ("met" if status == 0 else "MISSED") in message


def test_feature_ratio_gate_on_every_core():
    code, message = gate.check(json.loads(SMALL.read_text()), backend="native", min_speedup=4.0)
    assert code == 1 and "native vs pydensecrf on astronaut-500x375-21labels-10it: 2.20x" in message


def test_exception_ratio_gate_without_measurements():
    code, message = gate.check(json.loads(SMALL.read_text()), case="no-such-case")
    assert code == 2 and "no dense_crf measurement of native1 and pydensecrf" in message


def test_smoke_ratio_gate_command_line(tmp_path, capsys):
    assert gate.main([str(SMALL), "--min-speedup", "4"]) == 1
    assert "MISSED" in capsys.readouterr().err
    assert gate.main([str(SMALL), "--backend", "native", "--min-speedup", "2.2"]) == 0


def test_exception_not_a_benchmark_file(tmp_path):
    bogus = tmp_path / "bogus.json"
    bogus.write_text('{"results": []}')
    with pytest.raises(ValueError, match="not a pytest-benchmark JSON file"):
        report.load(bogus)


def test_feature_variant_ids_are_the_json_and_report_names():
    """A variant's id is its pytest id and its name in benchmark.json ("backend" = name, "device")."""
    assert [v.id for v in (Variant("numpy"), Variant("torch", "cuda"), Variant("native"), NATIVE1, PYDENSECRF)] \
        == ["numpy-cpu", "torch-cuda", "native-cpu", "native1-cpu", "pydensecrf-cpu"]
    assert (NATIVE1.backend, NATIVE1.name, NATIVE1.threads, NATIVE1.cores) == ("native", "native1", 1, 1)
    assert variant_id(NATIVE1.name, NATIVE1.device) == str(NATIVE1) == "native1-cpu"
    assert gate.TARGET_BACKEND == NATIVE1.name and PYDENSECRF.cores == 1


@pytest.mark.parametrize("fields, message", [
    (("jax",), "unknown benchmark backend 'jax'"),
    (("numpy", "cuda"), r"numpy runs on \['cpu'\], not 'cuda'"),
    (("pydensecrf", "cpu", 1), "only native on the CPU takes a positive thread count"),
    (("native", "cpu", 0), "only native on the CPU takes a positive thread count"),
])
def test_exception_variant_out_of_the_table(fields, message):
    with pytest.raises(ValueError, match=message):
        Variant(*fields)


def test_feature_no_scaling_section_without_native_sweep_cases():
    results = json.loads(SMALL.read_text())
    results["benchmarks"] = [b for b in results["benchmarks"] if b.get("extra_info", {}).get("backend")
                             not in ("native", "native1")]
    assert "## Native: time per pixel" not in report.render(results)


def test_feature_report_turns_sweep_medians_into_images_per_second():
    results = json.loads(SMALL.read_text())
    for workers, median in ((1, 0.5), (2, 0.25)):
        results["benchmarks"].append({
            "name": f"test_sweep_images_per_second[{workers}]", "group": "sweep 16 images",
            "stats": {"median": median, "iqr": 0.01, "rounds": 3},
            "extra_info": {"op": "sweep", "backend": f"dask-{workers}w", "device": "cpu", "workers": workers,
                           "images": 32}})
    section = report.render(results).split("## Dense CRF sweep on Dask: images per second\n", 1)[1]
    assert "| 1 | 32 | 0.50 | 64.0 |" in section and "| 2 | 32 | 0.25 | 128.0 |" in section


def _maskrcnn_results():
    results = json.loads(SMALL.read_text())
    stages = {"torch": (1.0, 0.3), "tf": (0.9, 0.4), "matterport": (1.2, 0.5)}
    for name, median in (("torch", 2.0), ("tf", 2.5), ("matterport", 3.0)):
        backbone, rest = stages[name]
        results["benchmarks"].append({
            "name": f"test_detect[{name}]", "group": "maskrcnn detect 1024x1024 resnet101 81 classes",
            "stats": {"median": median, "iqr": 0.01, "rounds": 5},
            "extra_info": {"op": "maskrcnn_detect", "backend": name, "device": "cpu", "size": 1024, "detections": 12,
                           "stage_s": {"backbone": backbone, "mask head": rest, "mold + unmold": -0.01}}})
    return results


def test_feature_report_compares_maskrcnn_with_matterport_stage_by_stage(tmp_path):
    results = _maskrcnn_results()
    section = report.render(results).split("## Mask R-CNN detect() against matterport\n", 1)[1].split("\n## ")[0]
    assert "| implementation | device | detections | median (s) | speedup vs matterport | backbone (s) | " \
           "mask head (s) | mold + unmold (s) |" in section
    assert "| torch | cpu | 12 | 2.00 | 1.50x | 1.000 | 0.300 | -0.010 |" in section
    assert "| tf | cpu | 12 | 2.50 | 1.20x | 0.900 | 0.400 | -0.010 |" in section
    assert "| matterport | cpu | 12 | 3.00 | 1.00x | 1.200 | 0.500 | -0.010 |" in section
    rows = report.maskrcnn_rows(report.rows_by_group(results))
    assert report.plot_maskrcnn_stages(report.rows_by_group(results), tmp_path / "stages.png")
    assert len(rows) == 3 and (tmp_path / "stages.png").stat().st_size > 0


def test_feature_no_maskrcnn_section_without_its_cases():
    assert "Mask R-CNN detect()" not in report.render(json.loads(SMALL.read_text()))


def _caffe_results():
    results = json.loads(SMALL.read_text())
    for name, median, stages in (("impls.caffe", 2.1, {"fc6": 0.4, "conv1_2": 0.3, "relu1_1": 0.01}),
                                 ("opencv", 2.8, {"fc6": 0.7, "conv1_2": 0.29, "pool1": 0.02}),
                                 ("torch", 3.4, {})):
        results["benchmarks"].append({
            "name": f"test_caffe_fcn8s[{name}]", "group": "caffe fcn8s 500x500",
            "stats": {"median": median, "iqr": 0.1, "rounds": 5},
            "extra_info": {"op": "caffe_fcn", "backend": name, "device": "cpu", "case": "500x500", "threads": 2,
                           "checked_against": "opencv", "max_error": 6e-6, "stage_s": stages}})
    return results


def test_feature_report_compares_the_caffe_fcn_with_opencv_layer_by_layer():
    section = report.render(_caffe_results()).split("## The authors' FCN-8s from its Caffe files, against OpenCV's "
                                                    "dnn\n", 1)[1].split("\n## ")[0]
    assert "| impls.caffe | 2.10 | 0.10 | 5 | 1.33x | opencv | 6.0e-06 |" in section
    assert "| opencv | 2.80 | 0.10 | 5 | 1.00x | opencv | 6.0e-06 |" in section
    assert "| torch | 3.40 | 0.10 | 5 | 0.82x | opencv | 6.0e-06 |" in section
    assert "| layer | impls.caffe | opencv |" in section  # only the arms with a breakdown
    assert "| fc6 | 0.400 | 0.700 |" in section and "| pool1 | n/a | 0.020 |" in section
    assert "| the other layers | 0.000 | 0.000 |" in section


def _width_gradient_results(variants=(("forward", "native", 0.2), ("backward-values", "native", 0.6),
                                      ("backward-widths", "native", 1.6), ("backward-widths", "torch", 12.0))):
    results = json.loads(SMALL.read_text())
    case = "astronaut-500x375-21labels-5it"
    for variant, backend, median in variants:
        results["benchmarks"].append({
            "name": f"test_crf_width_gradient_cost[{variant}-{backend}-cpu]", "group": f"crf_width_gradient {case}",
            "stats": {"median": median, "iqr": 0.01, "rounds": 3},
            "extra_info": {"op": "crf_width_gradient", "case": case, "variant": variant, "backend": backend,
                           "device": "cpu", "pixels": 187500, "labels": 21, "iterations": 5}})
    return results


def _width_gradient_section(results):
    markdown = report.render(results)
    return markdown.split("## Dense CRF width gradients: cost relative to the forward pass\n", 1)[1].split("\n## ")[0]


def test_feature_report_sets_width_gradient_costs_against_the_forward():
    section = _width_gradient_section(_width_gradient_results())
    rows = [line for line in section.splitlines() if line.startswith("| astronaut")]
    assert rows == ["| astronaut-500x375-21labels-5it | forward | native-cpu | 200.0 | 10.0 | 3 | 1.00x |",
                    "| astronaut-500x375-21labels-5it | backward-values | native-cpu | 600.0 | 10.0 | 3 | 3.00x |",
                    "| astronaut-500x375-21labels-5it | backward-widths | native-cpu | 1600.0 | 10.0 | 3 | 8.00x |",
                    "| astronaut-500x375-21labels-5it | backward-widths | torch-cpu | 12000.0 | 10.0 | 3 | 60.00x |"]


def test_feature_width_gradient_rows_stay_out_of_the_backend_tables():
    """Their rows share a backend and differ by variant, which only their own section shows."""
    assert "## crf_width_gradient" not in report.render(_width_gradient_results())


def test_feature_width_gradient_ratio_is_na_without_the_forward():
    section = _width_gradient_section(_width_gradient_results(variants=(("backward-widths", "native", 1.6),)))
    assert "| backward-widths | native-cpu | 1600.0 | 10.0 | 3 | n/a |" in section


def test_feature_no_width_gradient_section_without_its_cases():
    assert "Dense CRF width gradients" not in report.render(json.loads(SMALL.read_text()))
