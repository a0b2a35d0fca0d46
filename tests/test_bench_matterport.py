"""The benchmarks' matterport arm (bench/matterport.py): where its environment is found, and a
worker that cannot start fails with its exit status and its stderr rather than hanging. The
protocol itself runs against matterport in `tox -e matterport` (tests/test_matterport_oracle.py)."""

import sys

import pytest

from bench import matterport


def test_feature_matterport_python_follows_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("IMPLS_MATTERPORT_PYTHON", sys.executable)
    assert matterport.matterport_python() == (sys.executable, None)
    missing = tmp_path / "python"
    monkeypatch.setenv("IMPLS_MATTERPORT_PYTHON", str(missing))
    assert matterport.matterport_python() == (None, f"IMPLS_MATTERPORT_PYTHON={missing} does not exist")


def test_feature_matterport_python_names_the_tox_env_when_absent(monkeypatch, tmp_path):
    monkeypatch.delenv("IMPLS_MATTERPORT_PYTHON", raising=False)
    monkeypatch.setattr(matterport, "MATTERPORT_ENV", matterport.ROOT / ".tox" / "no-such-env" / "bin" / "python")
    python, reason = matterport.matterport_python()
    assert python is None and "python3 -m tox -e matterport --notest" in reason


def test_exception_a_worker_without_matterport_reports_its_exit(tmp_path):
    pytest.importorskip("tensorflow")
    try:
        import tf_keras  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("this interpreter has tf_keras: the worker would start")
    with pytest.raises(RuntimeError, match=r"(?s)matterport's worker exited \(code 1\); its stderr ends:\n.*tf_keras"):
        matterport.MatterportWorker(sys.executable, 1, tmp_path / "stderr.log", size=256)
