"""The robustness suite's outcome table from a results directory.

Usage: ``python benchmarks/robustness_table.py results/robustness [--baseline adam]``
(prints markdown). Per optimizer column, over its comparison runs (tuning trials are
left out): runs, completed, diverged, failed (and timed out), loss lowered (final full
training loss below the initial one), and worse than the baseline (final training
loss above the baseline run's on the same task, activation and seed; a run that did
not complete counts as worse, a cell whose baseline run did not complete is not
counted). See ``benchsuite/suites/robustness.md``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from benchsuite.records.record import RunRecord, Status
from benchsuite.records.store import ResultStore
from benchsuite.report.tables import to_markdown

__all__ = ["outcome_frame", "robustness_table"]

COLUMNS = ["runs", "completed", "diverged", "failed", "timeout", "loss lowered", "worse than baseline",
           "compared"]


def outcome_frame(records: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per comparison run: column label, cell, status, initial and final training loss."""
    rows = []
    for rec in records:
        spec = rec.spec
        if spec.trial is not None:
            continue
        initial = rec.evals[0].get("train_loss", math.nan) if rec.evals else math.nan
        final = rec.evals[-1].get("train_loss", math.nan) if rec.evals else math.nan
        rows.append({"optimizer": spec.display_optimizer, "task": spec.task, "activation": spec.activation,
                     "seed": spec.seed, "status": str(Status(rec.status).value), "initial": initial,
                     "final": final})
    return pd.DataFrame(rows, columns=["optimizer", "task", "activation", "seed", "status", "initial", "final"])


def robustness_table(records: Sequence[RunRecord], baseline: str = "adam") -> pd.DataFrame:
    """The outcome counts per optimizer column (index), columns :data:`COLUMNS`.

    Args:
        records: The records of a results directory (trials are skipped).
        baseline: The reference column (the robustness suite's tuned Adam).

    Returns:
        Counts per column; ``compared`` is the number of runs whose baseline run completed
        (the denominator of ``worse than baseline``).
    """
    runs = outcome_frame(records)
    if runs.empty:
        return pd.DataFrame(columns=COLUMNS)
    done = runs.status == Status.COMPLETED.value
    finite = runs.final.apply(math.isfinite)
    runs["lowered"] = done & finite & (runs.final < runs.initial)
    keys = ["task", "activation", "seed"]
    base = runs[(runs.optimizer == baseline) & done & finite].set_index(keys).final.rename("base")
    runs = runs.join(base, on=keys)
    compared = runs.base.notna()
    runs["compared"] = compared
    runs["worse"] = compared & (~(done & finite) | (runs.final > runs.base))
    table = runs.groupby("optimizer").agg(
        runs=("status", "size"),
        completed=("status", lambda s: int((s == Status.COMPLETED.value).sum())),
        diverged=("status", lambda s: int((s == Status.DIVERGED.value).sum())),
        failed=("status", lambda s: int((s == Status.FAILED.value).sum())),
        timeout=("status", lambda s: int((s == Status.TIMEOUT.value).sum())),
        **{"loss lowered": ("lowered", "sum"), "worse than baseline": ("worse", "sum"),
           "compared": ("compared", "sum")},
    )
    return table.astype(int)[COLUMNS]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--baseline", default="adam")
    args = parser.parse_args(argv)
    records, problems = ResultStore(args.results, create=False).records()
    table = robustness_table(records, args.baseline)
    table = table.rename(columns={"worse than baseline": f"worse than {args.baseline}"})
    print(to_markdown(table.reset_index()))
    for problem in problems:
        print(f"\nunreadable: {problem}")


if __name__ == "__main__":
    main()
