"""The command line, in-process (``benchsuite.cli.main``) plus one real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchsuite.cli import main
from benchsuite.config.suite import builtin_suites
from benchsuite.contracts.activation import ACTIVATIONS
from benchsuite.contracts.optimizer import OPTIMIZERS
from benchsuite.contracts.task import TASKS

SMALL_RUN = ["run", "--suite", "smoke", "--tasks", "digits_mlp", "--optimizers", "sgd", "--seeds", "0", "--steps", "5",
             "--workers", "1"]  # in this process: monkeypatched runs must not be pickled to workers


def invoke(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run the CLI in-process; argparse exits through SystemExit, which counts as a return code."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def test_list_prints_every_registered_name(capsys):
    code, out, err = invoke(["list"], capsys)
    assert code == 0, err
    for name in [*TASKS.names(), *ACTIVATIONS.names(), *OPTIMIZERS.names(), *builtin_suites()]:
        assert name in out, f"{name} missing from `benchsuite list`"
    for section in ("tasks", "activations", "optimizers", "suites"):
        assert section in out


@pytest.mark.parametrize(
    "what, registry",
    [pytest.param("tasks", TASKS, id="tasks"), pytest.param("optimizers", OPTIMIZERS, id="optimizers"),
     pytest.param("activations", ACTIVATIONS, id="activations")],
)
def test_list_one_section(capsys, what, registry):
    code, out, _ = invoke(["list", what], capsys)
    assert code == 0
    assert all(name in out for name in registry.names())
    assert "suites" not in out


def test_subprocess_list():
    proc = subprocess.run([sys.executable, "-m", "benchsuite", "list"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in ("digits_mlp", "curves_autoencoder", "relu", "maxout", "sgd", "adam", "rmsprop", "smoke"):
        assert name in proc.stdout
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------------------
# Bad input: exit 2, one line "benchsuite: error: ...", no traceback, nothing written
# --------------------------------------------------------------------------------------

BAD_INPUT = [
    pytest.param(["run", "--suite", "smoke", "--tasks", "digits"],
                 ["Unknown task 'digits'", "curves_autoencoder", "digits_mlp"], id="unknown-task"),
    pytest.param(["run", "--suite", "smoke", "--optimizers", "sgdd"],
                 ["Unknown optimizer 'sgdd'", "adam", "rmsprop", "sgd"], id="unknown-optimizer"),
    pytest.param(["run", "--suite", "smoke", "--activations", "relu6"],
                 ["Unknown activation 'relu6'", "leaky_relu", "maxout", "relu"], id="unknown-activation"),
    pytest.param(["run", "--suite", "smok"], ["Unknown suite 'smok'", "smoke"], id="unknown-suite"),
    pytest.param(["run", "--suite", "smoke", "--steps", "0"], ["Invalid budget steps: 0"], id="steps=0"),
    pytest.param(["run", "--suite", "smoke", "--steps", "-3"], ["Invalid budget steps: -3"], id="steps=-3"),
    pytest.param(["run", "--suite", "smoke", "--steps", "abc"], ["--steps", "abc"], id="steps=abc"),
    pytest.param(["run", "--suite", "smoke", "--seeds", "-1"], ["Invalid seed: -1"], id="seeds=-1"),
    pytest.param(["run", "--suite", "smoke", "--size", "huge"], ["Unknown size 'huge'", "default", "tiny"],
                 id="size=huge"),
    pytest.param(["run", "--suite", "smoke", "--device", "tpu"], ["Invalid device: tpu", "cpu"], id="device=tpu"),
    pytest.param(["run", "--suite", "smoke", "--eval-every", "0"], ["Invalid eval_every: 0"], id="eval-every=0"),
    pytest.param(["run", "--suite", "{tmp}/missing.toml"], ["Suite file not found"], id="missing-suite-file"),
    pytest.param(["run", "--suite", "{tmp}/budget5.toml"], ["budget"], id="suite-file-budget-not-a-table"),
    pytest.param(["report", "{tmp}/no-such-results"], ["Results directory not found", "no-such-results"],
                 id="report-missing-results"),
]


@pytest.mark.parametrize("argv, fragments", BAD_INPUT)
def test_bad_input_is_one_line_exit_2(capsys, tmp_path, monkeypatch, argv, fragments):
    monkeypatch.chdir(tmp_path)  # a default results/ directory would land here
    (tmp_path / "budget5.toml").write_text('tasks = ["digits_mlp"]\nbudget = 5\n')
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    results = tmp_path / "results-out"
    if argv[0] == "run":
        argv += ["--results", str(results)]
    code, out, err = invoke(argv, capsys)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("benchsuite: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in out + err
    assert not results.exists() and not (tmp_path / "results").exists()


# --------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------


def test_run_then_rerun_skips(capsys, tmp_path):
    results = tmp_path / "res"
    code, out, err = invoke([*SMALL_RUN, "--results", str(results)], capsys)
    assert code == 0, err
    assert "ran 3 (3 completed), skipped 0 already finished" in out
    records = sorted(results.glob("*.json"))
    assert len(records) == 3  # relu, leaky_relu, tanh
    specs = [json.loads(p.read_text())["spec"] for p in records]
    assert {s["activation"] for s in specs} == {"relu", "leaky_relu", "tanh"}
    assert all(s["budget"] == {"steps": 5} and s["seed"] == 0 and s["optimizer"] == "sgd" for s in specs)
    assert (results / "report" / "report.md").exists()
    mtimes = {p: p.stat().st_mtime_ns for p in records}

    code, out, err = invoke([*SMALL_RUN, "--results", str(results)], capsys)
    assert code == 0, err
    assert "ran 0 (nothing new), skipped 3 already finished" in out
    assert {p: p.stat().st_mtime_ns for p in records} == mtimes


def test_dry_run_writes_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "res"
    code, out, err = invoke([*SMALL_RUN, "--results", str(results), "--dry-run"], capsys)
    assert code == 0, err
    assert "3 runs would be written to" in out
    assert "digits_mlp-relu-sgd-seed0" in out
    assert not results.exists()
    assert list(tmp_path.iterdir()) == []


def test_report_command(capsys, tmp_path):
    results = tmp_path / "res"
    assert invoke([*SMALL_RUN, "--results", str(results), "--no-report"], capsys)[0] == 0
    assert not (results / "report").exists()
    out_dir = tmp_path / "rep"
    code, out, err = invoke(["report", str(results), "--out", str(out_dir), "--no-plots"], capsys)
    assert code == 0, err
    assert (out_dir / "report.md").exists() and (out_dir / "comparison.csv").exists()
    assert not list(out_dir.glob("*.png"))
    assert "report.md" in out


def test_diverged_run_is_reported_and_exit_is_0(capsys, tmp_path):
    suite = tmp_path / "wild.toml"
    suite.write_text('tasks = ["digits_mlp"]\nactivations = ["relu"]\noptimizers = ["sgd"]\nsize = "tiny"\n'
                     '[budget]\nsteps = 20\n[hparams.sgd]\nlr = 1e6\n')
    code, out, err = invoke(["run", "--suite", str(suite), "--results", str(tmp_path / "res"), "--no-report"],
                            capsys)
    assert code == 0, err  # a diverged run is an outcome, not an error of the suite
    assert "ran 1 (1 diverged)" in out
    assert "diverged digits_mlp-relu-sgd-seed0:" in " ".join(out.split())
    assert "Traceback" not in out + err


def test_version(capsys):
    code, out, _ = invoke(["--version"], capsys)
    assert code == 0 and out.startswith("benchsuite ")


def test_results_default_to_results_suite_name(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = invoke([*SMALL_RUN, "--dry-run"], capsys)
    assert code == 0
    assert str(Path("results") / "smoke") in out


def test_data_seed_flag_changes_the_run_ids(capsys, tmp_path):
    base = [*SMALL_RUN, "--results", str(tmp_path / "res"), "--dry-run"]
    _, default, _ = invoke(base, capsys)
    _, seeded, _ = invoke([*base, "--data-seed", "3"], capsys)
    ids = [{line.split()[0] for line in out.splitlines() if "digits_mlp-" in line} for out in (default, seeded)]
    assert len(ids[0]) == len(ids[1]) == 3 and not ids[0] & ids[1]


def test_task_breaking_its_contract_is_one_line_exit_2(capsys, tmp_path):
    """A plugin task with (N,) targets for an MSE loss on (N, 1) outputs: an error naming it, not a 'completed' run."""
    import torch

    from benchsuite.contracts.task import LossKind, Split, Target, Task, TaskData

    class FlatTargets(Task):
        """MSE task whose targets lack the output dimension."""

        loss_kind = LossKind.MSE
        sizes = {"default": {}, "tiny": {}}

        def make_data(self, seed: int) -> TaskData:
            x = torch.randn(32, 2, generator=torch.Generator().manual_seed(seed))
            return TaskData(*(Split(x, x.sum(1)) for _ in range(3)))  # targets (N,), outputs (N, 1)

        def layer_sizes(self) -> tuple[list[int], frozenset[int]]:
            return [2, 4, 1], frozenset()

        @property
        def target(self) -> Target:
            return Target("valid_loss", 0.0)

    TASKS.add("flat_targets", FlatTargets)
    try:
        suite = tmp_path / "flat.toml"
        suite.write_text('tasks = ["flat_targets"]\nactivations = ["relu"]\noptimizers = ["sgd"]\n[budget]\nsteps = 2\n')
        code, out, err = invoke(["run", "--suite", str(suite), "--results", str(tmp_path / "res")], capsys)
    finally:
        TASKS.unregister("flat_targets")
    assert code == 2, (out, err)
    (line,) = err.strip().splitlines()
    assert "Task 'flat_targets' (mse loss), split 'train': targets of shape (32,)" in line
    assert "outputs (N, 1)" in line and "Traceback" not in out + err
    assert not list((tmp_path / "res").glob("*.json"))  # no record: the task is broken, not the run


def test_failed_runs_make_the_exit_status_1(capsys, tmp_path, monkeypatch):
    import benchsuite.run.executor as executor

    real_run = executor.run

    def failing(spec, **kwargs):
        record = real_run(spec, **kwargs)
        record.status, record.reason = "failed", "RuntimeError: simulated"
        record.__post_init__()
        return record

    monkeypatch.setattr(executor, "run", failing)
    code, out, err = invoke([*SMALL_RUN, "--results", str(tmp_path / "res"), "--no-report"], capsys)
    assert code == 1, err
    assert "3 run(s) failed" in err and "Traceback" not in out + err


def test_an_error_with_a_newline_in_a_user_string_stays_one_line(capsys, tmp_path):
    code, out, err = invoke(["run", "--suite", "smoke", "--tasks", "no\nsuch", "--results", str(tmp_path)], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "no\\nsuch" in err


def test_a_newer_schema_record_is_refused_with_exit_2_and_left_untouched(capsys, tmp_path):
    results = tmp_path / "res"
    assert invoke([*SMALL_RUN, "--results", str(results), "--no-report"], capsys)[0] == 0
    path = sorted(results.glob("*.json"))[0]
    newer = {**json.loads(path.read_text()), "schema_version": 99}
    path.write_text(json.dumps(newer))
    before = path.read_bytes()
    code, out, err = invoke([*SMALL_RUN, "--results", str(results), "--no-report"], capsys)
    assert code == 2 and "schema_version 99" in err and err.count("\n") == 1
    assert path.read_bytes() == before
