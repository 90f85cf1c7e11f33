"""Comparison tables from run frames: the per-task table, each optimizer against a baseline, curvature statistics.

Pure functions from the tidy frames of :mod:`benchsuite.report.frames` to display
tables (pandas DataFrames of formatted strings, plus ``_``-prefixed numeric columns
for sorting and CSV consumers) and their markdown form. Writing a report from them is
:mod:`benchsuite.report.build`'s job.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from benchsuite.report.frames import completed

__all__ = ["GROUP", "comparison_table", "stats_table", "to_markdown", "versus_baseline"]

GROUP = ["task", "activation", "optimizer"]


def _pm(values: pd.Series, digits: int = 4) -> str:
    v = values.dropna().astype(float)
    if v.empty:
        return "–"
    if len(v) == 1:
        return f"{v.iloc[0]:.{digits}g}"
    return f"{v.mean():.{digits}g} ± {v.std(ddof=1):.2g}"


def _outcome(runs: pd.DataFrame) -> str:
    done = completed(runs)
    n, ok = len(runs), int(done.sum())
    bad = runs.status[~done].value_counts()
    extra = ", ".join(f"{c} {s}" for s, c in bad.items())
    return f"{ok}/{n}" + (f" ({extra})" if extra else "")


def comparison_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Aggregate ``runs_frame`` over seeds: one row per task × activation × optimizer."""
    rows = []
    for (task, act, opt), g in runs.groupby(GROUP, sort=True):
        ok = g[completed(g)]
        metric = g.target_metric.dropna().iloc[0] if g.target_metric.notna().any() else None
        reached = g[g.reached_target]
        rows.append({
            "task": task, "activation": act, "optimizer": opt,
            "runs ok": _outcome(g),
            "final train loss": _pm(ok.get("final_train_loss", pd.Series(dtype=float))),
            "best train loss": _pm(ok.get("best_train_loss", pd.Series(dtype=float))),
            "final valid loss": _pm(ok.get("final_valid_loss", pd.Series(dtype=float))),
            "final target metric": (
                f"{metric}: {_pm(ok.get(f'final_{metric}', pd.Series(dtype=float)))}" if metric else "–"),
            "time to target (s)": (f"{reached.ttt_seconds.median():.3g} ({len(reached)}/{len(g)})"
                                   if len(reached) else f"– (0/{len(g)})"),
            "steps to target": f"{reached.ttt_step.median():.0f}" if len(reached) else "–",
            "ms/step": _pm(g.sec_per_step * 1e3, 3),
            # numeric columns for sorting and CSV consumers
            "_final_train_loss": ok.get("final_train_loss", pd.Series(dtype=float)).mean(),
        })
    return pd.DataFrame(rows)


def versus_baseline(runs: pd.DataFrame, steps: pd.DataFrame, baseline: str = "adam", window: int = 5) -> pd.DataFrame:
    """Each optimizer against ``baseline`` on the same task, activation and seed.

    *Per step*: final training loss (full evaluation) as a ratio to the baseline's when
    both took the same number of steps; otherwise (a time budget stops them at
    different steps) the mean mini-batch loss over the last ``window`` steps up to
    ``S = min(own steps, baseline's)``, from the per-step logs. *Per second*: mean mini-batch loss over the last
    ``window`` steps finished within ``T = min(own training time, baseline's)``, as a
    ratio — a slower method is judged at the time the faster one stopped, from the
    per-step log (every step is timed, so no evaluation cadence biases it). Ratios
    < 1 mean the optimizer wins; the columns give the geometric mean over seeds and
    the seeds it won.
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
            rows.append({"task": task, "activation": act, "optimizer": opt,
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


def _verdict(label: str, ratios: list[float]) -> dict[str, str]:
    r = np.array([x for x in ratios if x == x and x > 0])
    if r.size == 0:
        return {f"loss ratio {label}": "–", f"{label}": "–"}
    gm = float(np.exp(np.log(r).mean()))
    wins = int((r < 1).sum())
    word = "wins" if wins == r.size else "loses" if wins == 0 else "mixed"
    return {f"loss ratio {label}": f"{gm:.3g}", label: f"{word} ({wins}/{r.size})"}


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (no extra dependency)."""
    cols = [c for c in df.columns if not str(c).startswith("_")]
    lines = ["| " + " | ".join(str(c).replace("|", "\\|") for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in df[cols].iterrows():
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)


_LAYER_SUMMARIES = {  # per-layer statistic -> (how to reduce over layers, column name)
    "block_rel_diff": ("max", "max rel. diff H_l vs G_l"),
    "block_min_eig": ("min", "min eig of H_l"),
    "dead_frac": ("mean", "dead units (mean over layers)"),
    "dead_flips": ("sum", "dead<->alive flips"),
}


def stats_table(stats: pd.DataFrame) -> pd.DataFrame:
    """Last probe of each run, mean over seeds, per task × activation × optimizer.

    Whole-model statistics are shown as they are; the top eigenvalues as their
    largest; per-layer ones reduced over layers so the piecewise-linear facts read at
    a glance (max relative H-vs-G block difference, smallest block eigenvalue).
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
    table = pd.DataFrame(rows).groupby([*GROUP, "column"]).value.mean().unstack("column").reset_index()
    return table.map(lambda v: f"{v:.4g}" if isinstance(v, float) else v)
