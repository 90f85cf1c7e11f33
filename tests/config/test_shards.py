"""Shards of a suite: disjoint, together the whole suite, each tuning group in one shard."""

from __future__ import annotations

import pytest

from benchsuite.cli import main
from benchsuite.config.suite import load_suite
from benchsuite.errors import ConfigError


@pytest.mark.parametrize("n", [1, 2, 3, 5, 64], ids=lambda n: f"N={n}")
def test_shards_partition_the_suite_by_cell(n):
    suite = load_suite("robustness")
    whole = {s.run_id for s in suite.specs()}
    parts = [suite.narrow(shard=(i, n)) for i in range(n)]
    ids = [{s.run_id for s in p.specs()} for p in parts]
    assert set().union(*ids) == whole and sum(map(len, ids)) == len(whole)  # disjoint and complete
    cells = [set(p.cells()) for p in parts]
    assert sum(map(len, cells)) == len(set().union(*cells))  # a cell (and its tuning group) in one shard only
    trials = [{(s.task, s.activation) for s in p.trial_specs()} for p in parts]
    assert all(t <= c for t, c in zip(trials, cells))
    assert sum(len(p) for p in parts) == len(suite)


def test_bad_shards_are_refused(capsys):
    with pytest.raises(ConfigError, match="Invalid shard: 3/3"):
        load_suite("smoke").narrow(shard=(3, 3))
    for bad in ("3/3", "x", "1/0", "2/-1"):
        with pytest.raises(SystemExit):
            main(["run", "--suite", "smoke", "--dry-run", "--shard", bad])
        assert "expected I/N" in capsys.readouterr().err


def test_dry_run_of_a_shard_lists_only_its_runs(tmp_path, capsys):
    assert main(["run", "--suite", "smoke", "--dry-run", "--shard", "1/3", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "32 runs would be written" in out  # 6 cells dealt over 3 shards: 2 cells x 8 columns x 2 seeds
