"""Comparison tables from run frames: the per-task table, each optimizer against a baseline, curvature statistics.

Pure functions from the tidy frames of :mod:`benchsuite.report.frames` to tables. Every
aggregate over seeds is a mean with its 95% confidence interval
(:func:`~benchsuite.report.uncertainty.mean_ci`, :data:`~benchsuite.report.uncertainty.CI_METHOD`)
and the number of seeds behind it:

* :func:`comparison_stats` is the numeric comparison (``comparison.csv``): per
  quantity the columns ``<q>_mean``, ``<q>_ci_low``, ``<q>_ci_high`` and ``<q>_n``.
* :func:`comparison_table` is its display form (``"mean [low, high]"`` strings, plus
  ``_``-prefixed numeric columns for sorting), for markdown.
* :func:`paper_table`, :func:`paper_latex` and :func:`paper_html`: one quantity with
  rows = task × activation and columns = optimizer, the best mean of each row in bold,
  as a booktabs LaTeX tabular or an HTML table (pandas ``Styler``).

Writing a report from them is :mod:`benchsuite.report.build`'s job.
"""

from __future__ import annotations

import html
import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from benchsuite.records.record import Status
from benchsuite.report.frames import completed
from benchsuite.report.uncertainty import Interval, mean_ci

__all__ = ["GROUP", "PAPER_QUANTITIES", "PaperQuantity", "comparison_stats", "comparison_table", "format_comparison",
           "geometric_ci", "paper_html", "paper_latex", "paper_table", "stats_summary", "stats_table", "to_markdown",
           "versus_baseline"]

GROUP = ["task", "activation", "optimizer"]

# numeric quantity of comparison_stats -> (runs_frame column, scale, which runs)
_QUANTITIES: dict[str, tuple[str, float, str]] = {
    "final_train_loss": ("final_train_loss", 1.0, "completed"),
    "best_train_loss": ("best_train_loss", 1.0, "completed"),
    "final_valid_loss": ("final_valid_loss", 1.0, "completed"),
    "ttt_seconds": ("ttt_seconds", 1.0, "reached"),
    "ttt_step": ("ttt_step", 1.0, "reached"),
    "ms_per_step": ("sec_per_step", 1e3, "all"),
}
_NOT_COMPLETED = [s.value for s in Status if s is not Status.COMPLETED]


def _ci_columns(prefix: str, ci: Interval) -> dict[str, float | int]:
    """``{prefix}_mean``, ``_ci_low``, ``_ci_high`` (NaN below two values) and ``_n`` of one interval."""
    return {f"{prefix}_mean": ci.mean, f"{prefix}_ci_low": ci.low, f"{prefix}_ci_high": ci.high, f"{prefix}_n": ci.n}


def _interval(row: Any, prefix: str) -> Interval:
    """The :class:`Interval` stored under ``prefix`` in a row (``itertuples``) of :func:`comparison_stats`."""
    n = getattr(row, f"{prefix}_n")
    return Interval(float(getattr(row, f"{prefix}_mean")), float(getattr(row, f"{prefix}_ci_low")),
                    float(getattr(row, f"{prefix}_ci_high")), 0 if pd.isna(n) else int(n))


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    return frame[name] if name in frame else pd.Series(math.nan, index=frame.index, dtype=float)


def comparison_stats(runs: pd.DataFrame) -> pd.DataFrame:
    """The numeric comparison: one row per task × activation × optimizer, aggregated over seeds.

    Columns: the group keys; ``runs`` (seeds), ``completed`` and one count per other
    status (``diverged``, ``failed``, ``timeout``); for each quantity ``q`` in
    ``final_train_loss``, ``best_train_loss``, ``final_valid_loss`` (completed seeds),
    ``final_target_metric`` (completed seeds, the metric named in ``target_metric``),
    ``ttt_seconds`` and ``ttt_step`` (the seeds that reached the target, counted in
    ``reached``) and ``ms_per_step`` (every seed): ``q_mean``, ``q_ci_low``,
    ``q_ci_high`` (NaN below two values) and ``q_n``.

    Args:
        runs: :func:`~benchsuite.report.frames.runs_frame` rows.
    """
    rows = []
    for (task, act, opt), g in runs.groupby(GROUP, sort=True):
        done = completed(g)
        reached = g.reached_target.astype(bool)
        subsets = {"completed": done, "reached": reached, "all": pd.Series(True, index=g.index)}
        metric = g.target_metric.dropna().iloc[0] if g.target_metric.notna().any() else None
        row: dict[str, Any] = {"task": task, "activation": act, "optimizer": opt, "runs": len(g),
                               "completed": int(done.sum()),
                               **{s: int((g.status == s).sum()) for s in _NOT_COMPLETED},
                               "reached": int(reached.sum()), "target_metric": metric}
        for name, (col, scale, which) in _QUANTITIES.items():
            row.update(_ci_columns(name, mean_ci(_column(g, col)[subsets[which]] * scale)))
        target = _column(g, f"final_{metric}")[done] if metric else pd.Series(dtype=float)
        row.update(_ci_columns("final_target_metric", mean_ci(target)))
        rows.append(row)
    return pd.DataFrame(rows)


def _reached(ci: Interval, k: int, n: int, digits: int) -> str:
    """``"mean [low, high] (k/n)"`` (an interval where ≥ 2 seeds reached the target), ``"– (0/n)"``."""
    return f"{ci.format(digits)} ({k}/{n})"


def format_comparison(stats: pd.DataFrame) -> pd.DataFrame:
    """Display form of :func:`comparison_stats`: ``"mean [low, high]"`` strings (a single seed: its value).

    Keeps ``_final_train_loss`` (the mean) as a numeric column for sorting; markdown hides it.
    """
    rows = []
    for r in stats.itertuples(index=False):
        bad = ", ".join(f"{getattr(r, s)} {s}" for s in _NOT_COMPLETED if getattr(r, s))
        metric = r.target_metric if isinstance(r.target_metric, str) else None
        rows.append({
            "task": r.task, "activation": r.activation, "optimizer": r.optimizer,
            "runs ok": f"{r.completed}/{r.runs}" + (f" ({bad})" if bad else ""),
            "final train loss": _interval(r, "final_train_loss").format(),
            "best train loss": _interval(r, "best_train_loss").format(),
            "final valid loss": _interval(r, "final_valid_loss").format(),
            "final target metric": f"{metric}: {_interval(r, 'final_target_metric').format()}" if metric else "–",
            "time to target (s)": _reached(_interval(r, "ttt_seconds"), r.reached, r.runs, 3),
            "steps to target": _reached(_interval(r, "ttt_step"), r.reached, r.runs, 4),
            "ms/step": _interval(r, "ms_per_step").format(3),
            "_final_train_loss": r.final_train_loss_mean,
        })
    return pd.DataFrame(rows)


def comparison_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Aggregate ``runs_frame`` over seeds: one display row per task × activation × optimizer.

    Losses and the target metric: mean [95% CI] over the completed seeds; time and steps
    to target: mean [95% CI] over the seeds that reached the target, with ``(k/n)``
    reached (a CI where k ≥ 2); ms/step over every seed. See :func:`comparison_stats`
    for the numbers behind the strings.
    """
    return format_comparison(comparison_stats(runs))


# --------------------------------------------------------------------------------------
# Paper tables: one quantity, rows task × activation, columns optimizer
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PaperQuantity:
    """A quantity of :func:`comparison_stats` shown as a paper table.

    Attributes:
        prefix: The ``comparison_stats`` column prefix (``final_train_loss``).
        title: Caption text.
        reach: Whether the quantity exists only for seeds that reached the target (cells
            then show ``(k/n)``, and only a column whose every seed reached it can be bold).
        digits: Significant digits.
    """

    prefix: str
    title: str
    reach: bool = False
    digits: int = 4


PAPER_QUANTITIES = (
    PaperQuantity("final_train_loss", "Final training loss"),
    PaperQuantity("ttt_seconds", "Time to target (s; mean over the seeds that reached it)", reach=True, digits=3),
)


def paper_table(stats: pd.DataFrame, quantity: PaperQuantity,
                marked: Collection[tuple[str, str, str]] = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One quantity as rows = task × activation, columns = optimizer: the cell texts and the bold mask.

    The best (lowest) mean of each row is bold; a column with a seed that did not
    complete (diverged, failed, timed out) is not eligible, nor, for a quantity of the
    seeds that reached the target, one with a seed that did not reach it. Ties are all bold.

    Args:
        stats: :func:`comparison_stats` rows.
        quantity: Which quantity.
        marked: ``(task, activation, optimizer)`` cells to mark with ``†`` (untuned
            against a tuned column).

    Returns:
        ``(cells, bold)``: plain-text cells (``"mean [low, high]"``, ``"–"`` for none,
        ``" (k/n)"`` appended for a reach quantity, ``"†"`` for a marked cell) and a
        boolean frame of the same shape; index (task, activation), columns the optimizers.
    """
    if stats.empty:
        return pd.DataFrame(), pd.DataFrame()
    s = stats.set_index(["task", "activation", "optimizer"])
    eligible = s.completed == s.runs
    if quantity.reach:
        eligible &= s.reached == s.runs
    p = quantity.prefix
    text = pd.Series([Interval(m, lo, hi, int(n)).format(quantity.digits) for m, lo, hi, n in
                      zip(s[f"{p}_mean"], s[f"{p}_ci_low"], s[f"{p}_ci_high"], s[f"{p}_n"])], index=s.index)
    if quantity.reach:
        text = text + " (" + s.reached.astype(str) + "/" + s.runs.astype(str) + ")"
    text = text.where(~s.index.isin(list(marked)), text + "†")
    mean = s[f"{p}_mean"].where(eligible)
    best = mean.groupby(level=["task", "activation"]).transform("min")
    bold = (mean == best) & mean.notna()
    cells = text.unstack("optimizer").fillna("")
    return cells, bold.unstack("optimizer").reindex_like(cells).fillna(False).astype(bool)


def _latex_cell(text: str) -> str:
    """A plain cell text as LaTeX: ``–`` → ``--``, ``†`` → ``\\textsuperscript{\\dag}``, specials escaped."""
    out = text.replace("\\", r"\textbackslash{}")
    for ch in "&%$#_{}":
        out = out.replace(ch, "\\" + ch)
    return out.replace("–", "--").replace("†", r"\textsuperscript{\dag}")


def _with_row_labels(cells: pd.DataFrame, bold: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """``task`` and ``activation`` as leading columns (a task named once, on its first row) and the bold mask widened."""
    body = cells.reset_index()
    body["task"] = body.task.where(~body.task.duplicated(), "")
    body.columns.name = None
    mask = np.zeros(body.shape, dtype=bool)
    mask[:, 2:] = bold.to_numpy()
    return body, mask


def paper_latex(cells: pd.DataFrame, bold: pd.DataFrame, caption: str | None = None) -> str:
    """A booktabs ``tabular`` (``Styler.to_latex(hrules=True)``) with bold best cells, every text LaTeX-escaped.

    Needs only ``\\usepackage{booktabs}``; one header row (task, activation, the
    optimizers); ``caption`` goes into a leading ``%`` comment.
    """
    if cells.empty:
        return ""
    body, mask = _with_row_labels(cells, bold)
    styler = body.map(_latex_cell).style.hide(axis="index")
    styler = styler.apply(lambda _: np.where(mask, "textbf:--rwrap;", ""), axis=None)
    styler = styler.format_index(escape="latex", axis=1)
    latex = styler.to_latex(hrules=True, column_format="ll" + "c" * cells.shape[1])
    return (f"% {_latex_cell(caption)}\n" if caption else "") + latex


def paper_html(cells: pd.DataFrame, bold: pd.DataFrame, caption: str | None = None) -> str:
    """An HTML ``<table>`` fragment (``Styler.to_html``) with bold best cells; every text HTML-escaped."""
    if cells.empty:
        return ""
    body, mask = _with_row_labels(cells, bold)
    styler = body.style.hide(axis="index").apply(lambda _: np.where(mask, "font-weight: bold", ""), axis=None)
    styler = styler.format(escape="html").format_index(escape="html", axis=1)
    if caption:
        styler = styler.set_caption(html.escape(caption))
    return styler.set_table_attributes('class="benchsuite-paper"').to_html(doctype_html=False)


# --------------------------------------------------------------------------------------
# Against a baseline
# --------------------------------------------------------------------------------------


def versus_baseline(runs: pd.DataFrame, steps: pd.DataFrame, baseline: str = "adam", window: int = 5) -> pd.DataFrame:
    """Each optimizer against ``baseline`` on the same task, activation and seed.

    *Per step*: final training loss (full evaluation) as a ratio to the baseline's when
    both took the same number of steps; otherwise (a time budget stops them at
    different steps) the mean mini-batch loss over the last ``window`` steps up to
    ``S = min(own steps, baseline's)``, from the per-step logs. *Per second*: mean mini-batch loss over the last
    ``window`` steps finished within ``T = min(own training time, baseline's)``, as a
    ratio — a slower method is judged at the time the faster one stopped, from the
    per-step log (every step is timed, so no evaluation cadence biases it). Ratios
    < 1 mean the optimizer wins; the columns give the geometric mean over seeds with its
    95% interval (Student-t on the log ratios, exponentiated), the seeds it won and the
    number of paired seeds. ``_``-prefixed numeric columns (``_per_step``,
    ``_per_step_low``, ``_per_step_high``, ``_per_step_n`` and the same per second)
    hold the numbers behind the strings.
    """
    if steps.empty or baseline not in set(runs.optimizer):
        return pd.DataFrame()
    ok = runs[completed(runs)]
    logs = _StepLogs(steps[steps.run_id.isin(ok.run_id)], window)
    base = ok[ok.optimizer == baseline].set_index(["task", "activation", "seed"])
    rows = []
    for (task, act, opt), g in ok.groupby(["task", "activation", "optimizer"]):
        if opt == baseline:
            continue
        pairs = [(r, base.loc[(task, act, r.seed)]) for r in g.itertuples() if (task, act, r.seed) in base.index]
        if pairs:
            step_r = [logs.per_step_ratio(r, b) for r, b in pairs]
            time_r = [logs.per_second_ratio(r, b) for r, b in pairs]
            rows.append({"task": task, "activation": act, "optimizer": opt, "seeds": len(pairs),
                         **_verdict("per step", step_r), **_verdict("per second", time_r)})
    return pd.DataFrame(rows)


class _StepLogs:
    """Per-step losses of the runs, for loss ratios at equal steps or equal training time."""

    def __init__(self, steps: pd.DataFrame, window: int):
        self.by_run = {rid: g.sort_values("time") for rid, g in steps.groupby("run_id")}
        self.window = window

    def loss_within(self, run_id: str, limit: float, column: str = "time") -> float:
        """Mean mini-batch loss of the last ``window`` steps with ``column`` ≤ ``limit`` (NaN if none)."""
        g = self.by_run.get(run_id)
        if g is None:
            return math.nan
        done = g[g[column] <= limit + 1e-12]
        return float(done.loss.iloc[-self.window:].mean()) if len(done) else math.nan

    def per_step_ratio(self, run: Any, base: Any) -> float:
        """Final training loss ratio at equal steps, else the step-log ratio at the smaller step count."""
        if run.steps == base.steps:
            return run.final_train_loss / base.final_train_loss
        s = min(run.steps, base.steps)
        return self.loss_within(run.run_id, s, "step") / self.loss_within(base.run_id, s, "step")

    def per_second_ratio(self, run: Any, base: Any) -> float:
        """Step-log loss ratio within the shorter of the two training times."""
        t = min(run.train_seconds, base.train_seconds)
        return self.loss_within(run.run_id, t) / self.loss_within(base.run_id, t)


def geometric_ci(ratios: Any) -> Interval:
    """Geometric mean of the positive finite ``ratios`` with its interval: :func:`mean_ci` of the logs, exponentiated."""
    r = np.asarray(ratios, dtype=float).ravel()
    r = r[np.isfinite(r) & (r > 0)]
    ci = mean_ci(np.log(r))
    return Interval(math.exp(ci.mean), math.exp(ci.low), math.exp(ci.high), ci.n) if ci.n else ci


def _verdict(label: str, ratios: list[float]) -> dict[str, Any]:
    ci = geometric_ci(ratios)
    key = "_" + label.replace(" ", "_")
    numbers = {key: ci.mean, f"{key}_low": ci.low, f"{key}_high": ci.high, f"{key}_n": ci.n}
    if ci.n == 0:
        return {f"loss ratio {label}": "–", f"{label}": "–", **numbers}
    r = np.asarray(ratios, dtype=float)
    r = r[np.isfinite(r) & (r > 0)]
    wins = int((r < 1).sum())
    word = "wins" if wins == r.size else "loses" if wins == 0 else "mixed"
    return {f"loss ratio {label}": ci.format(3), label: f"{word} ({wins}/{r.size})", **numbers}


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (no extra dependency)."""
    cols = [c for c in df.columns if not str(c).startswith("_")]
    lines = ["| " + " | ".join(str(c).replace("|", "\\|") for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in df[cols].iterrows():
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Curvature statistics
# --------------------------------------------------------------------------------------


_LAYER_SUMMARIES = {  # per-layer statistic -> (how to reduce over layers, column name)
    "block_rel_diff": ("max", "max rel. diff H_l vs G_l"),
    "block_min_eig": ("min", "min eig of H_l"),
    "block_rel_diff_est": ("max", "max rel. diff H_l vs G_l (randomised, large blocks)"),
    "block_min_eig_ritz": ("min", "min Ritz value of H_l (upper bound, large blocks)"),
    "dead_frac": ("mean", "dead units (mean over layers)"),
    "dead_flips": ("sum", "dead<->alive flips"),
}


def stats_summary(stats: pd.DataFrame) -> pd.DataFrame:
    """Last probe of each run, over seeds: one row per task × activation × optimizer × column (numeric).

    Whole-model statistics are taken as they are; the top eigenvalues as their
    largest; per-layer ones reduced over layers so the piecewise-linear facts read at
    a glance (max relative H-vs-G block difference, smallest block eigenvalue). Columns:
    the group keys, ``column``, ``mean``, ``ci_low``, ``ci_high``, ``n`` (seeds).
    """
    if stats.empty:
        return pd.DataFrame()
    last_step = stats.groupby("run_id").step.transform("max")
    last = stats[stats.step == last_step].copy()
    base = last.statistic.str.split("/").str[0]
    rows = []
    for (key, name), g in last.groupby([[*zip(*(last[c] for c in [*GROUP, "seed"]))], base]):
        if name in _LAYER_SUMMARIES:
            how, col = _LAYER_SUMMARIES[name]
            value = getattr(g.value, how)()
        elif name in ("eig_H", "eig_G"):
            col, value = f"top {name}", g.value.max()
        else:  # whole-model value; per-layer traces stay in stats.csv and the plots
            whole = g[g.statistic == name]
            if whole.empty:
                continue
            col, value = name, whole.value.iloc[0]
        rows.append({**dict(zip([*GROUP, "seed"], key)), "column": col, "value": value})
    if not rows:
        return pd.DataFrame()
    per_seed = pd.DataFrame(rows)
    out = []
    for (task, act, opt, col), g in per_seed.groupby([*GROUP, "column"], sort=True):
        ci = mean_ci(g.value)
        out.append({"task": task, "activation": act, "optimizer": opt, "column": col, "mean": ci.mean,
                    "ci_low": ci.low, "ci_high": ci.high, "n": ci.n})
    return pd.DataFrame(out)


def stats_table(stats: pd.DataFrame) -> pd.DataFrame:
    """The curvature table: last probe of each run, ``"mean [low, high]"`` over seeds per task × activation × optimizer.

    One column per statistic (see :func:`stats_summary`) and ``seeds``: the number of
    runs with a probe.
    """
    summary = stats_summary(stats)
    if summary.empty:
        return pd.DataFrame()
    summary["text"] = [Interval(m, lo, hi, n).format() for m, lo, hi, n in
                       zip(summary["mean"], summary.ci_low, summary.ci_high, summary.n)]
    table = summary.pivot(index=GROUP, columns="column", values="text").fillna("–")
    table.columns.name = None
    seeds = stats.groupby(GROUP).run_id.nunique().rename("seeds")
    return table.join(seeds).reset_index()[[*GROUP, "seeds", *table.columns]]
