"""Suite-file syntax of the paper suite's generic features: a column's own ``batch_size``,
``weight_cost`` (top level and ``[at_size]``) and the task option ``init = "sparse"``."""

from __future__ import annotations

import pytest

from benchsuite.config.suite import OptimizerChoice, parse_suite
from benchsuite.errors import ConfigError
from benchsuite.records.record import RunRecord, Status

BASE = {"tasks": ["curves_autoencoder"], "activations": ["relu"], "seeds": [0, 1], "size": "tiny",
        "eval_every": 2, "budget": {"steps": 2}, "batch_size": 64,
        "optimizers": [{"name": "hf", "label": "hf-martens", "batch_size": "full", "hparams": {"max_cg_iters": 5}},
                       {"name": "sgd", "label": "sgd-big", "batch_size": 1000000},
                       "adam"]}


def test_a_column_batch_size_applies_to_that_column_only():
    suite = parse_suite("mine", BASE)
    assert suite.optimizers[0] == OptimizerChoice("hf", "hf-martens", {"max_cg_iters": 5}, "full")
    by_label = {}
    for spec in suite.specs():
        by_label.setdefault(spec.display_optimizer, set()).add(spec.batch_size)
    assert by_label == {"hf-martens": {"full"}, "sgd-big": {1000000}, "adam": {64}}


def test_columns_without_batch_size_keep_their_run_ids():
    """Adding another column with its own batch size leaves the ids of the other columns alone."""
    plain = {**BASE, "optimizers": ["adam"]}
    ids = {s.run_id for s in parse_suite("mine", plain).specs()}
    assert ids <= {s.run_id for s in parse_suite("mine", BASE).specs()}


@pytest.mark.parametrize("bad", [0, -3, "all", 2.5, True], ids=lambda b: f"batch_size={b!r}")
def test_bad_column_batch_size_names_suite_and_column(bad):
    data = {**BASE, "optimizers": [{"name": "hf", "label": "hf-martens", "batch_size": bad}]}
    with pytest.raises(ConfigError, match=rf"^Invalid batch_size of optimizer column 'hf-martens' in suite 'mine': "
                                          rf"{bad!r} \(need a positive integer or \"full\"\)$"):
        parse_suite("mine", data)


def test_unknown_column_field_lists_the_valid_ones():
    data = {**BASE, "optimizers": [{"name": "hf", "weight_cost": 1e-5}]}
    with pytest.raises(ConfigError, match=r"^Unknown optimizer field\(s\) \['weight_cost'\] in suite 'mine'\. "
                                          r"Valid: batch_size, hparams, label, name$"):
        parse_suite("mine", data)


def test_top_level_full_batch_size():
    suite = parse_suite("mine", {**BASE, "batch_size": "full", "optimizers": ["adam"]})
    assert {s.batch_size for s in suite.specs()} == {"full"}


def test_weight_cost_top_level_and_at_size():
    data = {**BASE, "weight_cost": 2e-5, "at_size": {"default": {"weight_cost": 1e-4}}}
    assert {s.weight_cost for s in parse_suite("mine", data).specs()} == {2e-5}
    assert {s.weight_cost for s in parse_suite("mine", data, size="default").specs()} == {1e-4}
    assert {s.weight_cost for s in parse_suite("mine", BASE).specs()} == {0.0}


@pytest.mark.parametrize("bad", [-1.0, float("inf"), "2e-5"], ids=lambda b: f"weight_cost={b!r}")
def test_bad_weight_cost_is_named(bad):
    with pytest.raises(ConfigError, match=rf"^Invalid weight_cost: {bad!r} \(need a finite number >= 0\)$"):
        parse_suite("mine", {**BASE, "weight_cost": bad})


def test_sparse_init_as_a_task_option_in_a_suite():
    data = {**BASE, "task_options": {"curves_autoencoder": {"init": "sparse", "sparse_connections": 15}}}
    assert all(s.task_options == {"init": "sparse", "sparse_connections": 15}
               for s in parse_suite("mine", data).specs())
    with pytest.raises(ConfigError, match=r"^Invalid init: 'xavier'\. Valid choices: default, sparse$"):
        parse_suite("mine", {**BASE, "task_options": {"curves_autoencoder": {"init": "xavier"}}}).specs()


def test_tuning_trials_and_finals_inherit_the_column_batch_size():
    data = {**BASE, "tuning": {"optimizers": ["sgd-big", "adam"], "trials": 3, "trial_seeds": [0]}}
    suite = parse_suite("mine", data)
    trials = suite.trial_specs()
    assert {t.display_optimizer for t in trials} == {"sgd-big", "adam"}
    assert {t.batch_size for t in trials if t.display_optimizer == "sgd-big"} == {1000000}
    assert {t.batch_size for t in trials if t.display_optimizer == "adam"} == {64}
    # the winners' finals keep the column's batch size too
    records = [RunRecord(run_id=t.run_id, spec=t, status=Status.COMPLETED, reason="",
                         evals=[{"step": 2, "valid_loss": float(t.trial), "train_loss": float(t.trial)}])
               for t in trials]
    finals = suite.final_specs(records)
    assert {f.batch_size for f in finals if f.display_optimizer == "sgd-big"} == {1000000}
    assert {f.batch_size for f in finals if f.display_optimizer == "hf-martens"} == {"full"}
