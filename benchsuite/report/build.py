"""Comparison tables from the results store: markdown, CSV, LaTeX-free HTML, plus plots.

The table has one row per task × activation × optimizer and aggregates over seeds:
final and best training loss (mean ± std), the task's target metric at the end,
time-to-target (median training seconds over the seeds that reached it) and
milliseconds per optimizer step.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from benchsuite.report.frames import completed, evals_frame, runs_frame, stats_frame, steps_frame
from benchsuite.records.record import RunRecord
from benchsuite.records.store import ResultStore
from benchsuite.run.tuning import trial_table, tuning_summary

__all__ = ["Report", "build_report", "comparison_table", "to_markdown"]
log = logging.getLogger(__name__)

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
    by_run = {rid: g.sort_values("time") for rid, g in steps[steps.run_id.isin(ok.run_id)].groupby("run_id")}

    def loss_within(run_id: str, t: float, column: str = "time") -> float:
        g = by_run.get(run_id)
        if g is None:
            return math.nan
        done = g[g[column] <= t + 1e-12]
        return float(done.loss.iloc[-window:].mean()) if len(done) else math.nan

    base = ok[ok.optimizer == baseline].set_index(["task", "activation", "seed"])
    rows = []
    for (task, act, opt), g in ok.groupby(["task", "activation", "optimizer"]):
        if opt == baseline:
            continue
        step_r, time_r = [], []
        for r in g.itertuples():
            if (task, act, r.seed) not in base.index:
                continue
            b = base.loc[(task, act, r.seed)]
            if r.steps == b.steps:
                step_r.append(r.final_train_loss / b.final_train_loss)
            else:
                s = min(r.steps, b.steps)
                step_r.append(loss_within(r.run_id, s, "step") / loss_within(b.run_id, s, "step"))
            t = min(r.train_seconds, b.train_seconds)
            time_r.append(loss_within(r.run_id, t) / loss_within(b.run_id, t))
        if step_r:
            rows.append({"task": task, "activation": act, "optimizer": opt,
                         **_verdict("per step", step_r), **_verdict("per second", time_r)})
    return pd.DataFrame(rows)


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


@dataclass
class Report:
    runs: pd.DataFrame
    table: pd.DataFrame
    markdown: str
    files: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def build_report(results: str | Path, out: str | Path | None = None, *, plots: bool = True,
                 tuning_metric: str = "valid_loss") -> Report:
    """Read every record under ``results`` and write ``report.md``, CSVs and plots to ``out``.

    Tuning trials (records whose spec has a ``trial``) are kept out of the comparison
    and summarised in a tuning section (winner and spread, selected on
    ``tuning_metric``) and ``tuning.csv``. Broken record files are skipped and listed
    (in the report and the return value); nothing under ``results`` is modified.
    """
    store = ResultStore(results, create=False)
    records, problems = store.records()
    trials = [r for r in records if r.spec.trial is not None]
    records = [r for r in records if r.spec.trial is None]
    out = Path(out) if out is not None else Path(results) / "report"
    out.mkdir(parents=True, exist_ok=True)
    runs = runs_frame(records)
    if runs.empty:
        md = f"# benchsuite report\n\nNo readable run records in `{results}`.\n"
        if trials:  # interrupted during tuning: show how far it got
            md = (f"# benchsuite report\n\nNo comparison runs yet in `{results}`; {len(trials)} tuning trials "
                  f"so far (run the suite again to resume).\n\n"
                  + to_markdown(tuning_summary(trials, tuning_metric)) + "\n")
        (out / "report.md").write_text(md, encoding="utf-8")
        return Report(runs, pd.DataFrame(), md, [out / "report.md"], problems)
    table = comparison_table(runs)
    evals, steps, stats = evals_frame(records), steps_frame(records), stats_frame(records)
    versus = versus_baseline(runs, steps)
    tuning = tuning_summary(trials, tuning_metric, finals=records) if trials else pd.DataFrame()
    per_trial = trial_table(trials, tuning_metric) if trials else pd.DataFrame()
    md = _markdown(records, runs, table, stats, problems, versus, tuning, tuning_metric, n_trials=len(trials))
    files = [out / "report.md", out / "runs.csv", out / "comparison.csv"]
    files[0].write_text(md, encoding="utf-8")
    runs.to_csv(files[1], index=False)
    table.to_csv(files[2], index=False)
    evals.to_csv(out / "evals.csv", index=False)
    files.append(out / "evals.csv")
    if trials:
        per_trial.to_csv(out / "tuning.csv", index=False)
        files.append(out / "tuning.csv")
    if not stats.empty:
        stats.to_csv(out / "stats.csv", index=False)
        files.append(out / "stats.csv")
    if plots:
        from benchsuite.report.plots import plot_curvature, plot_loss

        files += plot_loss(evals, steps, out)
        files += plot_curvature(stats, out)
        if trials:
            from benchsuite.report.plots import plot_tuning

            files += plot_tuning(per_trial, tuning_metric, out)
    return Report(runs, table, md, files, problems)


def _markdown(records: Sequence[RunRecord], runs: pd.DataFrame, table: pd.DataFrame, stats: pd.DataFrame,
              problems: list[str], versus: pd.DataFrame | None = None, tuning: pd.DataFrame | None = None,
              tuning_metric: str = "valid_loss", n_trials: int = 0) -> str:
    prov = records[0].provenance
    commits = sorted({str(c)[:10] for c in runs.git_commit.dropna()})
    devices = sorted({str(d) for d in runs.device.dropna()})
    parts = [
        "# benchsuite report",
        "",
        f"{len(runs)} runs" + (f" (and {n_trials} tuning trials)" if n_trials else "") + f"; tasks: {', '.join(sorted(runs.task.unique()))}; "
        f"device(s): {', '.join(devices)}; commit(s): {', '.join(commits)}; "
        f"torch {prov.get('versions', {}).get('torch')}; host {prov.get('host')}.",
        "",
        "Losses are evaluated on the full training split (or its first `eval_train_examples`) "
        "at the eval cadence; ± is the standard deviation over seeds of completed runs. "
        "Time is training work only (evaluation and probes excluded).",
    ]
    for task, t in table.groupby("task", sort=True):
        parts += ["", f"## {task}", "", to_markdown(t.drop(columns=["task"]))]
        winners = _winners(runs[runs.task == task])
        if winners:
            parts += ["", winners]
    if versus is not None and not versus.empty:
        parts += ["", "## Against Adam (same task, activation, seed)", "",
                  "Loss ratio = this optimizer's training loss / Adam's (geometric mean over seeds; < 1: "
                  "better). Per step: full training loss after the same number of steps (or, when a time budget "
                  "stopped the two at different steps, mean mini-batch loss of the last 5 steps up to the "
                  "smaller step count). Per second: mean "
                  "mini-batch loss of the last 5 steps finished within the shorter of the two training "
                  "times.", "", to_markdown(versus)]
    if tuning is not None and not tuning.empty:
        parts += ["", "## Tuning (quasi-random trials, selected on validation)", "",
                  f"Each listed optimizer was tuned per task and activation: its trials drew hyperparameters "
                  f"from its search space (scrambled Halton sequence, fixed seed) and the trial with the lowest "
                  f"`{tuning_metric}` at its final evaluation (mean over trial seeds; diverged = +inf) won; "
                  "the tables above show the winner's final runs. The spread columns say how sensitive the "
                  "optimizer was to its hyperparameters. Optimizers not listed ran with their suite settings.",
                  "", to_markdown(tuning)]
    st = stats_table(stats)
    if not st.empty:
        parts += ["", "## Curvature statistics (last probe, mean over seeds)", "", to_markdown(st)]
    bad = runs[~completed(runs)]
    if not bad.empty:
        parts += ["", "## Runs that did not complete", ""]
        parts += [f"- {r.task}/{r.activation}/{r.optimizer}/seed {r.seed}: **{r.status}** — {r.reason}"
                  for r in bad.itertuples()]
    if problems:
        parts += ["", "## Unreadable record files (skipped)", ""] + [f"- {p}" for p in problems]
    return "\n".join(parts) + "\n"


def _winners(runs: pd.DataFrame) -> str:
    """Per activation: lowest mean final training loss, and fastest median time-to-target."""
    lines = []
    for act, g in runs.groupby("activation", sort=True):
        ok = g[completed(g)]
        if ok.empty or "final_train_loss" not in ok:
            continue
        by_loss = ok.groupby("optimizer").final_train_loss.mean().dropna()
        if by_loss.empty:
            continue
        text = f"- **{act}**: lowest final train loss: {by_loss.idxmin()} ({by_loss.min():.4g})"
        reached = g[g.reached_target].groupby("optimizer").ttt_seconds.median()
        if not reached.empty:
            text += f"; fastest to target: {reached.idxmin()} ({reached.min():.3g} s)"
        lines.append(text)
    return "\n".join(lines)
