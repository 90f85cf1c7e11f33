"""The whole built-in smoke suite through the CLI, with a short budget, and its report."""

from __future__ import annotations

import itertools
import json
import sys
from importlib import resources

import pandas as pd
import pytest

from benchsuite.cli import main
from benchsuite.contracts.task import TASKS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@pytest.mark.slow
def test_smoke_suite_end_to_end(tmp_path, capsys, report_table_rows, png_magic):
    smoke = tomllib.loads(resources.files("benchsuite.suites").joinpath("smoke.toml").read_text(encoding="utf-8"))
    labels = [o if isinstance(o, str) else o.get("label", o["name"]) for o in smoke["optimizers"]]
    tasks = TASKS.names() if smoke["tasks"] == "all" else smoke["tasks"]
    combos = set(itertools.product(tasks, smoke["activations"], labels))
    results = tmp_path / "smoke"

    code = main(["run", "--suite", "smoke", "--steps", "10", "--results", str(results)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Traceback" not in out + err

    records = [json.loads(p.read_text()) for p in results.glob("*.json")]
    assert len(records) == len(combos) * len(smoke["seeds"])
    assert {(r["spec"]["task"], r["spec"]["activation"], r["spec"].get("optimizer_label") or r["spec"]["optimizer"])
            for r in records} == combos
    assert all(r["spec"]["budget"] == {"steps": 10} for r in records)
    bad = [(r["spec"]["task"], r["spec"]["activation"], r["spec"]["optimizer"], r["status"], r["reason"])
           for r in records if r["status"] == "failed"]
    assert not bad, f"runs failed (an exception, not a divergence): {bad}"

    report = results / "report"
    assert sorted(report_table_rows((report / "report.md").read_text())) == sorted(combos)
    comparison = pd.read_csv(report / "comparison.csv")
    assert set(zip(comparison.task, comparison.activation, comparison.optimizer)) == combos
    assert (report / "loss_vs_step.png").read_bytes()[:8] == png_magic

    # Resuming the finished suite does nothing.
    code = main(["run", "--suite", "smoke", "--steps", "10", "--results", str(results), "--no-report"])
    out, _ = capsys.readouterr()
    assert code == 0
    assert f"skipped {len(records)} already finished" in out
