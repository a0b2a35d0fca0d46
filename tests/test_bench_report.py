"""The benchmark report shows the numbers of the JSON it was rendered from."""

import importlib.util
import json
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).parent.parent
SMALL = ROOT / "tests" / "data" / "benchmark_small.json"


def _load_report_module():
    # bench/ is a folder of the checkout, not part of the installed package.
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "bench" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


report = _load_report_module()


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


def test_smoke_command_line_writes_the_report(tmp_path):
    output = tmp_path / "nested" / "report.md"
    assert report.main([str(SMALL), "--output", str(output)]) == 0
    assert output.read_text() == report.render(json.loads(SMALL.read_text()))


def test_exception_not_a_benchmark_file(tmp_path):
    bogus = tmp_path / "bogus.json"
    bogus.write_text('{"results": []}')
    with pytest.raises(ValueError, match="not a pytest-benchmark JSON file"):
        report.load(bogus)
