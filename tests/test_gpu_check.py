"""benchmarks/gpu_check.py keeps working on machines without a GPU (its CPU mode), so a GPU loan is never wasted."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
gpu_check = pytest.importorskip("benchmarks.gpu_check")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU mode is for machines without a GPU")
def test_refuses_without_gpu_unless_allowed(tmp_path, capsys):
    assert gpu_check.main(["--out", str(tmp_path / "g.md")]) == 2
    assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU mode is for machines without a GPU")
def test_cpu_mode_writes_every_section(tmp_path):
    out = tmp_path / "gpu_check.md"
    assert gpu_check.main(["--allow-cpu", "--out", str(out), "--rounds", "1", "--agreement-steps", "2"]) == 0
    text = out.read_text()
    assert "## 2. cpu vs CPU" in text and "## 4. Step time" in text and "FAILED" not in text
    for label, _, _ in gpu_check.COLUMNS:  # every column in the agreement and the step tables
        assert text.count(f"| {label} |") == 2, label
    assert "| kfac |" in text and "| gradient | " in text
