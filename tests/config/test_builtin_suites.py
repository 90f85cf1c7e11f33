"""The built-in suites: they expand to the grids their descriptions promise, at both sizes,
and the paper suite runs end to end (narrowed to a few steps) on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchsuite.cli import main
from benchsuite.config.suite import builtin_suites, load_suite
from benchsuite.contracts.optimizer import OPTIMIZERS
from benchsuite.contracts.task import TASKS

ALL_COLUMNS = {"sgd", "adam", "rmsprop", "kfgn-kfra", "kfgn-kflr", "kfgn-kfac", "hf", "diag_gn"}
BUILTIN_TASKS = {"digits_mlp", "mnist_mlp", "mnist1d_mlp", "curves_autoencoder", "mnist_autoencoder",
                 "teacher_student", "linear_regression"}
ROBUSTNESS_TASKS = {"tabular_classification", "tabular_regression"}  # in no suite but robustness

# name -> (tasks, activations, optimizer labels, seeds, tuned labels, trials) at the default size
GRIDS = {
    "gpu-quick": ({"digits_mlp", "curves_autoencoder"}, {"relu", "leaky_relu", "tanh"}, ALL_COLUMNS, 2, set(), 0),
    "standard": (BUILTIN_TASKS, {"relu", "leaky_relu", "prelu", "abs", "maxout", "tanh"}, ALL_COLUMNS, 3,
                 ALL_COLUMNS, 12),  # 126ee94: every column tuned alike
    "paper": ({"curves_autoencoder", "mnist_autoencoder"}, {"relu", "sigmoid"},
              {"kfgn-kfra", "kfgn-kflr", "kfgn-kfac", "kfgn-kflr-lm", "kfgn-kflr-g1e-4", "kfgn-kflr-g1e-2",
               "hf-martens", "adam", "sgd-momentum"}, 5, {"adam", "sgd-momentum"}, 12),
}


def test_every_builtin_suite_is_documented():
    suites = builtin_suites()
    assert {"smoke", *GRIDS} <= set(suites)
    import benchsuite.suites as pkg

    for name in suites:
        page = Path(pkg.__file__).parent / f"{name}.md"
        assert page.is_file(), f"suite {name} has no documentation page {page.name}"
        assert suites[name], f"suite {name} has no description"


def test_every_builtin_task_is_in_the_standard_suite():
    """Except the robustness tasks: made for the robustness suite only, so nobody tunes on them."""
    builtin = {e.name for e in TASKS.entries() if e.obj.__module__.startswith("benchsuite.tasks.")}
    assert builtin == BUILTIN_TASKS | ROBUSTNESS_TASKS


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_default_size_grid_matches_the_description(name):
    tasks, acts, labels, n_seeds, tuned, trials = GRIDS[name]
    suite = load_suite(name).narrow(device="cpu")  # validation checks CUDA availability otherwise
    assert suite.base.size == "default"
    specs = suite.specs()
    assert {s.task for s in specs} == tasks
    assert {s.activation for s in specs} == acts
    assert {s.display_optimizer for s in specs} == labels
    # A model without hidden units (linear_regression) runs with one activation only.
    cells = sum(1 if t == "linear_regression" else len(acts) for t in tasks)
    assert {s.activation for s in specs if s.task == "linear_regression"} <= {"relu"}
    assert len(specs) == len(suite) == cells * len(labels) * n_seeds
    trial_specs = suite.trial_specs()
    assert {s.display_optimizer for s in trial_specs} == tuned
    assert len(trial_specs) == cells * len(tuned) * trials
    assert load_suite(name).base.device == "cuda"  # sized for a GPU box


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_tiny_size_runs_on_cpu_without_flags(name):
    suite = load_suite(name, size="tiny")
    assert suite.base.device == "cpu" and suite.threads == 1
    specs = suite.specs()  # validates every spec on this CPU-only machine
    assert all(s.size == "tiny" for s in specs)
    assert all(s.budget.steps is not None and s.budget.steps <= 100 for s in [*specs, *suite.trial_specs()])


def test_paper_suite_uses_published_settings():
    """Each setting as paper.md cites it (Botev et al. 2017; Martens 2010 and nnet_train_2.m)."""
    suite = load_suite("paper")
    assert suite.base.batch_size == 1000 and suite.base.weight_cost == 2e-5
    assert suite.seeds == (0, 1, 2, 3, 4)
    assert all(suite.task_options[t]["init"] == "sparse" for t in suite.tasks)
    cols = {c.label: c for c in suite.optimizers}
    for label in ("kfgn-kfra", "kfgn-kflr", "kfgn-kfac"):
        hp = cols[label].hparams
        assert hp["variant"] == label.split("-")[1]
        assert hp["damping"] == 1e-3 and hp["adapt_damping"] is False  # Botev et al.'s fixed γ, papers' units
        assert hp["factor_decay"] == 0.9 and hp["rescale"] is True and hp["lr"] == 1.0
    assert cols["kfgn-kflr-lm"].hparams["adapt_damping"] is True
    assert {cols["kfgn-kflr-g1e-4"].hparams["damping"], cols["kfgn-kflr-g1e-2"].hparams["damping"]} == {1e-4, 1e-2}
    hf = cols["hf-martens"]
    assert hf.batch_size == "full"  # gradient, backtracking and line search on the whole training set
    assert hf.hparams["damping"] == 45.0 and hf.hparams["max_cg_iters"] == 250 and hf.hparams["curvature_chunks"] == 4
    assert suite.tuning.metric == "train_sq_error" and suite.tuning.budget is None  # the comparison's own budget
    tiny = load_suite("paper", size="tiny")
    tcols = {c.label: c for c in tiny.optimizers}
    assert tcols["kfgn-kfra"].hparams["damping"] == 1e-3  # the same number at every size: KFGN applies s·γ
    assert tcols["hf-martens"].hparams["damping"] == 45.0  # the same number at every size: HF applies s·λ itself
    assert tiny.base.weight_cost == 2e-5
    for label in cols:
        OPTIMIZERS.get(cols[label].name).config(cols[label].hparams)


def test_paper_suite_tiny_end_to_end(tmp_path, capsys):
    """Every column of the paper suite, with its tuning, through the CLI (3 steps per run)."""
    results = tmp_path / "paper"
    code = main(["run", "--suite", "paper", "--size", "tiny", "--tasks", "mnist_autoencoder", "--activations",
                 "relu", "--seeds", "0", "--steps", "3", "--results", str(results), "--workers", "1"])
    out, err = capsys.readouterr()
    assert code == 0, err
    records = [json.loads(p.read_text()) for p in results.glob("*.json")]
    finals = [r for r in records if r["spec"].get("trial") is None]
    trials = [r for r in records if r["spec"].get("trial") is not None]
    assert len(finals) == 9 and len(trials) == 2 * 4
    assert all(r["spec"]["batch_size"] == ("full" if r["spec"].get("optimizer_label") == "hf-martens" else 128)
               and r["spec"]["device"] == "cpu" and r["spec"]["weight_cost"] == 2e-5 for r in records)
    assert not [r for r in records if r["status"] == "failed"], [r["reason"] for r in records if r["status"] == "failed"]
    report = (results / "report" / "report.md").read_text()
    assert "## Tuning" in report
    for plot in ("train_sq_error_vs_step.png", "train_sq_error_vs_time.png", "tuning_mnist_autoencoder.png"):
        assert (results / "report" / plot).is_file(), plot


ROBUSTNESS_COLUMNS = {"adam", "kfgn-kfra", "kfgn-kflr", "kfgn-kfac", "hf", "diag_gn"}


def test_robustness_suite_grid():
    """Every built-in task (robustness tasks included) at tiny x 6 activations x 6 columns x 3 seeds, on CPU."""
    suite = load_suite("robustness")
    assert suite.base.size == "tiny" and suite.base.device == "cpu" and suite.threads == 1
    specs = suite.specs()  # validates every spec on this CPU-only machine
    assert {s.task for s in specs} == BUILTIN_TASKS | ROBUSTNESS_TASKS
    acts = {"relu", "leaky_relu", "prelu", "abs", "maxout", "tanh"}
    assert {s.activation for s in specs} == acts
    assert {s.activation for s in specs if s.task == "linear_regression"} == {"relu"}
    assert {s.display_optimizer for s in specs} == ROBUSTNESS_COLUMNS
    assert {s.seed for s in specs} == {0, 1, 2}
    cells = (len(BUILTIN_TASKS | ROBUSTNESS_TASKS) - 1) * len(acts) + 1
    assert len(specs) == cells * len(ROBUSTNESS_COLUMNS) * 3 == 882
    assert all(s.budget.steps is not None and s.budget.steps <= 100 for s in specs)


def test_robustness_suite_tunes_adam_only_and_keeps_second_order_defaults():
    suite = load_suite("robustness")
    trials = suite.trial_specs()
    assert {s.display_optimizer for s in trials} == {"adam"}
    assert len(trials) == 49 * suite.tuning.trials
    cols = {c.label: c for c in suite.optimizers}
    for label in ("hf", "diag_gn"):
        assert not cols[label].hparams, f"{label} must run at its registry defaults"
    for label in ("kfgn-kfra", "kfgn-kflr", "kfgn-kfac"):
        assert dict(cols[label].hparams) == {"variant": label.split("-")[1]}


def test_robustness_suite_dry_run(capsys):
    code = main(["run", "--suite", "robustness", "--dry-run"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "196 tuning trials, then 882 runs" in out
    assert "tabular_regression-maxout-kfgn-kfac-seed2" in out
