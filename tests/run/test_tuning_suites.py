"""The built-in `standard` suite tunes every column alike: same trials, trial seeds and budget."""

from __future__ import annotations

from collections import Counter

import pytest

from benchsuite.config.suite import load_suite

COLUMNS = {"sgd", "adam", "rmsprop", "kfgn-kfra", "kfgn-kflr", "kfgn-kfac", "hf", "diag_gn"}


@pytest.mark.parametrize("size, trials", [("default", 12), ("tiny", 4)])
def test_standard_tunes_every_column_with_the_same_trials_and_budget(size, trials):
    suite = load_suite("standard", size=size).narrow(device="cpu")
    finals, specs = suite.specs(), suite.trial_specs()
    assert suite.tuning is not None and suite.tuning.metric == "train_loss"
    assert {s.display_optimizer for s in finals} == COLUMNS
    per_cell = Counter((s.task, s.activation, s.display_optimizer) for s in specs)
    cells = {(s.task, s.activation, s.display_optimizer) for s in finals}
    assert set(per_cell) == cells  # every cell of every column is tuned ...
    assert set(per_cell.values()) == {trials}  # ... with the same number of trials
    assert {s.seed for s in specs} == {0}
    # Each trial runs at the comparison's own budget, the same for every column.
    assert {s.budget for s in specs} == {s.budget for s in finals} and len({s.budget for s in finals}) == 1
    assert len(specs) == len(cells) * trials == 37 * 8 * trials


def test_standard_searches_each_method_over_its_registry_space():
    """No suite override: the searched hyperparameters are the registry's (damping in the papers' units)."""
    suite = load_suite("standard", size="tiny")
    searched: dict[str, set[str]] = {}
    for s in suite.trial_specs():
        if s.task == "digits_mlp" and s.activation == "relu":
            searched.setdefault(s.display_optimizer, set()).update(s.hparams)
    assert searched["sgd"] == {"lr", "momentum"}
    assert searched["kfgn-kfra"] == {"variant", "damping", "lr"}  # the column's variant is kept
    assert searched["hf"] == {"damping"}
    assert searched["diag_gn"] == {"lr", "damping"}
