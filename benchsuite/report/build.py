"""The report of a results directory: ``report.md``, CSV files and plots.

Reads every record of the store, keeps tuning trials out of the comparison, builds
the tables (:mod:`benchsuite.report.tables`) and plots (:mod:`benchsuite.report.plots`)
and assembles the markdown document. Nothing under the results directory is modified.

The comparison table has one row per task × activation × optimizer and aggregates over seeds:
final and best training loss (mean ± std), the task's target metric at the end,
time-to-target (median training seconds over the seeds that reached it) and
milliseconds per optimizer step.

A *How each column was tuned* section (:mod:`benchsuite.report.tuned`) says, for every
optimizer column, how it was tuned (trials × seeds, trial budget, selection metric,
dimensions searched) or which suite settings it ran untuned; wherever the report
compares a tuned column with an untuned one (the per-task tables, the winner lines,
the against-Adam table) the untuned column is marked † and a sentence says the
comparison is not like-for-like.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from benchsuite.records.record import RunRecord
from benchsuite.records.store import ResultStore
from benchsuite.report.cells import split_mixed_cells
from benchsuite.report.frames import completed, evals_frame, runs_frame, stats_frame, steps_frame
from benchsuite.report.tables import comparison_table, stats_table, to_markdown, versus_baseline
from benchsuite.report.tuned import UNTUNED_MARK, TuningStatus, tuning_status
from benchsuite.run.tuning import trial_table, tuning_summary

__all__ = ["Report", "build_report"]
log = logging.getLogger(__name__)


@dataclass
class Report:
    """What :func:`build_report` wrote: the runs frame, the comparison table, the markdown and the files.

    ``problems`` lists the record files that could not be read (skipped); ``notes`` how
    records were grouped (columns split because a cell held runs with other settings).
    """

    runs: pd.DataFrame
    table: pd.DataFrame
    markdown: str
    files: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class _Contents:
    """Everything a report shows, built once from the records."""

    records: list[RunRecord]
    trials: list[RunRecord]
    problems: list[str]
    tuning_metric: str
    runs: pd.DataFrame
    table: pd.DataFrame
    evals: pd.DataFrame
    steps: pd.DataFrame
    stats: pd.DataFrame
    versus: pd.DataFrame
    tuning: pd.DataFrame
    per_trial: pd.DataFrame
    status: TuningStatus

    @classmethod
    def of(cls, records: list[RunRecord], trials: list[RunRecord], runs: pd.DataFrame, problems: list[str],
           tuning_metric: str) -> _Contents:
        steps = steps_frame(records)
        status = tuning_status(records, trials, tuning_metric)
        if " or " not in status.metric:  # the records show which single metric selected: report on it
            tuning_metric = status.metric
        tuning = tuning_summary(trials, tuning_metric, finals=records) if trials else pd.DataFrame()
        per_trial = trial_table(trials, tuning_metric) if trials else pd.DataFrame()
        return cls(records, trials, problems, tuning_metric, runs, comparison_table(runs), evals_frame(records),
                   steps, stats_frame(records), versus_baseline(runs, steps), tuning, per_trial, status)


def build_report(results: str | Path, out: str | Path | None = None, *, plots: bool = True,
                 tuning_metric: str = "valid_loss") -> Report:
    """Read every record under ``results`` and write ``report.md``, CSVs and plots to ``out``.

    Tuning trials (records whose spec has a ``trial``) are kept out of the comparison
    and summarised in a tuning section (winner and spread, selected on
    ``tuning_metric``) and ``tuning.csv``; the *How each column was tuned* section
    and the † marks on comparisons of a tuned with an untuned column come from the
    same records (a directory without trials: every column untuned, nothing marked). Broken record files are skipped and listed
    (in the report and the return value); nothing under ``results`` is modified.

    Args:
        results: A results directory (raises :class:`~benchsuite.errors.ResultsError` if missing).
        out: Where to write (default: ``<results>/report``).
        plots: Also write the PNG plots.
        tuning_metric: The evaluation column (``train_*`` or ``valid_*``) that selected the tuning winners.
    """
    loaded, problems = ResultStore(results, create=False).records()
    trials = [r for r in loaded if r.spec.trial is not None]
    records, notes = split_mixed_cells([r for r in loaded if r.spec.trial is None])
    out = Path(out) if out is not None else Path(results) / "report"
    out.mkdir(parents=True, exist_ok=True)
    runs = runs_frame(records)
    if runs.empty:
        md = _no_runs_markdown(results, trials, tuning_metric)
        (out / "report.md").write_text(md, encoding="utf-8")
        return Report(runs, pd.DataFrame(), md, [out / "report.md"], problems, notes)
    contents = _Contents.of(records, trials, runs, problems, tuning_metric)
    md = _markdown(contents, notes)
    files = _write_tables(contents, md, out)
    if plots:
        files += _write_plots(contents, out)
    return Report(runs, contents.table, md, files, problems, notes)


def _no_runs_markdown(results: str | Path, trials: Sequence[RunRecord], tuning_metric: str) -> str:
    if not trials:
        return f"# benchsuite report\n\nNo readable run records in `{results}`.\n"
    return (f"# benchsuite report\n\nNo comparison runs yet in `{results}`; {len(trials)} tuning trials "  # interrupted
            f"so far (run the suite again to resume).\n\n" + to_markdown(tuning_summary(trials, tuning_metric)) + "\n")


def _write_tables(c: _Contents, md: str, out: Path) -> list[Path]:
    """``report.md`` and the CSV files; their paths, report first."""
    (out / "report.md").write_text(md, encoding="utf-8")
    frames = {"runs.csv": c.runs, "comparison.csv": c.table, "evals.csv": c.evals}
    if c.trials:
        frames["tuning.csv"] = c.per_trial
    if not c.stats.empty:
        frames["stats.csv"] = c.stats
    for name, frame in frames.items():
        frame.to_csv(out / name, index=False)
    return [out / "report.md", *(out / name for name in frames)]


def _write_plots(c: _Contents, out: Path) -> list[Path]:
    from benchsuite.report.plots import plot_curvature, plot_loss, plot_tuning

    files = plot_loss(c.evals, c.steps, out) + plot_curvature(c.stats, out)
    if c.trials:
        files += plot_tuning(c.per_trial, c.tuning_metric, out)
    return files


def _markdown(c: _Contents, notes: Sequence[str] = ()) -> str:
    parts = _header(c)
    if notes:
        parts += ["", "## How records were grouped", "", *[f"- {n}" for n in notes]]
    parts += _how_tuned_section(c.status)
    for task, t in c.table.groupby("task", sort=True):
        marked, flagged = c.status.mark_rows(t)
        parts += ["", f"## {task}", "", to_markdown(marked.drop(columns=["task"]))]
        winners = _winners(c.runs[c.runs.task == task], c.status)
        if winners:
            parts += ["", winners]
        if flagged:
            parts += ["", c.status.sentence(flagged)]
    parts += _versus_section(c.versus, c.status) + _tuning_section(c.tuning, c.tuning_metric)
    st = stats_table(c.stats)
    if not st.empty:
        parts += ["", "## Curvature statistics (last probe, mean over seeds)", "", to_markdown(st)]
    parts += _trouble_sections(c.runs, c.problems)
    return "\n".join(parts) + "\n"


def _header(c: _Contents) -> list[str]:
    prov, runs = c.records[0].provenance, c.runs
    commits = sorted({str(x)[:10] for x in runs.git_commit.dropna()})
    devices = sorted({str(d) for d in runs.device.dropna()})
    trials = f" (and {len(c.trials)} tuning trials)" if c.trials else ""
    return [
        "# benchsuite report",
        "",
        f"{len(runs)} runs{trials}; tasks: {', '.join(sorted(runs.task.unique()))}; "
        f"device(s): {', '.join(devices)}; commit(s): {', '.join(commits)}; "
        f"torch {prov.get('versions', {}).get('torch')}; host {prov.get('host')}.",
        "",
        "Losses are evaluated on the full training split (or its first `eval_train_examples`) "
        "at the eval cadence; ± is the standard deviation over seeds of completed runs. "
        "Time is training work only (evaluation and probes excluded).",
    ]


def _how_tuned_section(status: TuningStatus) -> list[str]:
    """Per column: trials × seeds, trial budget, metric and dimensions searched, or its untuned settings."""
    if not status.tuned:
        intro = ("No column was tuned: every column ran with its suite settings (listed below), so the "
                 "comparisons are like-for-like only in that none was tuned.")
    else:
        intro = (f"A tuned column ran, in each task × activation, the hyperparameters of its best trial on "
                 f"`{status.metric}` (trials drawn quasi-randomly from the search space listed; *trials × seeds* "
                 "per task × activation); an untuned one ran its suite settings.")
        if status.note:
            intro += " " + status.note
        if status.any_mixed:
            intro += (f" Some comparisons pit a tuned column against an untuned one: the untuned column is marked "
                      f"{UNTUNED_MARK} there.")
    return ["", "## How each column was tuned", "", intro, "", to_markdown(status.table)]


def _versus_section(versus: pd.DataFrame, status: TuningStatus) -> list[str]:
    """Each column against Adam; a row pitting a tuned against an untuned column is marked."""
    if versus.empty:
        return []
    rows, flagged = [], set()
    for r in versus.itertuples():
        name = r.optimizer
        if status.mixed(r.task, r.activation, [r.optimizer, "adam"]):
            untuned = r.optimizer if not status.is_tuned(r.task, r.activation, r.optimizer) else "adam"
            flagged.add(untuned)
            name = f"{r.optimizer}{UNTUNED_MARK}" if untuned == r.optimizer else f"{r.optimizer} (vs adam{UNTUNED_MARK})"
        rows.append(name)
    marked = versus.assign(optimizer=rows)
    note = ["", status.sentence(sorted(flagged))] if flagged else []
    return ["", "## Against Adam (same task, activation, seed)", "",
            "Loss ratio = this optimizer's training loss / Adam's (geometric mean over seeds; < 1: "
            "better). Per step: full training loss after the same number of steps (or, when a time budget "
            "stopped the two at different steps, mean mini-batch loss of the last 5 steps up to the "
            "smaller step count). Per second: mean "
            "mini-batch loss of the last 5 steps finished within the shorter of the two training "
            "times.", "", to_markdown(marked), *note]


def _tuning_section(tuning: pd.DataFrame, tuning_metric: str) -> list[str]:
    if tuning.empty:
        return []
    return ["", f"## Tuning (quasi-random trials, selected on {tuning_metric})", "",
            f"Each listed optimizer was tuned per task and activation: its trials drew hyperparameters "
            f"from its search space (scrambled Halton sequence, fixed seed) and the trial with the lowest "
            f"`{tuning_metric}` at its final evaluation (mean over trial seeds; diverged = +inf) won; "
            "the tables above show the winner's final runs. The spread columns say how sensitive the "
            "optimizer was to its hyperparameters. Optimizers not listed ran with their suite settings.",
            "", to_markdown(tuning)]


def _trouble_sections(runs: pd.DataFrame, problems: list[str]) -> list[str]:
    """The runs that did not complete, and the record files that could not be read."""
    parts: list[str] = []
    bad = runs[~completed(runs)]
    if not bad.empty:
        parts += ["", "## Runs that did not complete", ""]
        parts += [f"- {r.task}/{r.activation}/{r.optimizer}/seed {r.seed}: **{r.status}** — {r.reason}"
                  for r in bad.itertuples()]
    if problems:
        parts += ["", "## Unreadable record files (skipped)", ""] + [f"- {p}" for p in problems]
    return parts


def _winners(runs: pd.DataFrame, status: TuningStatus) -> str:
    """Per activation: lowest mean final training loss, and fastest median time-to-target.

    Diverged, failed or timed-out seeds count against a method: only a column whose every
    seed completed can have the lowest loss (the others are named as not eligible), and a
    seed that did not reach the target counts as never reaching it (+∞) in the median.
    A winner that ran untuned against a tuned column is marked (:meth:`TuningStatus.mark`).
    """
    lines = []
    for act, g in runs.groupby("activation", sort=True):
        if "final_train_loss" not in g:
            continue
        ok = completed(g)
        all_ok = ok.groupby(g.optimizer).all()
        eligible = g[ok & g.optimizer.map(all_ok)]
        by_loss = eligible.groupby("optimizer").final_train_loss.mean().dropna()
        if by_loss.empty:
            continue
        task, names = g.task.iloc[0], list(g.optimizer.unique())
        best = status.mark(task, act, by_loss.idxmin(), names)
        text = f"- **{act}**: lowest final train loss: {best} ({by_loss.min():.4g})"
        ttt = g.ttt_seconds.where(ok & g.reached_target, math.inf).groupby(g.optimizer).median()
        ttt = ttt[np.isfinite(ttt)]
        if not ttt.empty:
            text += f"; fastest to target: {status.mark(task, act, ttt.idxmin(), names)} ({ttt.min():.3g} s)"
        bad = [f"{name} ({int((~ok[g.optimizer == name]).sum())}/{int((g.optimizer == name).sum())} seeds "
               f"not completed)" for name in sorted(all_ok.index[~all_ok])]
        if bad:
            text += f"; not eligible: {', '.join(bad)}"
        lines.append(text)
    return "\n".join(lines)
