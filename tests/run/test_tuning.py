"""The tuning protocol: search spaces, quasi-random trials, selection on validation, resume, report."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from benchsuite.cli import main
from benchsuite.config.spec import Budget, RunSpec
from benchsuite.config.suite import load_suite
from benchsuite.contracts.optimizer import OPTIMIZERS, OptimizerConfig, register_optimizer
from benchsuite.contracts.search_space import (
    Choice,
    LogUniform,
    OneMinusLogUniform,
    Uniform,
    parse_dimension,
    sample_trials,
)
from benchsuite.errors import ConfigError
from benchsuite.records.record import RunRecord
from benchsuite.run import executor
from benchsuite.run.tuning import TuningConfig, select, tuned_specs, tuning_summary

# --------------------------------------------------------------------------------------
# Search spaces

DIMENSIONS = [
    pytest.param(LogUniform(1e-4, 1e-1), 1e-4, 1e-1, id="log"),
    pytest.param(OneMinusLogUniform(1e-3, 0.5), 0.5, 1 - 1e-3, id="one_minus_log"),
    pytest.param(Uniform(-2.0, 3.0), -2.0, 3.0, id="uniform"),
]


@pytest.mark.parametrize("dim, lo, hi", DIMENSIONS)
def test_dimension_maps_unit_interval_onto_its_range(dim, lo, hi):
    values = sorted([dim.from_unit(0.0), dim.from_unit(1.0)])
    assert values == pytest.approx([lo, hi])
    mids = [dim.from_unit(u) for u in np.linspace(0, 1, 50)]
    assert all(lo - 1e-12 <= v <= hi + 1e-12 for v in mids)
    assert parse_dimension("x", dim.to_dict()) == dim  # suite-file form round-trips


def test_log_uniform_median_is_geometric_mean():
    assert LogUniform(1e-4, 1.0).from_unit(0.5) == pytest.approx(1e-2)


def test_choice_splits_the_unit_interval_evenly():
    c = Choice(("a", "b", "c", "d"))
    assert [c.from_unit(u) for u in (0.0, 0.24, 0.26, 0.74, 0.76, 0.9999)] == ["a", "a", "b", "c", "d", "d"]


@pytest.mark.parametrize(
    "spec, message",
    [
        pytest.param({"gaussian": [0, 1]}, "Unknown search dimension kind 'gaussian'", id="unknown-kind"),
        pytest.param({"log": [0.0, 1.0]}, "Invalid log range", id="log-nonpositive"),
        pytest.param({"log": [1.0, 0.1]}, "Invalid log range", id="log-reversed"),
        pytest.param({"uniform": [1.0]}, "need [low, high]", id="uniform-one-bound"),
        pytest.param({"one_minus_log": [0.1, 2.0]}, "need high <= 1", id="one-minus-above-one"),
        pytest.param({"choice": []}, "Invalid choice", id="empty-choice"),
        pytest.param([1e-3, 1e-1], "need a one-key table", id="bare-list"),
    ],
)
def test_bad_dimensions_are_named(spec, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_dimension("lr", spec)


def test_unknown_kind_lists_valid_kinds():
    with pytest.raises(ConfigError) as info:
        parse_dimension("lr", {"gaussian": [0, 1]})
    for kind in ("log", "one_minus_log", "uniform", "choice"):
        assert kind in str(info.value)


SPACE = {"lr": LogUniform(1e-4, 1.0), "momentum": OneMinusLogUniform(1e-2, 0.5)}


def test_trials_are_deterministic_and_seed_dependent():
    a, b, c = sample_trials(SPACE, 8, 0), sample_trials(SPACE, 8, 0), sample_trials(SPACE, 8, 1)
    assert a == b
    assert a != c


def test_trials_do_not_depend_on_space_order():
    reordered = dict(reversed(list(SPACE.items())))
    assert sample_trials(reordered, 8, 3) == sample_trials(SPACE, 8, 3)


def test_trials_keep_fixed_values_and_override_sampled_ones():
    trials = sample_trials(SPACE, 4, 0, fixed={"nesterov": True, "lr": 123.0})
    assert all(t["nesterov"] is True for t in trials)
    assert all(1e-4 <= t["lr"] <= 1.0 for t in trials)  # the sampled value replaces the fixed one


def test_trials_are_low_discrepancy():
    """16 scrambled-Halton points put exactly one learning rate in each 1/16 of the log range
    (i.i.d. sampling would do so with probability 16!/16^16 ≈ 1e-6)."""
    trials = sample_trials({"lr": LogUniform(1e-4, 1.0)}, 16, seed=7)
    u = np.log10([t["lr"] for t in trials]) / 4 + 1  # back to the unit interval
    assert sorted(np.floor(u * 16).astype(int).tolist()) == list(range(16))


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_has_a_valid_search_space(name):
    entry = OPTIMIZERS.get(name)
    assert entry.search_space, f"{name} has no search space: it could not be tuned"
    for hparams in sample_trials(entry.search_space, 8, 0):
        entry.config(hparams)  # every sampled setting is a valid configuration


def test_search_space_naming_unknown_hyperparameter_is_rejected():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Cfg(OptimizerConfig):
        lr: float = 0.1

    with pytest.raises(ConfigError, match=r"unknown hyperparameter\(s\) \['lrr'\]"):
        register_optimizer("bad_space_demo", Cfg, search_space={"lrr": {"log": [1e-3, 1.0]}})(lambda m, l, c: None)
    assert "bad_space_demo" not in OPTIMIZERS.names()


# --------------------------------------------------------------------------------------
# Selection on validation (records made by hand: the scores are known exactly)


def _trial_record(trial: int, valid_loss: float, *, seed: int = 0, status: str = "completed",
                  label: str | None = None, lr: float | None = None) -> RunRecord:
    spec = RunSpec(task="digits_mlp", activation="relu", optimizer="sgd", seed=seed, size="tiny", trial=trial,
                   hparams={"lr": lr if lr is not None else 0.01 * (trial + 1)}, optimizer_label=label)
    return RunRecord(run_id=spec.run_id, spec=spec, status=status, reason="budget", steps=5,
                     evals=[{"step": 0, "valid_loss": 9.0, "train_loss": 9.0},
                            {"step": 5, "valid_loss": valid_loss, "train_loss": 0.0}])


KEY = ("digits_mlp", "tiny", "relu", "sgd")


def test_selection_picks_lowest_final_validation_score():
    records = [_trial_record(0, 0.9), _trial_record(1, 0.3), _trial_record(2, 0.5)]
    sel = select(records, "valid_loss")[KEY]
    assert sel.trial == 1 and sel.hparams == {"lr": 0.02}
    assert sel.best == 0.3


def test_selection_uses_final_not_training_loss():
    rec = _trial_record(0, 0.9)
    rec.evals[-1]["train_loss"] = -1.0  # best on training: must not matter
    sel = select([rec, _trial_record(1, 0.5)], "valid_loss")[KEY]
    assert sel.trial == 1


def test_selection_averages_over_trial_seeds():
    records = [_trial_record(0, 0.1, seed=0), _trial_record(0, 0.9, seed=1),  # mean 0.5
               _trial_record(1, 0.4, seed=0), _trial_record(1, 0.4, seed=1)]  # mean 0.4
    assert select(records, "valid_loss")[KEY].trial == 1


@pytest.mark.parametrize("status, value", [("diverged", 0.01), ("timeout", 0.01), ("completed", math.nan),
                                           ("completed", math.inf)],
                         ids=["diverged", "timeout", "nan-score", "inf-score"])
def test_broken_trials_never_win(status, value):
    records = [_trial_record(0, value, status=status), _trial_record(1, 0.7)]
    sel = select(records, "valid_loss")[KEY]
    assert sel.trial == 1
    assert math.isinf(sel.scores[0])


def test_one_bad_seed_disqualifies_the_trial():
    records = [_trial_record(0, 0.01, seed=0), _trial_record(0, 0.01, seed=1, status="diverged"),
               _trial_record(1, 0.5, seed=0), _trial_record(1, 0.5, seed=1)]
    assert select(records, "valid_loss")[KEY].trial == 1


def test_ties_go_to_the_lower_trial_index():
    assert select([_trial_record(3, 0.2), _trial_record(1, 0.2)], "valid_loss")[KEY].trial == 1


def test_unfinished_trial_cannot_win():
    done = [_trial_record(0, 0.5, seed=0), _trial_record(1, 0.1, seed=0)]
    expected = [r.spec for r in done]
    expected.append(replace(expected[1], seed=1))  # trial 1 still lacks its second seed
    sel = select(done, "valid_loss", expected=expected)[KEY]
    assert sel.trial == 0 and math.isnan(sel.scores[1])


def test_no_finite_trial_keeps_suite_hyperparameters():
    records = [_trial_record(0, 1.0, status="diverged")]
    sel = select(records, "valid_loss")[KEY]
    assert sel.trial is None
    config = TuningConfig(optimizers=("sgd",))
    final = RunSpec(task="digits_mlp", activation="relu", optimizer="sgd", size="tiny", hparams={"lr": 0.5})
    assert tuned_specs([final], {KEY: sel}, config)[0].hparams == {"lr": 0.5}


def test_unknown_metric_names_the_valid_columns():
    with pytest.raises(ConfigError, match="valid_errr.*Valid: train_loss, valid_loss$"):
        select([_trial_record(0, 0.5)], "valid_errr")


def test_selection_on_a_training_metric():
    """The paper suite selects on training error at its own budget: a train_* column selects too."""
    records = [_trial_record(0, 0.1), _trial_record(1, 0.9)]
    records[0].evals[-1]["train_loss"] = 0.4
    records[1].evals[-1]["train_loss"] = 0.2
    assert select(records, "valid_loss")[KEY].trial == 0
    sel = select(records, "train_loss")[KEY]
    assert sel.trial == 1 and sel.best == 0.2


@pytest.mark.parametrize("metric", ["train_loss", "valid_loss", "train_error", "valid_error"])
def test_training_and_validation_metrics_are_accepted(metric):
    assert TuningConfig(optimizers=("sgd",), metric=metric).metric == metric


@pytest.mark.parametrize("metric", ["test_loss", "loss", "valid", 3])
def test_other_metrics_are_refused_with_the_choices(metric):
    with pytest.raises(ConfigError, match=r"Invalid tuning metric.*train_loss, valid_loss.*train_error"):
        TuningConfig(optimizers=("sgd",), metric=metric)


def test_missing_training_metric_names_train_and_valid_columns():
    rec = _trial_record(0, 0.5)
    rec.evals[-1].update(test_loss=0.3, train_error=0.1, valid_error=0.2)
    with pytest.raises(ConfigError, match="'train_eror'.*Valid: train_error, train_loss, valid_error, valid_loss$"):
        select([rec], "train_eror")


def test_summary_reports_winner_and_spread():
    records = [_trial_record(k, v, lr=lr) for k, (v, lr) in enumerate([(1.0, 0.1), (0.5, 0.2), (0.52, 0.3),
                                                                        (2.0, 0.4)])]
    records.append(_trial_record(4, 0.1, status="diverged"))
    row = tuning_summary(records).iloc[0]
    assert row["winner"] == "#1: lr=0.2"
    assert row["best valid_loss"] == "0.5"
    assert row["median valid_loss"] == f"{np.median([1.0, 0.5, 0.52, 2.0]):.4g}"
    assert row["worst finite"] == "2"
    assert row["within 10% of best"] == "50%"  # 0.5 and 0.52 of the four finite trials
    assert row["diverged/failed"] == 1
    assert row["trials"] == "4/5 finite"


# --------------------------------------------------------------------------------------
# Suite configuration


def _suite_file(tmp_path: Path, tuning: str, extra: str = "") -> Path:
    path = tmp_path / "tuned.toml"
    path.write_text(
        'tasks = ["digits_mlp"]\nactivations = ["relu"]\nsize = "tiny"\nseeds = [0, 1]\neval_every = 4\n'
        'optimizers = ["sgd", "adam", { name = "kfgn", label = "kfgn-kfra", hparams = { variant = "kfra" } }]\n'
        f'{extra}[budget]\nsteps = 8\n[tuning]\n{tuning}\n')
    return path


@pytest.mark.parametrize(
    "tuning, message",
    [
        pytest.param('optimizers = ["sgd"]\ntrials = 0', "Invalid tuning trials: 0", id="zero-trials"),
        pytest.param('optimizers = ["sgd"]\nmetric = "test_loss"', "Invalid tuning metric: 'test_loss'", id="test-metric"),
        pytest.param('optimizers = ["rmsprop"]', "does not run. Valid: ", id="column-not-in-suite"),
        pytest.param('optimizers = ["sgd"]\nbudgte = 3', r"Unknown tuning key\(s\) \['budgte'\]", id="typo-key"),
        pytest.param('optimizers = ["sgd"]\n[tuning.space.sgd]\nlrr = { log = [0.1, 1.0] }',
                     r"Unknown hyperparameter\(s\) \['lrr'\] in the search space of 'sgd'", id="space-typo"),
        pytest.param('optimizers = []', "Invalid tuning optimizers", id="no-optimizers"),
    ],
)
def test_bad_tuning_tables_are_named(tmp_path, tuning, message):
    with pytest.raises(ConfigError, match=message):
        load_suite(str(_suite_file(tmp_path, tuning)))


def test_trial_specs_cover_tuned_columns_only(tmp_path):
    suite = load_suite(str(_suite_file(tmp_path, 'optimizers = ["sgd", "kfgn-kfra"]\ntrials = 3\n'
                                                 'trial_seeds = [5, 6]\n[tuning.budget]\nsteps = 4')))
    trials = suite.trial_specs()
    assert len(trials) == 2 * 3 * 2  # columns × trials × trial seeds
    assert {t.display_optimizer for t in trials} == {"sgd", "kfgn-kfra"}
    assert {t.seed for t in trials} == {5, 6} and {t.trial for t in trials} == {0, 1, 2}
    assert all(t.budget == Budget(steps=4) and t.statistics == "none" for t in trials)
    kfra = [t for t in trials if t.display_optimizer == "kfgn-kfra"]
    assert all(t.hparams["variant"] == "kfra" for t in kfra)  # the column's fixed values are kept
    assert len({t.run_id for t in trials}) == len(trials)
    # A budget given on the command line replaces the trials' budget too.
    narrowed = suite.narrow(budget=Budget(steps=2))
    assert all(t.budget == Budget(steps=2) for t in narrowed.trial_specs())


def test_trials_without_a_budget_run_at_the_suites_own_budget(tmp_path):
    """No [tuning] budget: every trial runs at the budget of the final runs of its column."""
    suite = load_suite(str(_suite_file(tmp_path, 'optimizers = ["sgd", "kfgn-kfra"]\ntrials = 2')))
    assert {t.budget for t in suite.trial_specs()} == {Budget(steps=8)} == {s.budget for s in suite.specs()}
    narrowed = suite.narrow(budget=Budget(seconds=2.0))
    assert {t.budget for t in narrowed.trial_specs()} == {Budget(seconds=2.0)}


def test_trial_field_leaves_other_run_ids_unchanged():
    spec = RunSpec(task="digits_mlp", activation="relu", optimizer="sgd")
    assert "trial" not in spec.to_dict()
    assert replace(spec, trial=0).run_id != spec.run_id
    with pytest.raises(ConfigError, match="Invalid trial"):
        replace(spec, trial=-1)


# --------------------------------------------------------------------------------------
# End to end: real tiny runs through the CLI, selection checked against the records


def _records(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.glob("*.json"))]


def test_tuning_end_to_end_selects_best_on_validation_and_resumes(tmp_path, monkeypatch, capsys):
    path = _suite_file(tmp_path, 'optimizers = ["sgd", "adam"]\ntrials = 4\nseed = 3', extra="threads = 1\n")
    results = tmp_path / "results"
    assert main(["run", "--suite", str(path), "--results", str(results)]) == 0, capsys.readouterr().err

    records = _records(results)
    trials = [r for r in records if r["spec"].get("trial") is not None]
    finals = [r for r in records if r["spec"].get("trial") is None]
    assert len(trials) == 2 * 4  # sgd and adam, 4 trials, one trial seed
    assert len(finals) == 3 * 2  # three columns, two seeds
    for name in ("sgd", "adam"):
        mine = [r for r in trials if r["spec"]["optimizer"] == name]
        assert len({json.dumps(r["spec"]["hparams"], sort_keys=True) for r in mine}) == 4  # distinct settings
        scores = [r["evals"][-1]["valid_loss"] if r["status"] == "completed" else math.inf for r in mine]
        best = mine[int(np.argmin(scores))]["spec"]["hparams"]
        for final in (r for r in finals if r["spec"]["optimizer"] == name):
            assert final["spec"]["hparams"] == best, name
    kfgn = [r for r in finals if r["spec"]["optimizer"] == "kfgn"]
    assert all(r["spec"]["hparams"] == {"variant": "kfra"} for r in kfgn)  # untuned column: suite settings

    report = (results / "report" / "report.md").read_text()
    assert "## Tuning" in report and "6 runs (and 8 tuning trials); tasks: digits_mlp; device(s): cpu" in report
    assert (results / "report" / "tuning.csv").exists() and (results / "report" / "tuning_digits_mlp.png").exists()
    assert "trial" not in (results / "report" / "comparison.csv").read_text()

    # Resume: nothing is rerun ...
    calls: list[RunSpec] = []
    real_run = executor.run
    monkeypatch.setattr(executor, "run", lambda spec: calls.append(spec) or real_run(spec))
    assert main(["run", "--suite", str(path), "--results", str(results), "--no-report"]) == 0
    assert calls == []
    # ... and after an interruption (two trial records lost) exactly the missing trials run again.
    lost = [r for r in trials if r["spec"]["optimizer"] == "adam"][:2]
    for r in lost:
        (results / f"{r['run_id']}.json").unlink()
    assert main(["run", "--suite", str(path), "--results", str(results), "--no-report"]) == 0
    assert sorted(s.run_id for s in calls) == sorted(r["run_id"] for r in lost)


def test_report_of_an_interrupted_tuning_shows_the_trials(tmp_path):
    from benchsuite.records.store import ResultStore
    from benchsuite.report.build import build_report

    store = ResultStore(tmp_path / "results")
    for k, v in enumerate([0.9, 0.3]):
        store.write(_trial_record(k, v))
    report = build_report(tmp_path / "results", plots=False)
    assert "2 tuning trials so far" in report.markdown
    assert "#1: lr=0.02" in report.markdown


def test_summary_winner_is_what_the_final_runs_used():
    """Reported with another metric than the suite selected on, the table still names the trial that ran."""
    trials = [_trial_record(0, 0.2), _trial_record(1, 0.5)]
    final = RunSpec(task="digits_mlp", activation="relu", optimizer="sgd", size="tiny", hparams={"lr": 0.02})
    finals = [RunRecord(run_id=final.run_id, spec=final, status="completed", reason="budget")]
    row = tuning_summary(trials, finals=finals).iloc[0]
    assert row["winner"] == "#1: lr=0.02 (best on valid_loss: #0)"
    untuned = replace(final, hparams={"lr": 0.7})
    row = tuning_summary(trials, finals=[RunRecord(run_id=untuned.run_id, spec=untuned,
                                                    status="completed", reason="budget")]).iloc[0]
    assert row["winner"] == "no trial (ran its suite settings)"
