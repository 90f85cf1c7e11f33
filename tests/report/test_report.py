"""Reports: a row per task × activation × optimizer, CSV and PNG files, and the right numbers over seeds."""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from benchsuite.config.spec import Budget
from benchsuite.config.suite import parse_suite
from benchsuite.errors import ResultsError
from benchsuite.records.record import RunRecord
from benchsuite.records.store import ResultStore
from benchsuite.report.build import build_report
from benchsuite.report.frames import runs_frame
from benchsuite.report.tables import comparison_table, to_markdown
from benchsuite.run.executor import run_local

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GRID = {"tasks": ["digits_mlp", "curves_autoencoder"], "activations": ["relu", "tanh"],
        "optimizers": ["sgd", "adam"], "seeds": [0, 1]}


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    """A results directory of 16 real tiny runs (2 tasks × 2 activations × 2 optimizers × 2 seeds)."""
    root = tmp_path_factory.mktemp("results")
    suite = parse_suite("report-test", {**GRID, "size": "tiny", "eval_every": 2, "budget": {"steps": 4}})
    summary = run_local(suite.specs(), ResultStore(root))
    assert summary.statuses["completed"] == 16
    return root


def test_report_files_and_rows(results_dir, tmp_path, report_table_rows):
    out = tmp_path / "report"
    report = build_report(results_dir, out)
    expected = set(itertools.product(GRID["tasks"], GRID["activations"], GRID["optimizers"]))
    md = (out / "report.md").read_text()
    assert md == report.markdown
    assert "16 runs; tasks: curves_autoencoder, digits_mlp; device(s): cpu;" in md
    assert "tuning trials" not in md and "## Tuning" not in md
    rows = report_table_rows(md)
    assert sorted(rows) == sorted(expected)  # each combination exactly once
    comparison = pd.read_csv(out / "comparison.csv")
    assert set(zip(comparison.task, comparison.activation, comparison.optimizer)) == expected
    assert len(comparison) == len(expected)
    assert (comparison.runs == 2).all() and (comparison.completed == 2).all()  # numeric: counts, not "2/2"
    assert {"final_train_loss_mean", "final_train_loss_ci_low", "final_train_loss_ci_high", "final_train_loss_n"} <= set(
        comparison.columns)
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 16
    for name in ("loss_vs_time.png", "loss_vs_step.png"):
        path = out / name
        assert path in report.files
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 1000
    assert report.problems == []


def test_report_defaults_to_results_subdirectory_and_leaves_records_alone(results_dir):
    before = {p.name: p.read_bytes() for p in results_dir.glob("*.json")}
    report = build_report(results_dir, plots=False)
    assert report.files[0] == results_dir / "report" / "report.md"
    assert {p.name: p.read_bytes() for p in results_dir.glob("*.json")} == before


def test_report_lists_unreadable_records_and_keeps_the_rest(results_dir, tmp_path):
    broken_dir = tmp_path / "results"
    broken_dir.mkdir()
    for p in list(results_dir.glob("*.json"))[:3]:
        (broken_dir / p.name).write_bytes(p.read_bytes())
    (broken_dir / "garbage.json").write_text("{ nope")
    report = build_report(broken_dir, tmp_path / "out", plots=False)
    assert len(report.runs) == 3
    assert len(report.problems) == 1 and "garbage.json" in report.problems[0]
    assert "garbage.json" in report.markdown and "Unreadable record files" in report.markdown


def test_report_of_empty_directory(tmp_path):
    report = build_report(tmp_path, tmp_path / "out")
    assert "No readable run records" in report.markdown
    assert (tmp_path / "out" / "report.md").exists()


def test_report_of_missing_directory_raises(tmp_path):
    with pytest.raises(ResultsError, match="Results directory not found"):
        build_report(tmp_path / "missing")


def test_report_with_diverged_run_still_plots(tmp_path, make_spec):
    store = ResultStore(tmp_path / "results")
    run_local([make_spec(hparams={"lr": 1e6}, budget=Budget(steps=20)), make_spec(budget=Budget(steps=3))], store)
    report = build_report(store.root, tmp_path / "out")
    assert "Runs that did not complete" in report.markdown and "**diverged**" in report.markdown
    assert (tmp_path / "out" / "loss_vs_step.png").read_bytes()[:8] == PNG_MAGIC
    # one cell, two settings (lr and budget): two columns, not one column with 2 seeds
    assert sorted(report.table["runs ok"]) == ["0/1 (1 diverged)", "1/1"]
    assert "## How records were grouped" in report.markdown


# --------------------------------------------------------------------------------------
# Numbers: records built by hand
# --------------------------------------------------------------------------------------


def _hand_record(seed: int, final_loss: float, *, status: str = "completed", optimizer: str = "sgd",
                 ttt: float | None = None, steps: int = 10, train_seconds: float = 0.02,
                 hparams: dict | None = None, trial: int | None = None) -> RunRecord:
    spec = {"task": "digits_mlp", "activation": "relu", "optimizer": optimizer, "seed": seed, "size": "tiny",
            "hparams": hparams or {}}
    if trial is not None:
        spec["trial"] = trial
    return RunRecord(
        run_id=f"{optimizer}-{seed}" + ("" if trial is None else f"-trial{trial}"), spec=spec, status=status, reason="budget", steps=steps,
        train_seconds=train_seconds, wall_seconds=1.0,
        step_log={"step": [1, 2], "loss": [3.0, final_loss], "time": [0.01, 0.02]},
        evals=[{"step": 0, "time": 0.0, "epoch": 0.0, "train_loss": 3.0, "valid_loss": 3.1, "valid_error": 0.9},
               {"step": steps, "time": train_seconds, "epoch": 1.0, "train_loss": final_loss,
                "valid_loss": final_loss + 0.5, "valid_error": final_loss / 10}],
        target={"metric": "valid_error", "value": 0.05, "mode": "min"},
        time_to_target=None if ttt is None else {"step": 5, "seconds": ttt, "value": 0.04},
        provenance={"git_commit": "abc", "device": "cpu", "host": "h", "versions": {"torch": "x"}},
    )


def _row(table: pd.DataFrame, optimizer: str = "sgd") -> pd.Series:
    return table.set_index("optimizer").loc[optimizer]


def _t_half(values: list[float]) -> float:
    """Half-width of the two-sided Student-t 95% interval of the mean."""
    return stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def test_mean_and_interval_over_seeds():
    losses = [1.0, 2.0, 4.0]
    records = [_hand_record(s, v) for s, v in enumerate(losses)]
    row = _row(comparison_table(runs_frame(records)))
    mean, half = statistics.mean(losses), _t_half(losses)  # sample std (ddof=1), t with n - 1 = 2
    assert row["final train loss"] == f"{mean:.4g} [{mean - half:.4g}, {mean + half:.4g}]" == "2.333 [-1.461, 6.128]"
    assert row["final valid loss"] == f"{mean + 0.5:.4g} [{mean + 0.5 - half:.4g}, {mean + 0.5 + half:.4g}]"
    assert row["_final_train_loss"] == pytest.approx(mean)
    # best = min over the run's evals, and every run started at 3.0: min(3, 4) = 3 for the last seed
    assert row["best train loss"] == f"2 [{2 - _t_half([1.0, 2.0, 3.0]):.4g}, {2 + _t_half([1.0, 2.0, 3.0]):.4g}]"
    assert row["runs ok"] == "3/3"
    assert row["ms/step"] == "2 [2, 2]"  # 0.02 s / 10 steps, identical over seeds
    assert row["final target metric"].startswith("valid_error: 0.2333 [-0.1461, 0.6128]")


def test_single_seed_has_no_interval():
    row = _row(comparison_table(runs_frame([_hand_record(0, 1.25)])))
    assert row["final train loss"] == "1.25"


def test_diverged_runs_are_counted_but_not_averaged():
    records = [_hand_record(0, 1.0), _hand_record(1, 3.0), _hand_record(2, float("nan"), status="diverged")]
    row = _row(comparison_table(runs_frame(records)))
    assert row["runs ok"] == "2/3 (1 diverged)"
    assert row["final train loss"] == "2 [-10.71, 14.71]"  # t(0.975, 1) = 12.71


def test_time_to_target_is_mean_over_seeds_that_reached_it_with_k_of_n():
    records = [_hand_record(0, 1.0, ttt=1.0), _hand_record(1, 1.0, ttt=3.0), _hand_record(2, 1.0),
               _hand_record(3, 1.0, ttt=10.0)]
    row = _row(comparison_table(runs_frame(records)))
    mean, half = statistics.mean([1.0, 3.0, 10.0]), _t_half([1.0, 3.0, 10.0])
    assert row["time to target (s)"] == f"{mean:.3g} [{mean - half:.3g}, {mean + half:.3g}] (3/4)"
    assert row["steps to target"] == "5 [5, 5] (3/4)"
    nobody = _row(comparison_table(runs_frame([_hand_record(0, 1.0)])))
    assert nobody["time to target (s)"] == "– (0/1)" and nobody["steps to target"] == "– (0/1)"


def test_one_row_per_optimizer_and_winner_line(tmp_path):
    store = ResultStore(tmp_path)
    for rec in [_hand_record(0, 1.0), _hand_record(1, 1.2), _hand_record(0, 0.5, optimizer="adam"),
                _hand_record(1, 0.7, optimizer="adam")]:
        store.write(rec)
    report = build_report(tmp_path, tmp_path / "out", plots=False)
    assert list(report.table.optimizer) == ["adam", "sgd"]
    assert "lowest final train loss: adam (0.6)" in report.markdown


def test_to_markdown_escapes_pipes_and_hides_private_columns():
    md = to_markdown(pd.DataFrame({"a": ["x|y"], "_hidden": [1]}))
    assert md.splitlines() == ["| a |", "|---|", "| x\\|y |"]


# --------------------------------------------------------------------------------------
# Against the baseline: ratios from hand-made frames (known answers)


def _versus_frames(other_steps: int, other_seconds: float):
    runs = pd.DataFrame([
        dict(run_id="a", task="t", activation="relu", optimizer="adam", seed=0, status="completed",
             final_train_loss=0.5, train_seconds=1.0, steps=10),
        dict(run_id="k", task="t", activation="relu", optimizer="kfgn", seed=0, status="completed",
             final_train_loss=0.1, train_seconds=other_seconds, steps=other_steps),
    ])
    rows = [dict(run_id="a", step=s, loss=1.0 / s, time=0.1 * s) for s in range(1, 11)]
    rows += [dict(run_id="k", step=s, loss=0.5 / s, time=other_seconds * s / other_steps)
             for s in range(1, other_steps + 1)]
    return runs, pd.DataFrame(rows)


def test_versus_baseline_same_steps_uses_full_evaluation():
    from benchsuite.report.tables import versus_baseline

    runs, steps = _versus_frames(other_steps=10, other_seconds=4.0)
    row = versus_baseline(runs, steps, window=2).iloc[0]
    assert float(row["loss ratio per step"]) == pytest.approx(0.1 / 0.5, rel=1e-3)
    # Per second: within T = 1 s, kfgn finished steps 1-2 (0.4 s each), Adam all 10.
    expected = np.mean([0.5 / 1, 0.5 / 2]) / np.mean([1 / 9, 1 / 10])
    assert float(row["loss ratio per second"]) == pytest.approx(expected, rel=1e-3)
    assert row["per step"] == "wins (1/1)" and row["per second"] == "loses (0/1)"


def test_versus_baseline_time_budget_compares_at_the_common_step():
    """A time budget stopped kfgn after 4 steps and Adam after 10: per step compares step ≤ 4, not the ends."""
    from benchsuite.report.tables import versus_baseline

    runs, steps = _versus_frames(other_steps=4, other_seconds=1.0)
    row = versus_baseline(runs, steps, window=2).iloc[0]
    expected = np.mean([0.5 / 3, 0.5 / 4]) / np.mean([1 / 3, 1 / 4])  # = 0.5, not 0.1 / 0.5
    assert float(row["loss ratio per step"]) == pytest.approx(expected, rel=1e-3)


# --------------------------------------------------------------------------------------
# How each column was tuned, and the flag on tuned-vs-untuned comparisons


def _tuned_adam(store: ResultStore, *, winner_used: bool = True) -> None:
    """Three Adam trials (the best has lr 0.01) and two final Adam runs at the winner's (or another) lr."""
    for k, (lr, loss) in enumerate([(1e-3, 0.9), (1e-2, 0.4), (1e-1, 0.7)]):
        store.write(_hand_record(0, loss, optimizer="adam", hparams={"lr": lr, "beta1": 0.9 - 0.1 * k}, trial=k))
    final_hp = {"lr": 1e-2, "beta1": 0.8} if winner_used else {"lr": 3e-4}
    for seed, loss in [(0, 0.5), (1, 0.6)]:
        store.write(_hand_record(seed, loss, optimizer="adam", hparams=final_hp))


def _kfgn(store: ResultStore, *, tuned: bool) -> None:
    """Two final KFGN runs that beat Adam; with ``tuned``, at the best of two trials' settings."""
    if tuned:
        for k, damping in enumerate([1e-3, 1e-2]):
            store.write(_hand_record(0, 0.3 - 0.1 * k, optimizer="kfgn", hparams={"damping": damping, "lr": 1.0},
                                     trial=k))
    for seed, loss in [(0, 0.2), (1, 0.25)]:
        store.write(_hand_record(seed, loss, optimizer="kfgn", hparams={"damping": 1e-2, "lr": 1.0} if tuned else {}))


def _how_tuned(markdown: str) -> dict[str, list[str]]:
    """The rows of the *How each column was tuned* table, by optimizer."""
    section = markdown.split("## How each column was tuned", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("|")]
    header = rows[0]
    return {r[0]: dict(zip(header, r)) for r in rows[2:]}


def test_tuned_adam_against_untuned_kfgn_is_flagged(tmp_path):
    store = ResultStore(tmp_path / "results")
    _tuned_adam(store)
    _kfgn(store, tuned=False)
    md = build_report(store.root, tmp_path / "out", plots=False, tuning_metric="train_loss").markdown
    how = _how_tuned(md)
    assert how["adam"]["tuned"] == "yes" and how["adam"]["trials × seeds"] == "3 × 1 seed"
    assert how["adam"]["trial budget"] == "100 steps (the comparison's)"
    assert how["adam"]["metric"] == "train_loss" and how["adam"]["search space"] == "beta1, lr"
    assert how["kfgn"]["tuned"] == "no" and how["kfgn"]["metric"] == "–"
    assert how["kfgn"]["untuned settings"] == "registry defaults"
    task_section = md.split("## digits_mlp", 1)[1].split("\n## ", 1)[0]
    assert "| relu | kfgn† |" in task_section and "| relu | adam |" in task_section
    assert "lowest final train loss: kfgn† (0.225)" in task_section
    assert "† Untuned: `kfgn` ran with suite settings" in task_section and "not like-for-like" in task_section
    versus = md.split("## Against Adam", 1)[1].split("\n## ", 1)[0]
    assert "| digits_mlp | relu | kfgn† |" in versus and "† Untuned: `kfgn`" in versus


def test_untuned_baseline_against_tuned_column_is_flagged(tmp_path):
    store = ResultStore(tmp_path / "results")
    for seed, loss in [(0, 0.5), (1, 0.6)]:
        store.write(_hand_record(seed, loss, optimizer="adam"))
    _kfgn(store, tuned=True)
    md = build_report(store.root, tmp_path / "out", plots=False).markdown
    assert "| relu | adam† |" in md and "| relu | kfgn |" in md
    assert "| digits_mlp | relu | kfgn (vs adam†) |" in md and "† Untuned: `adam`" in md


def test_all_columns_tuned_gives_no_flag(tmp_path):
    store = ResultStore(tmp_path / "results")
    _tuned_adam(store)
    _kfgn(store, tuned=True)
    md = build_report(store.root, tmp_path / "out", plots=False).markdown
    how = _how_tuned(md)
    assert how["adam"]["tuned"] == how["kfgn"]["tuned"] == "yes"
    assert how["kfgn"]["trials × seeds"] == "2 × 1 seed" and how["kfgn"]["search space"] == "damping"
    assert "†" not in md and "Untuned" not in md


def test_no_trials_means_untuned_everywhere_and_no_flag(tmp_path):
    store = ResultStore(tmp_path / "results")
    for rec in [_hand_record(0, 1.0), _hand_record(0, 0.5, optimizer="adam", hparams={"lr": 3e-4})]:
        store.write(rec)
    md = build_report(store.root, tmp_path / "out", plots=False).markdown
    how = _how_tuned(md)
    assert set(how) == {"adam", "sgd"} and {r["tuned"] for r in how.values()} == {"no"}
    assert how["adam"]["untuned settings"] == "lr=0.0003" and how["sgd"]["untuned settings"] == "registry defaults"
    assert "No column was tuned" in md and "†" not in md


def test_column_whose_runs_did_not_use_a_trial_counts_as_untuned(tmp_path):
    """No trial finished, so the final runs fell back to the suite settings: not a tuned column."""
    store = ResultStore(tmp_path / "results")
    _tuned_adam(store, winner_used=False)
    _kfgn(store, tuned=True)
    md = build_report(store.root, tmp_path / "out", plots=False).markdown
    assert _how_tuned(md)["adam"]["tuned"] == "no" and "| relu | adam† |" in md


def test_format_budget():
    from benchsuite.report.tuned import format_budget

    assert format_budget(Budget(steps=2000, seconds=15.0)) == "2000 steps or 15 s"
    assert format_budget(Budget(epochs=2.5)) == "2.5 epochs"


def test_metric_that_selected_is_read_from_the_records(tmp_path):
    """Trials selected on train_loss, report asked for valid_loss: the table names train_loss and says why."""
    store = ResultStore(tmp_path / "results")
    for k, (train, valid) in enumerate([(0.2, 0.9), (0.5, 0.6)]):  # train_loss picks #0, valid_loss #1
        rec = _hand_record(0, train, optimizer="adam", hparams={"lr": 10.0 ** -(k + 2)}, trial=k)
        rec.evals[-1].update(valid_loss=valid, valid_error=valid / 10)
        store.write(rec)
    store.write(_hand_record(0, 0.3, optimizer="adam", hparams={"lr": 1e-2}))  # the runs used trial #0
    md = build_report(store.root, tmp_path / "out", plots=False, tuning_metric="valid_loss").markdown
    assert _how_tuned(md)["adam"]["metric"] == "train_loss"
    assert "not of `valid_loss` as given" in md
    tuning = md.split("## Tuning", 1)[1]
    assert "selected on train_loss" in tuning and "| best train_loss |" in tuning
    md = build_report(store.root, tmp_path / "out", plots=False, tuning_metric="train_loss").markdown
    assert _how_tuned(md)["adam"]["metric"] == "train_loss" and "as given" not in md
