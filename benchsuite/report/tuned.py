"""How each optimizer column was tuned, and which comparisons pit a tuned column against an untuned one.

Everything here is derived from the records alone: a tuning trial is a record whose
spec has a ``trial`` index (and carries the trial's budget and hyperparameters), a
comparison run is one without. A *cell* is one task × activation × column. A cell is
**tuned** when it has trials and its comparison runs used the hyperparameters of one
of them; otherwise (no trials, or no trial finished and the runs fell back to the
suite settings) it is untuned. A results directory without any trial is simply
untuned everywhere.

The report marks an untuned column with :data:`UNTUNED_MARK` wherever it is compared
with a tuned one (same task and activation), and says so in a sentence: such a
comparison is not like-for-like.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from benchsuite.config.spec import Budget
from benchsuite.contracts.optimizer import OPTIMIZERS
from benchsuite.errors import ConfigError
from benchsuite.records.record import RunRecord
from benchsuite.run.tuning import metric_choices, select

__all__ = ["UNTUNED_MARK", "Cell", "TuningStatus", "format_budget", "tuning_status"]

UNTUNED_MARK = "†"
Cell = tuple[str, str, str]  # (task, activation, optimizer label)


def _cell(rec: RunRecord) -> Cell:
    return rec.spec.task, rec.spec.activation, rec.spec.display_optimizer


def _canon(hparams: Mapping[str, Any]) -> str:
    return json.dumps(dict(hparams), sort_keys=True, default=str)


def format_budget(budget: Budget | None) -> str:
    """``Budget(steps=2000, seconds=15)`` → ``"2000 steps or 15 s"`` (whichever comes first)."""
    if budget is None:
        return "–"
    parts = []
    if budget.steps is not None:
        parts.append(f"{budget.steps} steps")
    if budget.epochs is not None:
        parts.append(f"{budget.epochs:g} epochs")
    if budget.seconds is not None:
        parts.append(f"{budget.seconds:g} s")
    return " or ".join(parts)


def _fmt_hparams(hparams: Mapping[str, Any]) -> str:
    if not hparams:
        return "registry defaults"
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(hparams.items()))


def _join(values: Iterable[str]) -> str:
    """Distinct values in first-seen order, joined with `` / `` (several: the cells differ)."""
    return " / ".join(dict.fromkeys(values)) or "–"


@dataclass(frozen=True)
class TuningStatus:
    """Which cells were tuned, and the per-column table of how.

    Attributes:
        tuned: Cells whose comparison runs used a tuning trial's hyperparameters.
        cells: Every cell with comparison runs.
        table: One row per optimizer column: how it was tuned (or its suite settings).
        metric: The metric that selected the winners (the one given, unless the records
            show that another one picked the trials the comparison runs used).
        note: Says so when the given metric is not the one that selected (else empty).
    """

    tuned: frozenset[Cell]
    cells: frozenset[Cell]
    table: pd.DataFrame
    metric: str
    note: str = ""

    def is_tuned(self, task: str, activation: str, optimizer: str) -> bool:
        """Whether the cell's comparison runs used tuned hyperparameters."""
        return (task, activation, optimizer) in self.tuned

    def mixed(self, task: str, activation: str, optimizers: Iterable[str]) -> bool:
        """Whether ``optimizers`` on this task × activation include both tuned and untuned columns."""
        flags = {self.is_tuned(task, activation, o) for o in optimizers}
        return len(flags) == 2

    @property
    def any_mixed(self) -> bool:
        """Whether some task × activation compares a tuned column with an untuned one."""
        groups: dict[tuple[str, str], list[str]] = {}
        for task, act, opt in self.cells:
            groups.setdefault((task, act), []).append(opt)
        return any(self.mixed(task, act, opts) for (task, act), opts in groups.items())

    def mark(self, task: str, activation: str, optimizer: str, others: Iterable[str]) -> str:
        """``optimizer`` with :data:`UNTUNED_MARK` if it is untuned and compared here with a tuned column."""
        if self.is_tuned(task, activation, optimizer) or not self.mixed(task, activation, [optimizer, *others]):
            return optimizer
        return optimizer + UNTUNED_MARK

    def mark_rows(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
        """Mark the untuned ``optimizer`` of rows whose task × activation also has a tuned column.

        Args:
            frame: Rows with ``task``, ``activation`` and ``optimizer`` columns (one row per column).

        Returns:
            A marked copy of ``frame`` and the sorted names of the columns marked.
        """
        if frame.empty:
            return frame, []
        present = frame.groupby(["task", "activation"]).optimizer.agg(list).to_dict()
        out = frame.copy()
        out["optimizer"] = [self.mark(t, a, o, present[(t, a)])
                            for t, a, o in zip(frame.task, frame.activation, frame.optimizer)]
        flagged = sorted({o for o, m in zip(frame.optimizer, out.optimizer) if o != m})
        return out, flagged

    def sentence(self, flagged: Sequence[str]) -> str:
        """One sentence naming the untuned columns of a section (empty when none are flagged)."""
        if not flagged:
            return ""
        names = ", ".join(f"`{n}`" for n in flagged)
        return (f"{UNTUNED_MARK} Untuned: {names} ran with suite settings while a column compared with "
                f"it here was tuned on `{self.metric}` — this comparison is not like-for-like "
                "(see *How each column was tuned*).")


def tuning_status(finals: Sequence[RunRecord], trials: Sequence[RunRecord], metric: str) -> TuningStatus:
    """How each column of the comparison runs ``finals`` was tuned, from the trial records ``trials``.

    Args:
        finals: The comparison runs (records without a trial index).
        trials: The tuning trials (records with one); may be empty.
        metric: The evaluation column that selected the winners.
    """
    trial_hp: dict[Cell, set[str]] = {}
    for rec in trials:
        trial_hp.setdefault(_cell(rec), set()).add(_canon(rec.spec.hparams))
    cells = frozenset(_cell(r) for r in finals)
    tuned = frozenset(_cell(r) for r in finals if _canon(r.spec.hparams) in trial_hp.get(_cell(r), set()))
    metric, note = _selecting_metric(finals, [r for r in trials if _cell(r) in tuned], metric)
    columns = dict.fromkeys(r.spec.display_optimizer for r in finals)
    rows = [_column_row(col, [r for r in finals if r.spec.display_optimizer == col],
                        [r for r in trials if r.spec.display_optimizer == col], tuned, metric) for col in sorted(columns)]
    return TuningStatus(tuned, cells, pd.DataFrame(rows), metric, note)


def _selecting_metric(finals: Sequence[RunRecord], trials: Sequence[RunRecord], given: str) -> tuple[str, str]:
    """The metric whose winners the comparison runs used: ``given`` if it is consistent with the records.

    The records do not name the metric that selected (``benchsuite report`` takes it as
    an option), so a wrong one would mislabel every tuned column. If selecting on
    ``given`` does not reproduce the trial each tuned cell's runs used, the training
    and validation columns that do are named instead, with a note.
    """
    if not trials:
        return given, ""
    used = {_cell(r): _canon(r.spec.hparams) for r in finals}
    hp = {(_cell(r), r.spec.trial): _canon(r.spec.hparams) for r in trials}

    def consistent(metric: str) -> bool:
        try:
            chosen = select(trials, metric)
        except ConfigError:  # not an evaluation column of these trials
            return False
        return all(sel.trial is not None and hp[((k[0], k[2], k[3]), sel.trial)] == used.get((k[0], k[2], k[3]))
                   for k, sel in chosen.items())

    if consistent(given):
        return given, ""
    evals = next((r.evals[-1] for r in trials if r.evals), {})
    others = [m for m in metric_choices(evals) if m != given and consistent(m)]
    if not others:
        return given, (f"Selecting on `{given}` does not reproduce every winner the comparison runs used "
                       "(a resumed or hand-edited results directory?).")
    return " or ".join(others), (f"The winners the comparison runs used are those of {' or '.join(others)}, "
                                 f"not of `{given}` as given: selection metric read from the records.")


def _column_row(column: str, finals: list[RunRecord], trials: list[RunRecord], tuned: frozenset[Cell],
                metric: str) -> dict[str, str]:
    """One row of the *How each column was tuned* table."""
    cells = sorted({_cell(r) for r in finals})
    n_tuned = sum(c in tuned for c in cells)
    untuned_runs = [r for r in finals if _cell(r) not in tuned]
    row = {"optimizer": column,
           "tuned": "yes" if n_tuned == len(cells) else "no" if n_tuned == 0 else f"{n_tuned}/{len(cells)} cells",
           "trials × seeds": "–", "trial budget": "–", "metric": "–", "search space": "–",
           "comparison runs": f"{len(finals)} (budget {_join(format_budget(r.spec.budget) for r in finals)})",
           "untuned settings": _join(_fmt_hparams(r.spec.hparams) for r in untuned_runs) if untuned_runs else "–"}
    mine = [r for r in trials if _cell(r) in tuned]
    if mine:
        row.update(_trial_columns(mine, finals, metric))
    return row


def _trial_columns(trials: list[RunRecord], finals: list[RunRecord], metric: str) -> dict[str, str]:
    """Trials × seeds per cell, the trials' budget, the metric and the dimensions searched."""
    per_cell: dict[Cell, list[RunRecord]] = {}
    for rec in trials:
        per_cell.setdefault(_cell(rec), []).append(rec)
    counts, dims = [], []
    for recs in per_cell.values():
        indices = {r.spec.trial for r in recs}
        seeds = {r.spec.seed for r in recs}
        counts.append(f"{len(indices)} × {len(seeds)} seed{'s' if len(seeds) > 1 else ''}")
        dims.append(", ".join(_searched(recs)))
    final_budgets = {format_budget(r.spec.budget) for r in finals}
    budgets = [format_budget(r.spec.budget) for r in trials]
    budget = _join(budgets)
    if set(budgets) == final_budgets and len(final_budgets) == 1:
        budget += " (the comparison's)"
    return {"trials × seeds": _join(counts), "trial budget": budget, "metric": metric, "search space": _join(dims)}


def _searched(trials: list[RunRecord]) -> list[str]:
    """The hyperparameters that vary over one cell's trials (one trial: the registry space's names)."""
    values: dict[str, set[str]] = {}
    for rec in trials:
        for k, v in rec.spec.hparams.items():
            values.setdefault(k, set()).add(repr(v))
    varied = sorted(k for k, v in values.items() if len(v) > 1)
    if varied:
        return varied
    try:
        space = OPTIMIZERS.get(trials[0].spec.optimizer).search_space
    except ConfigError:
        space = {}
    return sorted(k for k in values if k in space) or ["?"]
