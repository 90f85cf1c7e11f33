"""run_suite: a tuned suite from Python (trials, selection, final runs), resumable, silent by default."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from benchsuite.config.spec import RunSpec
from benchsuite.config.suite import Suite, parse_suite
from benchsuite.errors import ConfigError, UnknownNameError
from benchsuite.records.record import RunRecord, Status
from benchsuite.records.store import ResultStore
from benchsuite.run.executor import SuiteSummary
from benchsuite.run.suite_run import Phase, SuiteProgress, run_suite
from benchsuite.run.tuning import select

TUNED = {"tasks": ["digits_mlp"], "activations": ["relu"], "size": "tiny", "seeds": [0, 1], "eval_every": 2,
         "optimizers": ["sgd", "adam"], "budget": {"steps": 4},
         "tuning": {"optimizers": ["sgd"], "trials": 3, "seed": 1}}


class Recorder(SuiteProgress):
    """Keeps every call, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def start_phase(self, phase: Phase, suite: Suite, specs: Sequence[RunSpec]) -> None:
        self.calls.append(("start", phase, len(specs)))

    def start_run(self, spec: RunSpec) -> None:
        self.calls.append(("run", spec.run_id))

    def end_run(self, spec: RunSpec, record: RunRecord | None) -> None:
        self.calls.append(("ran" if record is not None else "skipped", spec.run_id))

    def end_phase(self, phase: Phase, summary: SuiteSummary) -> None:
        self.calls.append(("end", phase, summary.ran, summary.skipped))


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tuned")
    suite = parse_suite("tuned", TUNED)
    progress = Recorder()
    return suite, root, run_suite(suite, root, progress=progress), progress


def test_trials_then_winners_then_final_runs(tuned_run):
    suite, root, result, _ = tuned_run
    assert len(result.trials) == 3 and {t.trial for t in result.trials} == {0, 1, 2}
    assert result.tuning.ran == 3 and result.runs.ran == 4  # (sgd, adam) × 2 seeds
    assert result.tuning.statuses[Status.COMPLETED] == 3 and result.runs.statuses[Status.COMPLETED] == 4
    store = ResultStore(root, create=False)
    (winner,) = select(store.records()[0], "valid_loss").values()
    assert winner.trial is not None
    for spec in result.finals:
        assert spec.trial is None
        if spec.optimizer == "sgd":
            assert dict(spec.hparams) == dict(winner.hparams)  # the final runs use the selected trial
        else:
            assert dict(spec.hparams) == {}  # untuned columns keep their suite settings
    assert [r.run_id for r in result.records()] == [s.run_id for s in result.finals]
    assert result.tuning_metric == "valid_loss" and result.name == "tuned"


def test_progress_sees_phases_and_runs_in_order(tuned_run):
    _, _, result, progress = tuned_run
    phases = [c for c in progress.calls if c[0] in ("start", "end")]
    assert phases == [("start", Phase.TUNING, 3), ("end", Phase.TUNING, 3, 0),
                      ("start", Phase.RUNS, 4), ("end", Phase.RUNS, 4, 0)]
    starts = [c[1] for c in progress.calls if c[0] == "run"]
    assert starts == [s.run_id for s in [*result.trials, *result.finals]]


def test_running_again_skips_everything(tuned_run):
    suite, root, first, _ = tuned_run
    again = run_suite(suite, ResultStore(root))  # no progress: silent
    assert again.tuning.ran == again.runs.ran == 0
    assert (again.tuning.skipped, again.runs.skipped) == (3, 4)
    assert [s.run_id for s in again.finals] == [s.run_id for s in first.finals]


def test_untuned_suite_has_no_tuning_phase(tmp_path):
    plain = {k: v for k, v in TUNED.items() if k != "tuning"}
    suite = parse_suite("plain", {**plain, "seeds": [0], "optimizers": ["sgd"]})
    result = run_suite(suite, tmp_path / "res")
    assert result.trials == [] and result.tuning is None
    assert result.runs.ran == 1 and (tmp_path / "res" / f"{result.finals[0].run_id}.json").exists()


@pytest.mark.parametrize("change, error", [
    pytest.param(lambda s: s.narrow(tasks=["digits"]), UnknownNameError, id="unknown-task"),
    pytest.param(lambda s: s.narrow(eval_every=0), ConfigError, id="bad-value"),
])
def test_bad_suite_raises_before_anything_is_written(tmp_path, change, error):
    with pytest.raises(error):
        run_suite(change(parse_suite("tuned", TUNED)), tmp_path / "res")
    assert not (tmp_path / "res").exists()


def test_bad_thread_count_raises_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match="Invalid threads: 0"):
        run_suite(parse_suite("tuned", TUNED), tmp_path / "res", threads=0)
    assert not (tmp_path / "res").exists()
