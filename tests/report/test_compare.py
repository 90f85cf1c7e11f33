"""``benchsuite compare BASE NEW``: cells matched across two results directories, regressions flagged."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from benchsuite.cli import main
from benchsuite.config.spec import Budget, RunSpec
from benchsuite.errors import ConfigError, ResultsError
from benchsuite.records.record import RunRecord, Status
from benchsuite.records.store import ResultStore
from benchsuite.report.compare import TOO_FEW, compare_results, compare_values, step_durations

SGD_CELL = "digits_mlp/tiny/relu/sgd"
ADAM_CELL = "digits_mlp/tiny/relu/adam"


@pytest.fixture(scope="module")
def real_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four real tiny runs (digits, relu, sgd and adam × seeds 0, 1; 30 steps), written by the store."""
    import torch

    from benchsuite.run.runner import run

    root = tmp_path_factory.mktemp("compare") / "base"
    store = ResultStore(root)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for optimizer in ("sgd", "adam"):
            for seed in (0, 1):
                spec = RunSpec(task="digits_mlp", activation="relu", optimizer=optimizer, seed=seed, size="tiny",
                               budget=Budget(steps=30), eval_every=10)
                store.write(run(spec))
    finally:
        torch.set_num_threads(threads)
    return root


def _copy(src: Path, dst: Path, change: Callable[[RunRecord], RunRecord | None] = lambda r: r) -> Path:
    """Copy every record of ``src`` to ``dst`` through the RunRecord API, changed by ``change`` (None: left out)."""
    records, problems = ResultStore(src, create=False).records()
    assert not problems
    store = ResultStore(dst)
    for rec in records:
        out = change(rec)
        if out is not None:
            store.write(out)
    return dst


def _slowed(rec: RunRecord, factor: float = 2.0) -> RunRecord:
    """The record as if every optimizer step had taken ``factor`` times as long (all times scaled alike)."""
    log = {**rec.step_log, "time": [t * factor for t in rec.step_log["time"]]}
    evals = [{**e, "time": e["time"] * factor} for e in rec.evals]
    ttt = None if rec.time_to_target is None else {**rec.time_to_target,
                                                  "seconds": rec.time_to_target["seconds"] * factor}
    return replace(rec, step_log=log, evals=evals, train_seconds=rec.train_seconds * factor, time_to_target=ttt)


def _hand(seed: int, final_loss: float, *, optimizer: str = "sgd", status: str = "completed",
          step_seconds: float = 0.002, steps: int = 20, budget: int = 20) -> RunRecord:
    """A small hand-made record: ``steps`` logged steps of about ``step_seconds`` each, two evaluations."""
    spec = RunSpec(task="digits_mlp", activation="relu", optimizer=optimizer, seed=seed, size="tiny",
                   budget=Budget(steps=budget))
    rng = np.random.default_rng(seed)
    durations = step_seconds * (1 + 0.05 * rng.random(steps))  # (steps,)
    times = np.cumsum(durations).tolist()
    return RunRecord(
        run_id=spec.run_id, spec=spec, status=status, reason="budget" if status == "completed" else "loss is nan",
        steps=steps, train_seconds=times[-1], wall_seconds=1.0,
        step_log={"step": list(range(1, steps + 1)), "loss": [1.0] * steps, "time": times},
        evals=[{"step": 0, "time": 0.0, "epoch": 0.0, "train_loss": 3.0, "valid_loss": 3.1},
               {"step": steps, "time": times[-1], "epoch": 1.0, "train_loss": final_loss,
                "valid_loss": final_loss + 0.5}],
        provenance={"git_commit": "abc", "device": "cpu", "host": "h", "versions": {"torch": "x"}})


def _store(root: Path, records: list[RunRecord]) -> Path:
    store = ResultStore(root)
    for rec in records:
        store.write(rec)
    return root


def _compare(capsys: pytest.CaptureFixture[str], base: Path, new: Path, *extra: str) -> tuple[int, str, str]:
    code = main(["compare", str(base), str(new), *extra])
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------------------
# Through the CLI, on real records
# --------------------------------------------------------------------------------------


def test_a_directory_against_itself_has_no_regressions(real_results, tmp_path, capsys):
    code, out, err = _compare(capsys, real_results, real_results, "--out", str(tmp_path / "cmp"))
    assert code == 0, err
    assert "no regressions" in out and "2 common cells" in out
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "**No regressions** in 2 common cells" in md and "REGRESSION" not in md
    assert md.count("| ok |") == 2 and "×1 (p=0.5)" in md  # identical step times: ratio 1, no evidence either way
    html = (tmp_path / "cmp" / "compare.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "<table" in html and "#f8d7da" not in html


def test_a_slowed_copy_regresses_in_the_slowed_cell_only(real_results, tmp_path, capsys):
    slow = _copy(real_results, tmp_path / "slow", lambda r: _slowed(r) if r.spec.optimizer == "sgd" else r)
    assert ResultStore(slow, create=False).records()[1] == []  # the rewritten files are valid records
    code, out, err = _compare(capsys, real_results, slow, "--out", str(tmp_path / "cmp"))
    assert code == 1, err
    assert SGD_CELL in out and ADAM_CELL not in out and "1 regressed" in out
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "**1 of 2 common cells regressed**" in md
    line = next(x for x in md.splitlines() if x.startswith(f"- **{SGD_CELL}**"))
    assert "step time ×2 " in line and "p=" in line
    rows = {x.split(" | ")[3]: x for x in md.splitlines() if x.startswith("| digits_mlp")}
    assert "**REGRESSION: time**" in rows["sgd"] and rows["adam"].endswith("| ok |")
    assert "#f8d7da" in (tmp_path / "cmp" / "compare.html").read_text()  # the regressed row is highlighted
    # the other way round it is a significant improvement, not a regression
    code, out, _ = _compare(capsys, slow, real_results, "--out", str(tmp_path / "cmp2"))
    assert code == 0 and "1 improved" in out


def test_a_diverged_seed_is_a_status_regression(real_results, tmp_path, capsys):
    def diverge(rec: RunRecord) -> RunRecord:
        if rec.spec.optimizer == "adam" and rec.spec.seed == 1:
            return replace(rec, status=Status.DIVERGED, reason="non-finite loss nan at step 12")
        return rec

    new = _copy(real_results, tmp_path / "new", diverge)
    code, out, err = _compare(capsys, real_results, new, "--out", str(tmp_path / "cmp"))
    assert code == 1, err
    assert ADAM_CELL in out and "seed 1: completed → diverged" in out
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "2/2 → 1/2 (1 diverged)" in md and "**REGRESSION: status**" in md


def test_cells_only_in_one_directory_are_added_or_removed(real_results, tmp_path, capsys):
    new = _copy(real_results, tmp_path / "new", lambda r: None if r.spec.optimizer == "adam" else r)
    extra = RunSpec(task="digits_mlp", activation="relu", optimizer="rmsprop", size="tiny", budget=Budget(steps=30))
    ResultStore(new).write(replace(ResultStore(real_results, create=False).records()[0][0], run_id=extra.run_id,
                                   spec=extra))
    code, out, err = _compare(capsys, real_results, new)
    assert code == 0, err
    assert "1 cell(s) only in NEW, 1 only in BASE" in out
    md = (new / f"compare-vs-{real_results.name}" / "compare.md").read_text()  # the default --out
    added = md.split("## Added cells (only in NEW)")[1].split("##")[0]
    removed = md.split("## Removed cells (only in BASE)")[1].split("##")[0]
    assert "digits_mlp/tiny/relu/rmsprop" in added and ADAM_CELL in removed


# --------------------------------------------------------------------------------------
# Losses, on hand-made records
# --------------------------------------------------------------------------------------


def test_a_loss_regression_with_five_seeds_is_tested(tmp_path, capsys):
    base = _store(tmp_path / "base", [_hand(s, 0.50 + 0.01 * s) for s in range(5)])
    new = _store(tmp_path / "new", [_hand(s, 0.60 + 0.01 * s) for s in range(5)])
    code, out, err = _compare(capsys, base, new, "--out", str(tmp_path / "cmp"))
    assert code == 1, err
    assert SGD_CELL in out and "final train loss +19.2% (0.52 → 0.62, p=0.004)" in out
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "**REGRESSION: final loss, best loss**" in md and "p=0.004" in md  # 1/252: the exact test's floor
    # under the threshold it is not a regression, however significant
    code, _, _ = _compare(capsys, base, new, "--threshold", "0.25", "--out", str(tmp_path / "cmp2"))
    assert code == 0


def test_two_seeds_flag_a_loss_change_only_when_the_ranges_are_apart(tmp_path, capsys):
    base = _store(tmp_path / "base", [_hand(0, 0.50), _hand(1, 0.60)])
    apart = _store(tmp_path / "apart", [_hand(0, 0.70), _hand(1, 0.80)])
    overlap = _store(tmp_path / "overlap", [_hand(0, 0.55), _hand(1, 1.00)])
    code, out, _ = _compare(capsys, base, apart, "--out", str(tmp_path / "c1"))
    assert code == 1 and "too few seeds: apart" in out
    code, _, _ = _compare(capsys, base, overlap, "--out", str(tmp_path / "c2"))
    md = (tmp_path / "c2" / "compare.md").read_text()
    assert code == 0 and "+40.9% (too few seeds: overlap)" in md  # mean up 41%, but one seed is better than BASE's


def test_mixed_cells_are_split_alike_in_both_directories(tmp_path, capsys):
    def runs(loss: float) -> list[RunRecord]:
        return [_hand(s, loss, budget=b) for s in (0, 1) for b in (5, 6)]

    base, new = _store(tmp_path / "base", runs(0.5)), _store(tmp_path / "new", runs(0.5))
    comparison = compare_results(base, new, write=False)
    assert [c.cell[3] for c in comparison.cells] == ["sgd [budget.steps=5]", "sgd [budget.steps=6]"]
    assert comparison.notes and not comparison.added and not comparison.removed
    # a setting that differs only between the directories does not split: it is named per cell
    other = _store(tmp_path / "other", [_hand(s, 0.5, budget=7) for s in (0, 1)])
    one = _store(tmp_path / "one", [_hand(s, 0.5, budget=5) for s in (0, 1)])
    comparison = compare_results(one, other, write=False)
    assert [c.cell[3] for c in comparison.cells] == ["sgd"]
    assert comparison.cells[0].settings == ("budget.steps: 5 → 7",)
    assert "settings differ between BASE and NEW: budget.steps: 5 → 7" in comparison.markdown


def test_unreadable_files_are_listed_and_skipped(tmp_path, capsys):
    base = _store(tmp_path / "base", [_hand(0, 0.5)])
    new = _store(tmp_path / "new", [_hand(0, 0.5)])
    (new / "broken.json").write_text("{not json", encoding="utf-8")
    code, out, err = _compare(capsys, base, new, "--out", str(tmp_path / "cmp"))
    assert code == 0, err
    assert "skipped unreadable record" in out and "broken.json" in out
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "## Unreadable record files (skipped)" in md and "broken.json: not valid JSON" in md


def test_tuning_trials_are_left_out(tmp_path):
    trial = _hand(0, 9.0)
    trial = replace(trial, spec=replace(trial.spec, trial=0), run_id=replace(trial.spec, trial=0).run_id)
    base = _store(tmp_path / "base", [_hand(0, 0.5), trial])
    comparison = compare_results(base, base, write=False)
    assert len(comparison.cells) == 1 and comparison.base.records and len(comparison.base.records) == 1


# --------------------------------------------------------------------------------------
# Bad input: exit 2, one line naming the problem
# --------------------------------------------------------------------------------------


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    good = _store(tmp_path / "good", [_hand(0, 0.5)])
    code, _, err = _compare(capsys, tmp_path / "missing", good)
    assert code == 2 and err.strip() == f"benchsuite: error: BASE results directory not found: {tmp_path / 'missing'}"
    code, _, err = _compare(capsys, good, tmp_path / "missing")
    assert code == 2 and "NEW results directory not found" in err
    (tmp_path / "empty").mkdir()
    code, _, err = _compare(capsys, good, tmp_path / "empty")
    assert code == 2 and "no readable run records: nothing to compare" in err
    other = _store(tmp_path / "other", [_hand(0, 0.5, optimizer="adam")])
    code, _, err = _compare(capsys, good, other)
    assert code == 2 and "No common cells" in err and "BASE has digits_mlp/tiny/relu/sgd" in err
    assert "NEW has digits_mlp/tiny/relu/adam" in err and len(err.strip().splitlines()) == 1
    code, _, err = _compare(capsys, good, good, "--threshold", "-1")
    assert code == 2 and "Invalid threshold: -1.0" in err
    code, _, err = _compare(capsys, good, good, "--alpha", "1.5")
    assert code == 2 and "Invalid alpha: 1.5" in err
    with pytest.raises(ConfigError):
        compare_results(good, good, threshold=math.nan, write=False)
    with pytest.raises(ResultsError, match="is a file"):
        compare_results(good, next(good.glob("*.json")), write=False)


# --------------------------------------------------------------------------------------
# The pieces
# --------------------------------------------------------------------------------------


def test_step_durations_are_differences_of_the_cumulative_time():
    rec = _hand(0, 0.5, steps=3)
    rec = replace(rec, step_log={"step": [1, 2, 3], "loss": [1.0] * 3, "time": [0.5, 0.75, 1.75]})
    assert step_durations(rec).tolist() == [0.5, 0.25, 1.0]
    sparse = replace(rec, step_log={"step": [2, 4], "loss": [1.0] * 2, "time": [1.0, 1.5]})  # every 2nd step logged
    assert step_durations(sparse).tolist() == [0.5, 0.5, 0.25, 0.25]
    assert step_durations(replace(rec, step_log={"step": [], "loss": [], "time": []})).size == 0


def test_the_regression_rule():
    rule = {"threshold": 0.1, "alpha": 0.05}
    two = compare_values([1.0, 1.1], [1.3, 1.4], **rule)  # 2 vs 2: the test's floor is 1/6
    assert two.rule == TOO_FEW and two.apart and two.worse and math.isnan(two.p_worse)
    assert not compare_values([1.0, 1.5], [1.3, 1.8], **rule).worse  # +24%, but the ranges overlap
    three = compare_values([1.0, 1.1, 1.2], [1.3, 1.4, 1.5], **rule)  # 3 vs 3: floor 1/20 = alpha, the test runs
    assert three.rule == "mann-whitney" and three.p_worse == pytest.approx(0.05) and three.worse
    small = compare_values([1.0] * 5 + [1.01] * 5, [1.05] * 5 + [1.06] * 5, **rule)  # significant, under 10%
    assert small.p_worse < 0.01 and not small.worse
    better = compare_values([1.3, 1.4, 1.5, 1.6], [1.0, 1.05, 1.1, 1.15], **rule)
    assert better.better and not better.worse and better.relative == pytest.approx(-0.25, abs=0.01)
    none = compare_values([], [1.0], **rule)
    assert none.rule == "none" and not none.worse and none.test_text() == "–"
    # a time comparison: means of per-run values, tested on the pooled per-step durations
    t = compare_values([0.01, 0.01], [0.02, 0.02], base_test=[0.01] * 40, new_test=[0.02] * 40, unit="steps", **rule)
    assert t.ratio == pytest.approx(2) and t.rule == "mann-whitney" and t.worse and t.p_worse < 1e-10
