"""Two results directories, cell by cell: did NEW get slower, worse or less stable than BASE?

``benchsuite compare BASE NEW`` reads the comparison records of two results
directories (two commits, two machines; tuning trials are left out) and matches
their *cells*: task × size × activation × optimizer column, seeds pooled. A column
that holds runs with other settings in one cell is split as the report splits it
(:func:`~benchsuite.report.cells.split_mixed_cells`), with the same labels in both
directories. Cells found in one directory only are listed as added or removed.

For every common cell three things are compared:

* **Step time.** Seconds per optimizer step, the mean over runs of each run's
  training seconds per step (the report's ms/step), as a ratio NEW/BASE. Its test
  uses every step: the per-step durations, differences of the step log's cumulative
  training time, pooled over seeds (a 100-step run gives 100 durations, so two seeds
  are enough for power), compared by a one-sided Mann-Whitney U test.
* **Final and best training loss** (the last evaluation's, and the lowest of any
  evaluation, over completed runs): the relative change of the mean over seeds,
  ``(mean_NEW - mean_BASE) / |mean_BASE|``, with a one-sided Mann-Whitney U test over
  seeds.
* **Outcome.** A seed that completed in BASE and not in NEW (diverged, failed,
  timed out) is a regression by itself.

The regression rule: a quantity *regressed* when it got worse beyond the threshold
(time ratio > 1 + threshold; loss up by more than threshold, relatively) **and** the
change is significant: the one-sided test gives ``p <= alpha``. With few values the
exact test cannot reach ``alpha`` at all: its smallest one-sided p-value,
``1 / C(n_BASE + n_NEW, n_BASE)``, is 1/6 at 2 vs 2 seeds and 1/20 at 3 vs 3. Then
the rule says *too few seeds* and takes a change as significant when the value ranges
do not overlap (every NEW value worse than every BASE value), which is what the test
itself requires at its smallest p-value (at 3 vs 3 seeds and alpha 0.05 the two rules
coincide). With one seed a side this reduces to the threshold alone. The mirror
image (better beyond the threshold, significant) is reported as an improvement.

The per-step test treats the steps of a run as independent draws, which they are not
quite (a machine's load drifts): on a busy machine even a small shift is
"significant", which is why the threshold must be exceeded too.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats

from benchsuite.errors import ConfigError, ResultsError
from benchsuite.records.record import RunRecord, Status
from benchsuite.records.store import ResultStore
from benchsuite.report.cells import split_mixed_cells
from benchsuite.report.frames import runs_frame
from benchsuite.report.tables import to_markdown
from benchsuite.report.uncertainty import CI_METHOD, mean_ci

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["CELL_KEYS", "CellComparison", "Change", "Comparison", "compare_results", "print_summary",
           "step_durations"]
log = logging.getLogger(__name__)

CELL_KEYS = ("task", "size", "activation", "optimizer")
Cell = tuple[str, str, str, str]
TOO_FEW = "too few seeds"


# --------------------------------------------------------------------------------------
# One quantity of one cell
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """NEW against BASE in one quantity of one cell (higher is worse: seconds, losses).

    Attributes:
        base, new: The estimates (mean over runs), NaN without values.
        relative: ``new / base - 1`` (``(new - base) / |base|``); NaN without values.
        p_worse: One-sided Mann-Whitney U p-value of NEW > BASE (NaN unless the rule is the test).
        p_better: The same for NEW < BASE.
        rule: ``"mann-whitney"``, :data:`TOO_FEW` (the test cannot reach alpha: ranges
            must not overlap) or ``"none"`` (no values on a side).
        worse, better: Beyond the threshold and significant, up or down.
        apart: Under :data:`TOO_FEW`: the value ranges do not overlap (in the direction of the change).
        unit: What the test's values are (``seeds``, ``steps``).
        n_base, n_new: Values the test compared (steps for time, seeds for losses).
        low_base, high_base, low_new, high_new: 95% Student-t interval of each mean (NaN below two values).
    """

    base: float
    new: float
    relative: float
    p_worse: float
    p_better: float
    rule: str
    worse: bool
    better: bool
    n_base: int
    n_new: int
    apart: bool = False
    unit: str = "seeds"
    low_base: float = math.nan
    high_base: float = math.nan
    low_new: float = math.nan
    high_new: float = math.nan

    @property
    def ratio(self) -> float:
        """``new / base`` (1 + :attr:`relative`)."""
        return 1 + self.relative

    def test_text(self) -> str:
        """``"p=0.0012"``, ``"too few seeds: apart"`` / ``"too few seeds: overlap"``, or ``"–"``."""
        if self.rule == "none":
            return "–"
        if self.rule == TOO_FEW:
            return f"too few {self.unit}: {'apart' if self.apart else 'overlap'}"
        p = self.p_worse if self.relative >= 0 else self.p_better
        return f"p={p:.2g}"


def _min_p(n_base: int, n_new: int) -> float:
    """Smallest one-sided p-value the exact Mann-Whitney U test can give at these sample sizes."""
    return 1.0 / math.comb(n_base + n_new, n_base)


def _relative(base: float, new: float) -> float:
    if not (math.isfinite(base) and math.isfinite(new)):
        return math.nan
    if base == 0:
        return 0.0 if new == 0 else math.copysign(math.inf, new)
    return (new - base) / abs(base)


def compare_values(base_est: Sequence[float], new_est: Sequence[float], *, threshold: float, alpha: float,
                   base_test: Sequence[float] | None = None, new_test: Sequence[float] | None = None,
                   unit: str = "seeds") -> Change:
    """Compare one quantity (higher is worse) between BASE and NEW by the module's regression rule.

    Args:
        base_est, new_est: Values whose means are the estimates (per run or per seed); non-finite ones are dropped.
        threshold: Relative change that matters (0.10: 10%).
        alpha: Significance level of the one-sided tests.
        base_test, new_test: Values the test compares (default: the estimates' values), e.g. per-step durations.
        unit: What the test's values are, for the *too few* text.
    """
    ci_b, ci_n = mean_ci(base_est), mean_ci(new_est)
    tb = _finite(base_est if base_test is None else base_test)
    tn = _finite(new_est if new_test is None else new_test)
    rel = _relative(ci_b.mean, ci_n.mean)
    common: dict[str, Any] = {"base": ci_b.mean, "new": ci_n.mean, "relative": rel, "n_base": int(tb.size),
                              "n_new": int(tn.size), "low_base": ci_b.low, "high_base": ci_b.high,
                              "low_new": ci_n.low, "high_new": ci_n.high, "unit": unit}
    if tb.size == 0 or tn.size == 0 or math.isnan(rel):
        return Change(p_worse=math.nan, p_better=math.nan, rule="none", worse=False, better=False, **common)
    if _min_p(tb.size, tn.size) > alpha:  # the test cannot reach alpha: ranges apart instead
        up, down = bool(tn.min() > tb.max()), bool(tn.max() < tb.min())
        return Change(p_worse=math.nan, p_better=math.nan, rule=TOO_FEW, apart=up if rel >= 0 else down,
                      worse=up and rel > threshold, better=down and rel < -threshold, **common)
    p_worse, p_better = _mannwhitney(tb, tn)
    level = alpha * (1 + 1e-9)  # the exact test's floor (1/20 at 3 vs 3) reaches alpha = 0.05 despite rounding
    return Change(p_worse=p_worse, p_better=p_better, rule="mann-whitney",
                  worse=rel > threshold and p_worse <= level, better=rel < -threshold and p_better <= level, **common)


def _mannwhitney(base: np.ndarray, new: np.ndarray) -> tuple[float, float]:
    """One-sided p-values of NEW > BASE and NEW < BASE (1.0 where undefined, e.g. all values equal)."""
    if np.ptp(np.concatenate([base, new])) == 0:
        return 1.0, 1.0
    with np.errstate(all="ignore"):
        up = stats.mannwhitneyu(new, base, alternative="greater").pvalue
        down = stats.mannwhitneyu(new, base, alternative="less").pvalue
    return (1.0 if math.isnan(up) else float(up)), (1.0 if math.isnan(down) else float(down))


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=float).ravel()  # (n,)
    return v[np.isfinite(v)]


def step_durations(record: RunRecord) -> np.ndarray:
    """Seconds of each logged optimizer step: differences of the step log's cumulative training time.

    The step log holds, per step, the step number and the cumulative training seconds
    after it (from 0 before step 1); where steps were logged sparsely a gap's time is
    spread evenly over its steps. Returns the finite, non-negative durations, shape ``(steps,)``.
    """
    log_ = record.step_log
    steps = np.asarray(log_.get("step", []), dtype=float)  # (n,)
    times = np.asarray(log_.get("time", []), dtype=float)  # (n,)
    if steps.size == 0 or steps.size != times.size:
        return np.empty(0)
    dstep = np.diff(steps, prepend=0.0)
    dtime = np.diff(times, prepend=0.0)
    ok = (dstep > 0) & np.isfinite(dtime) & (dtime >= 0)
    return np.repeat(dtime[ok] / dstep[ok], dstep[ok].astype(int))


# --------------------------------------------------------------------------------------
# One cell
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CellComparison:
    """Everything compared in one common cell.

    Attributes:
        cell: ``(task, size, activation, optimizer column)``.
        seeds_base, seeds_new: The seeds each directory ran.
        outcome_base, outcome_new: ``"2/2"`` or ``"1/2 (1 diverged)"``: runs completed of runs.
        time, final_loss, best_loss: The three comparisons.
        status_changes: ``"seed 1: completed → diverged"`` per seed that completed in BASE and not in NEW.
        status_fixed: The same for seeds that did not complete in BASE and did in NEW.
        settings: Settings that differ between the two directories' records of this cell.
    """

    cell: Cell
    seeds_base: tuple[int, ...]
    seeds_new: tuple[int, ...]
    outcome_base: str
    outcome_new: str
    time: Change
    final_loss: Change
    best_loss: Change
    status_changes: tuple[str, ...] = ()
    status_fixed: tuple[str, ...] = ()
    settings: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """``task/size/activation/optimizer``."""
        return "/".join(self.cell)

    @property
    def regressions(self) -> list[str]:
        """What regressed: a subset of ``time``, ``final loss``, ``best loss``, ``status``."""
        out = [n for n, c in (("time", self.time), ("final loss", self.final_loss), ("best loss", self.best_loss))
               if c.worse]
        return out + (["status"] if self.status_changes else [])

    @property
    def improvements(self) -> list[str]:
        """What improved (beyond the threshold and significant), and ``status`` for runs that now complete."""
        out = [n for n, c in (("time", self.time), ("final loss", self.final_loss), ("best loss", self.best_loss))
               if c.better]
        return out + (["status"] if self.status_fixed else [])

    @property
    def verdict(self) -> str:
        if self.regressions:
            return "REGRESSION: " + ", ".join(self.regressions)
        if self.improvements:
            return "improved: " + ", ".join(self.improvements)
        return "ok"

    def reasons(self) -> str:
        """One line saying why the cell regressed (empty when it did not)."""
        parts = []
        if self.time.worse:
            parts.append(f"step time ×{self.time.ratio:.3g} ({_ms(self.time.base)} → {_ms(self.time.new)} ms, "
                         f"{self.time.test_text()})")
        for label, c in (("final train loss", self.final_loss), ("best train loss", self.best_loss)):
            if c.worse:
                parts.append(f"{label} {_pct(c.relative)} ({c.base:.4g} → {c.new:.4g}, {c.test_text()})")
        parts += list(self.status_changes)
        return "; ".join(parts)


def _ms(seconds: float) -> str:
    return "–" if not math.isfinite(seconds) else f"{seconds * 1e3:.3g}"


def _pct(rel: float) -> str:
    if math.isnan(rel):
        return "–"
    if math.isinf(rel):
        return "+inf%" if rel > 0 else "-inf%"
    return f"{rel * 100:+.1f}%"


def _outcome(recs: Sequence[RunRecord]) -> str:
    ok = sum(r.status is Status.COMPLETED for r in recs)
    bad = defaultdict(int)
    for r in recs:
        if r.status is not Status.COMPLETED:
            bad[r.status.value] += 1
    extra = ", ".join(f"{n} {s}" for s, n in sorted(bad.items()))
    return f"{ok}/{len(recs)}" + (f" ({extra})" if extra else "")


def _status_changes(base: Sequence[RunRecord], new: Sequence[RunRecord]) -> tuple[list[str], list[str]]:
    """Per seed in both: completed → not completed (regressions) and back (fixes)."""
    by_seed_b = {r.spec.seed: r for r in base}
    worse, fixed = [], []
    for r in sorted(new, key=lambda r: r.spec.seed):
        b = by_seed_b.get(r.spec.seed)
        if b is None:
            continue
        was, now = b.status is Status.COMPLETED, r.status is Status.COMPLETED
        text = f"seed {r.spec.seed}: {b.status.value} → {r.status.value}"
        if was and not now:
            worse.append(text + (f" ({r.reason})" if r.reason else ""))
        elif now and not was:
            fixed.append(text)
    return worse, fixed


def _loss_values(recs: Sequence[RunRecord], column: str) -> list[float]:
    runs = runs_frame([r for r in recs if r.status is Status.COMPLETED])
    return [] if runs.empty or column not in runs else runs[column].astype(float).tolist()


def _sec_per_step(rec: RunRecord) -> float:
    d = step_durations(rec)
    if d.size:
        return float(d.mean())
    return rec.train_seconds / rec.steps if rec.steps else math.nan


def compare_cell(cell: Cell, base: Sequence[RunRecord], new: Sequence[RunRecord], *, threshold: float,
                 alpha: float) -> CellComparison:
    """Compare one cell's records of BASE and NEW (see the module docstring for the rule)."""
    time = compare_values([_sec_per_step(r) for r in base], [_sec_per_step(r) for r in new],
                          base_test=_pooled(base), new_test=_pooled(new), threshold=threshold, alpha=alpha,
                          unit="steps")
    final = compare_values(_loss_values(base, "final_train_loss"), _loss_values(new, "final_train_loss"),
                           threshold=threshold, alpha=alpha)
    best = compare_values(_loss_values(base, "best_train_loss"), _loss_values(new, "best_train_loss"),
                          threshold=threshold, alpha=alpha)
    worse, fixed = _status_changes(base, new)
    return CellComparison(cell, tuple(sorted(r.spec.seed for r in base)), tuple(sorted(r.spec.seed for r in new)),
                          _outcome(base), _outcome(new), time, final, best, tuple(worse), tuple(fixed),
                          _differing_settings(base, new))


def _pooled(recs: Sequence[RunRecord]) -> np.ndarray:
    parts = [step_durations(r) for r in recs]
    return np.concatenate(parts) if parts else np.empty(0)


def _differing_settings(base: Sequence[RunRecord], new: Sequence[RunRecord]) -> tuple[str, ...]:
    """``key: BASE value → NEW value`` for each spec setting (other than the cell's identity) that differs."""
    def values(recs: Sequence[RunRecord]) -> dict[str, set[str]]:
        out: dict[str, set[str]] = defaultdict(set)
        for r in recs:
            for k, v in _flat(r.spec.to_dict()).items():
                out[k].add(v)
        return out

    vb, vn = values(base), values(new)
    diffs = []
    for key in sorted(set(vb) | set(vn)):
        if key in _IDENTITY or vb.get(key) == vn.get(key):
            continue
        diffs.append(f"{key}: {'/'.join(sorted(vb.get(key, {'–'})))} → {'/'.join(sorted(vn.get(key, {'–'})))}")
    return tuple(diffs)


_IDENTITY = {"task", "size", "activation", "optimizer", "optimizer_label", "seed", "trial"}


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and v:
            out.update(_flat(v, key))
        else:
            out[key] = str(v)
    return out


# --------------------------------------------------------------------------------------
# Two directories
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """One results directory as compared: its comparison records (split as the report splits them)."""

    path: Path
    records: list[RunRecord]
    problems: list[str]

    def describe(self) -> str:
        """Runs, commits, devices, hosts and torch versions, on one line."""
        prov = [r.provenance for r in self.records]

        def vals(get) -> str:
            found = sorted({str(v) for v in map(get, prov) if v})
            return ", ".join(found) if found else "–"

        commits = vals(lambda p: str(p.get("git_commit") or "")[:10])
        torch = vals(lambda p: (p.get("versions") or {}).get("torch"))
        return (f"{len(self.records)} runs; commit(s) {commits}; device(s) {vals(lambda p: p.get('device'))}; "
                f"GPU(s) {vals(lambda p: p.get('gpu'))}; host(s) {vals(lambda p: p.get('host'))}; torch {torch}")


@dataclass
class Comparison:
    """What :func:`compare_results` found and wrote.

    Attributes:
        base, new: The two directories as read.
        cells: One :class:`CellComparison` per common cell, sorted.
        added: Cells only in NEW; ``removed``: cells only in BASE.
        table: The display table (one row per common cell; ``_``-prefixed numeric columns).
        markdown: The text of ``compare.md``.
        notes: How records were grouped (columns split on settings).
        files: What was written (``compare.md``, ``compare.html``, ``compare.csv``).
    """

    base: Side
    new: Side
    threshold: float
    alpha: float
    cells: list[CellComparison]
    added: list[Cell]
    removed: list[Cell]
    table: pd.DataFrame
    markdown: str = ""
    notes: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    @property
    def regressions(self) -> list[CellComparison]:
        """The cells that regressed."""
        return [c for c in self.cells if c.regressions]

    @property
    def improvements(self) -> list[CellComparison]:
        """The cells that improved and did not regress."""
        return [c for c in self.cells if c.improvements and not c.regressions]


def _check_settings(threshold: float, alpha: float) -> None:
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold >= 0):
        raise ConfigError(f"Invalid threshold: {threshold!r} (need a relative change >= 0, e.g. 0.10 for 10%)")
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ConfigError(f"Invalid alpha: {alpha!r} (need a significance level in (0, 1), e.g. 0.05)")


def _read(path: str | Path, which: str) -> Side:
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ResultsError(f"{which} results path {path} is a file, not a directory: give a directory a suite wrote")
    if not path.is_dir():
        raise ResultsError(f"{which} results directory not found: {path}")
    loaded, problems = ResultStore(path, create=False).records()
    records = [r for r in loaded if r.spec.trial is None]
    if not records:
        trials = len(loaded) - len(records)
        what = f"only {trials} tuning trials" if trials else "no readable run records"
        raise ResultsError(f"{which} results directory {path} has {what}: nothing to compare")
    return Side(path, records, problems)


def _split_together(base: Sequence[RunRecord], new: Sequence[RunRecord]) -> tuple[list[RunRecord], list[RunRecord],
                                                                                    list[str]]:
    """Both directories' records split by :func:`split_mixed_cells` with one set of labels.

    A column is split on the settings that differ *within* a cell of either directory,
    never on a setting that merely differs between the two (that is what is being
    compared; it is reported per cell). To get exactly that from the report's function,
    the records of the two directories are passed together with their seeds kept apart
    (BASE's ``k``-th seed becomes ``2k``, NEW's ``2k + 1``), so no cell mixes records of
    both; the labels are then put on the original records.
    """
    seeds = {s: i for i, s in enumerate(sorted({r.spec.seed for r in [*base, *new]}))}
    apart = [replace(r, spec=replace(r.spec, seed=2 * seeds[r.spec.seed] + side))
             for side, recs in ((0, base), (1, new)) for r in recs]
    split, notes = split_mixed_cells(apart)
    labelled = [replace(r, spec=replace(r.spec, optimizer_label=s.spec.optimizer_label))
                if s.spec.optimizer_label != r.spec.optimizer_label else r
                for r, s in zip([*base, *new], split)]
    return labelled[:len(base)], labelled[len(base):], notes


def _by_cell(records: Sequence[RunRecord]) -> dict[Cell, list[RunRecord]]:
    cells: dict[Cell, list[RunRecord]] = defaultdict(list)
    for r in records:
        s = r.spec
        cells[(s.task, s.size, s.activation, s.display_optimizer)].append(r)
    return cells


def _cell_list(cells: Sequence[Cell], limit: int = 6) -> str:
    names = ["/".join(c) for c in sorted(cells)]
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def compare_results(base: str | Path, new: str | Path, out: str | Path | None = None, *, threshold: float = 0.10,
                    alpha: float = 0.05, write: bool = True) -> Comparison:
    """Compare two results directories cell by cell and write ``compare.md``, ``compare.html`` and ``compare.csv``.

    Args:
        base: The reference results directory.
        new: The directory judged against it.
        out: Where to write (default: ``<new>/compare-vs-<base directory name>``).
        threshold: Relative change that counts (0.10: step time ×1.10, loss +10%).
        alpha: Significance level of the one-sided tests.
        write: Write the files (False: only compute).

    Returns:
        The :class:`Comparison`; its ``regressions`` list the regressed cells.

    Raises:
        ConfigError: a bad threshold or alpha.
        ResultsError: a missing directory, one without comparison runs, or no cell in common.
    """
    _check_settings(threshold, alpha)
    b, n = _read(base, "BASE"), _read(new, "NEW")
    rb, rn, notes = _split_together(b.records, n.records)
    b, n = replace(b, records=rb), replace(n, records=rn)
    cb, cn = _by_cell(rb), _by_cell(rn)
    common = sorted(set(cb) & set(cn))
    if not common:
        raise ResultsError(f"No common cells between BASE {b.path} and NEW {n.path} (task/size/activation/optimizer): "
                           f"BASE has {_cell_list(list(cb))}; NEW has {_cell_list(list(cn))}")
    cells = [compare_cell(c, cb[c], cn[c], threshold=threshold, alpha=alpha) for c in common]
    comparison = Comparison(b, n, threshold, alpha, cells, sorted(set(cn) - set(cb)), sorted(set(cb) - set(cn)),
                            _table(cells), notes=notes)
    comparison.markdown = _markdown(comparison)
    if write:
        base_name = Path(base).resolve().name or "base"
        target = Path(out) if out is not None else Path(new) / f"compare-vs-{base_name}"
        comparison.files = _write(comparison, target)
    for c in comparison.regressions:
        log.info("regression in %s: %s", c.name, c.reasons())
    return comparison


# --------------------------------------------------------------------------------------
# Tables and files
# --------------------------------------------------------------------------------------


def _arrow(base: float, new: float, scale: float = 1.0) -> str:
    """``"4.73 → 9.45"`` (``–`` for a missing side)."""
    def one(v: float) -> str:
        return f"{v * scale:.4g}" if math.isfinite(v) else "–"

    return f"{one(base)} → {one(new)}"


def _numbers(prefix: str, c: Change) -> dict[str, Any]:
    """The numeric columns of one change (``_``-prefixed: CSV only), with the means' 95% intervals."""
    return {f"_{prefix}_base": c.base, f"_{prefix}_base_low": c.low_base, f"_{prefix}_base_high": c.high_base,
            f"_{prefix}_new": c.new, f"_{prefix}_new_low": c.low_new, f"_{prefix}_new_high": c.high_new,
            f"_{prefix}_relative": c.relative, f"_{prefix}_p_worse": c.p_worse, f"_{prefix}_rule": c.rule,
            f"_{prefix}_regressed": c.worse, f"_{prefix}_improved": c.better}


def _table(cells: Sequence[CellComparison]) -> pd.DataFrame:
    """One row per common cell: display columns, then ``_``-prefixed numeric ones (CSV)."""
    rows = []
    for c in cells:
        t, f, bl = c.time, c.final_loss, c.best_loss
        seeds = (f"{len(c.seeds_base)}" if c.seeds_base == c.seeds_new
                 else f"{len(c.seeds_base)} → {len(c.seeds_new)}")
        rows.append({
            **dict(zip(CELL_KEYS, c.cell)),
            "seeds": seeds,
            "runs ok": c.outcome_base if c.outcome_base == c.outcome_new else f"{c.outcome_base} → {c.outcome_new}",
            "ms/step": _arrow(t.base, t.new, 1e3),
            "time ratio": "–" if math.isnan(t.relative) else f"×{t.ratio:.3g} ({t.test_text()})",
            "final train loss": _arrow(f.base, f.new),
            "final Δ": f"{_pct(f.relative)} ({f.test_text()})" if f.rule != "none" else "–",
            "best train loss": _arrow(bl.base, bl.new),
            "best Δ": f"{_pct(bl.relative)} ({bl.test_text()})" if bl.rule != "none" else "–",
            "verdict": c.verdict,
            "_regression": bool(c.regressions), "_improved": bool(c.improvements) and not c.regressions,
            **_numbers("time", t), **_numbers("final", f), **_numbers("best", bl),
        })
    return pd.DataFrame(rows)


def _markdown(c: Comparison) -> str:
    """``compare.md``: the two directories, the verdict, the regressions, every common cell, the lists, the method."""
    reg, imp = c.regressions, c.improvements
    thr = f"{c.threshold:.0%}" if c.threshold * 100 == round(c.threshold * 100) else f"{c.threshold:g}"
    head = [f"# benchsuite comparison: `{c.new.path}` against `{c.base.path}`", "",
            f"- **BASE** `{c.base.path}`: {c.base.describe()}",
            f"- **NEW** `{c.new.path}`: {c.new.describe()}", ""]
    if reg:
        head.append(f"**{len(reg)} of {len(c.cells)} common cells regressed** (threshold {thr}, alpha {c.alpha:g}).")
    else:
        head.append(f"**No regressions** in {len(c.cells)} common cells (threshold {thr}, alpha {c.alpha:g}).")
    if imp:
        head[-1] += f" {len(imp)} improved."
    if c.added or c.removed:
        head[-1] += f" {len(c.added)} cells only in NEW, {len(c.removed)} only in BASE (listed below)."
    parts = head
    if reg:
        parts += ["", "## Regressions", "", *[f"- **{x.name}**: {x.reasons()}" for x in reg]]
    if imp:
        parts += ["", "## Improvements", "", *[f"- {x.name}: {', '.join(x.improvements)}" for x in imp]]
    shown = c.table.assign(verdict=[f"**{v}**" if v.startswith("REGRESSION") else v for v in c.table.verdict])
    parts += ["", "## Every common cell", "", to_markdown(shown)]
    for title, items in _lists(c):
        parts += ["", f"## {title}", "", *[f"- {item}" for item in items]]
    parts += ["", "## Method", "", _method(c.threshold, c.alpha)]
    return "\n".join(parts) + "\n"


def _lists(c: Comparison) -> list[tuple[str, list[str]]]:
    """The sections after the table, each a title and its items: added, removed, matching notes, unreadable files."""
    matched = [*c.notes, *(f"{x.name}: settings differ between BASE and NEW: {'; '.join(x.settings)}"
                           for x in c.cells if x.settings)]
    problems = [f"{side.path}: {problem}" for side in (c.base, c.new) for problem in side.problems]
    sections = [("Added cells (only in NEW)", ["/".join(x) for x in c.added]),
                ("Removed cells (only in BASE)", ["/".join(x) for x in c.removed]),
                ("How records were matched", matched), ("Unreadable record files (skipped)", problems)]
    return [(title, items) for title, items in sections if items]


def _method(threshold: float, alpha: float) -> str:
    return (
        "Cells are task × size × activation × optimizer column, seeds pooled; tuning trials are left out. "
        f"**Step time**: mean over runs of seconds per optimizer step, as a ratio NEW/BASE; its test is a one-sided "
        "Mann-Whitney U test on the per-step durations (differences of the step log's cumulative training time) "
        "pooled over seeds. **Final / best training loss** (completed runs): relative change of the mean over "
        "seeds, one-sided Mann-Whitney U test over seeds. A quantity **regressed** when it got worse by more than "
        f"the threshold ({threshold:g} relative; time ratio > {1 + threshold:g}) and the test gives p ≤ {alpha:g}. "
        "When the exact test cannot reach alpha (its smallest one-sided p-value is 1/C(n_BASE + n_NEW, n_BASE): "
        "1/6 at 2 vs 2 seeds, 1/20 at 3 vs 3) the column says *too few seeds* and the change counts as "
        "significant when the value ranges do not overlap (*apart*: every NEW value worse than every BASE value). "
        "A seed that completed in BASE and diverged, failed or timed out in NEW is a regression by itself. "
        "Improvements are the mirror image. compare.csv adds each mean's " + CI_METHOD + "."
    )


def _write(c: Comparison, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    md, html, csv = out / "compare.md", out / "compare.html", out / "compare.csv"
    md.write_text(c.markdown, encoding="utf-8")
    html.write_text(_html(c), encoding="utf-8")
    c.table.to_csv(csv, index=False)
    return [md, html, csv]


_REGRESSED_STYLE = "background-color: #f8d7da; color: #58151c; font-weight: bold"
_IMPROVED_STYLE = "background-color: #d1e7dd; color: #0a3622"


def _html(c: Comparison) -> str:
    """The comparison as HTML: a summary, the table (regressed rows red, improved green), the markdown's lists."""
    import html as _h

    table = c.table
    visible = table[[k for k in table.columns if not str(k).startswith("_")]]

    def row_style(row: pd.Series) -> list[str]:
        style = (_REGRESSED_STYLE if table.at[row.name, "_regression"]
                 else _IMPROVED_STYLE if table.at[row.name, "_improved"] else "")
        return [style] * len(row)

    styler = (visible.style.apply(row_style, axis=1).hide(axis="index")
              .set_table_styles([{"selector": "th, td", "props": "padding: 2px 8px; border: 1px solid #ccc;"},
                                 {"selector": "", "props": "border-collapse: collapse; font-size: 90%;"}]))
    reg = "".join(f"<li><b>{_h.escape(x.name)}</b>: {_h.escape(x.reasons())}</li>" for x in c.regressions)
    lists = "".join(f"<h2>{title}</h2><ul>" + "".join(f"<li>{_h.escape(item)}</li>" for item in items) + "</ul>"
                    for title, items in _lists(c))
    summary = (f"<p><b>{len(c.regressions)} of {len(c.cells)} common cells regressed.</b></p><ul>{reg}</ul>"
               if c.regressions else f"<p><b>No regressions</b> in {len(c.cells)} common cells.</p>")
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>benchsuite comparison</title></head><body>"
            f"<h1>benchsuite comparison</h1><p>BASE <code>{_h.escape(str(c.base.path))}</code>: "
            f"{_h.escape(c.base.describe())}<br>NEW <code>{_h.escape(str(c.new.path))}</code>: "
            f"{_h.escape(c.new.describe())}</p>{summary}<h2>Every common cell</h2>{styler.to_html()}{lists}"
            f"<h2>Method</h2><p>{_h.escape(_method(c.threshold, c.alpha))}</p></body></html>\n")


def print_summary(c: Comparison, console: Console) -> None:
    """A rich summary: one line per regressed cell saying why, then the counts and the files written."""
    from rich.markup import escape

    for note in c.notes:
        console.print(f"[yellow]note[/]: {escape(note)}", soft_wrap=True)
    for side in (c.base, c.new):
        for problem in side.problems:
            console.print(f"[yellow]skipped unreadable record[/]: {escape(problem)}", soft_wrap=True)
    for x in c.regressions:  # one line each, never cropped: the cell names are what a CI log is read for
        console.print(f"[bold red]REGRESSION[/] [bold]{escape(x.name)}[/]: {escape(x.reasons())}", soft_wrap=True)
    extra = f", {len(c.improvements)} improved" if c.improvements else ""
    moved = f"; {len(c.added)} cell(s) only in NEW, {len(c.removed)} only in BASE" if c.added or c.removed else ""
    word = f"[bold red]{len(c.regressions)} regressed[/]" if c.regressions else "[bold green]no regressions[/]"
    console.print(f"compare: {len(c.cells)} common cells, {word}{extra}{moved}", soft_wrap=True)
    if c.files:
        console.print(f"written: {escape(str(c.files[0]))}", soft_wrap=True)
        for f in c.files[1:]:
            console.print(f"         {escape(str(f))}", soft_wrap=True)
