"""tools/gpu_check.sh: its --dry-run (CPU, nothing installed) runs every measurement of the check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = os.environ | {"PF_PYTHON": sys.executable, "PF_BENCH_CACHE": str(tmp_path / "cache")}
    cmd = ["bash", str(ROOT / "tools" / "gpu_check.sh"), "--dry-run", "--size", "2048x2048"]
    cmd += ["--out", str(out), "--threads", "1", "--train-tiles", "8", "--reference-tiles", "16"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((out / "gpu-check.json").read_text())
    assert report["environment"]["ctx"] == "cpu"
    tiles = report["predict"]["slide"]["tissue_tiles"]
    assert tiles > 0
    for precision in ("fp32", "fp16", "int8"):
        row = report["predict"][precision]
        assert row["tiles"] == tiles and row["tiles_per_s"] > 0
        assert row["providers"] == ["CPUExecutionProvider"]
        assert row["decode_share"] >= 0
        assert row["gpu_util_mean"] is None  # no nvidia-smi on the CPU dry run
        assert row["max_abs_prob_diff_vs_cpu_fp32"] < (1e-5 if precision == "fp32" else 0.05)
    assert report["mxnet_training"]["runs"] is True
    assert report["mxnet_training"]["samples_per_s"] > 0
    assert "fp16" in done.stdout and "mxnet training: runs" in done.stdout


def test_gpu_check_refuses_nothing_silently(tmp_path: Path) -> None:
    """A bad option fails the script (set -e), it does not print a half report."""
    env = os.environ | {"PF_PYTHON": sys.executable}
    cmd = ["bash", str(ROOT / "tools" / "gpu_check.sh"), "--dry-run", "--no-such-option"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and "--no-such-option" in done.stderr
