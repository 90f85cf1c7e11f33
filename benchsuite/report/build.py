"""The report of a results directory: ``report.md``, ``report.html``, CSV/LaTeX/HTML tables and figures.

Reads every record of the store, keeps tuning trials out of the comparison, builds
the tables (:mod:`benchsuite.report.tables`), the performance profiles
(:mod:`benchsuite.report.profiles`) and the figures (:mod:`benchsuite.report.plots`),
assembles the markdown document and renders it as one self-contained page
(:mod:`benchsuite.report.html`). Loss-surface checks written by ``benchsuite surface``
under ``<results>/surface/`` get a section of their own. Nothing under the results
directory is modified except the frames' cache (``<results>/.cache``).

The comparison table has one row per task × activation × optimizer and aggregates over
seeds as ``mean [low, high]``, the two-sided Student-t 95% interval of the mean
(:mod:`benchsuite.report.uncertainty`) with the seed count: final and best training
loss, the task's target metric at the end, time and steps to target (over the seeds
that reached it, with k/n) and milliseconds per optimizer step; ``comparison.csv``
holds the same as numbers (mean, interval, n per quantity).

A *How each column was tuned* section (:mod:`benchsuite.report.tuned`) says, for every
optimizer column, how it was tuned (trials × seeds, trial budget, selection metric,
dimensions searched) or which suite settings it ran untuned; wherever the report
compares a tuned column with an untuned one (the per-task tables, the winner lines,
the against-Adam table) the untuned column is marked † and a sentence says the
comparison is not like-for-like.
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from benchsuite.analysis.surface import surface_section
from benchsuite.records.record import RunRecord
from benchsuite.records.store import ResultStore
from benchsuite.report.cells import split_mixed_cells
from benchsuite.report.frames import completed, evals_frame, runs_frame, stats_frame, steps_frame
from benchsuite.report.html import write_html_report
from benchsuite.report.profiles import (
    MEASURES,
    default_tau_max,
    performance_ratios,
    plot_profiles,
    profile_summary,
)
from benchsuite.report.tables import (
    PAPER_QUANTITIES,
    comparison_stats,
    format_comparison,
    paper_html,
    paper_latex,
    paper_table,
    stats_table,
    to_markdown,
    versus_baseline,
)
from benchsuite.report.tuned import UNTUNED_MARK, TuningStatus, tuning_status
from benchsuite.report.uncertainty import CI_METHOD
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
    numeric: pd.DataFrame = field(default_factory=pd.DataFrame)  # comparison.csv: mean, ci_low, ci_high, n
    profiles: dict[str, pd.DataFrame] = field(default_factory=dict)  # measure -> performance ratios

    @classmethod
    def of(cls, records: list[RunRecord], trials: list[RunRecord], runs: pd.DataFrame, problems: list[str],
           tuning_metric: str) -> _Contents:
        steps = steps_frame(records)
        status = tuning_status(records, trials, tuning_metric)
        if " or " not in status.metric:  # the records show which single metric selected: report on it
            tuning_metric = status.metric
        tuning = tuning_summary(trials, tuning_metric, finals=records) if trials else pd.DataFrame()
        per_trial = trial_table(trials, tuning_metric) if trials else pd.DataFrame()
        numeric = comparison_stats(runs)
        return cls(records, trials, problems, tuning_metric, runs, format_comparison(numeric), evals_frame(records),
                   steps, stats_frame(records), versus_baseline(runs, steps), tuning, per_trial, status, numeric,
                   {m: performance_ratios(runs, m) for m in MEASURES})


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
        return Report(runs, pd.DataFrame(), md, [out / "report.md", write_html_report(md, out, records=trials)],
                      problems, notes)
    contents = _Contents.of(records, trials, runs, problems, tuning_metric)
    surface_lines, surface_files = surface_section(Path(results), out)
    md = _markdown(contents, notes, plots=plots, extra=surface_lines)
    files = _write_tables(contents, md, out)
    files += _write_profiles(contents, out, figures=plots)
    if plots:
        files += _write_plots(contents, out)
    files += surface_files
    files.append(write_html_report(md, out, records=[*records, *trials], figures=files))  # after the plots: embeds them
    return Report(runs, contents.table, md, files, problems, notes)


def _no_runs_markdown(results: str | Path, trials: Sequence[RunRecord], tuning_metric: str) -> str:
    if not trials:
        return f"# benchsuite report\n\nNo readable run records in `{results}`.\n"
    return (f"# benchsuite report\n\nNo comparison runs yet in `{results}`; {len(trials)} tuning trials "  # interrupted
            f"so far (run the suite again to resume).\n\n" + to_markdown(tuning_summary(trials, tuning_metric)) + "\n")


def _write_tables(c: _Contents, md: str, out: Path) -> list[Path]:
    """``report.md`` and the CSV files; their paths, report first."""
    (out / "report.md").write_text(md, encoding="utf-8")
    frames = {"runs.csv": c.runs, "comparison.csv": c.numeric, "evals.csv": c.evals}
    if c.trials:
        frames["tuning.csv"] = c.per_trial
    if not c.stats.empty:
        frames["stats.csv"] = c.stats
    for name, frame in frames.items():
        frame.to_csv(out / name, index=False)
    return [out / "report.md", *(out / name for name in frames), *_write_paper_tables(c, out)]


def _untuned_cells(c: _Contents) -> set[tuple[str, str, str]]:
    """The (task, activation, optimizer) cells marked † (untuned while compared with a tuned column)."""
    marked, _ = c.status.mark_rows(c.numeric[["task", "activation", "optimizer"]])
    return {(t, a, o) for t, a, o, m in zip(c.numeric.task, c.numeric.activation, c.numeric.optimizer,
                                           marked.optimizer) if m != o}


def _write_paper_tables(c: _Contents, out: Path) -> list[Path]:
    """``comparison.tex`` (booktabs tabulars, needs only ``\\usepackage{booktabs}``) and ``comparison.html``.

    One table per quantity of :data:`~benchsuite.report.tables.PAPER_QUANTITIES`: rows task ×
    activation, columns optimizer, ``mean [low, high]``, the best eligible mean of a row in bold.
    """
    marks = _untuned_cells(c)
    note = (f"Mean [95% CI] over seeds ({CI_METHOD}); bold: the lowest mean of the row among the columns "
            "whose every seed completed (and, for time to target, reached the target); (k/n): seeds that "
            "reached the target; blank: not run" + ("; † untuned while a column it is compared with was tuned."
                                                    if marks else "."))
    latex = ["% benchsuite comparison tables: mean [95% CI] over seeds (two-sided Student-t interval of the mean);",
             "% bold: the lowest mean of the row among the columns whose every seed completed (and, for time to",
             "% target, reached it); (k/n): seeds that reached the target; blank: not run.",
             "% Needs \\usepackage{booktabs}.", ""]
    if marks:
        latex.insert(3, "% \\dag: untuned while a column it is compared with was tuned (not like-for-like).")
    pages = []
    for q in PAPER_QUANTITIES:
        cells, bold = paper_table(c.numeric, q, marks)
        if cells.empty:
            continue
        latex += [paper_latex(cells, bold, q.title), "\\medskip", ""]
        pages.append(paper_html(cells, bold, q.title))
    body = "\n".join(f"<section>\n{t}\n</section>" for t in pages)
    page = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<title>benchsuite comparison</title>\n<style>table.benchsuite-paper {border-collapse: collapse; "
            "margin: 1em 0} .benchsuite-paper td, .benchsuite-paper th {padding: 0.2em 0.6em; text-align: right} "
            "caption {font-weight: bold; text-align: left}</style>\n</head>\n<body>\n"
            f"<p>{html.escape(note)}</p>\n{body}\n</body>\n</html>\n")
    (out / "comparison.tex").write_text("\n".join(latex), encoding="utf-8")
    (out / "comparison.html").write_text(page, encoding="utf-8")
    return [out / "comparison.tex", out / "comparison.html"]


def _write_profiles(c: _Contents, out: Path, *, figures: bool = True) -> list[Path]:
    """``profiles.csv`` (the summaries) and, with ``figures``, the profile figures of the measures some
    optimizer solved."""
    files, summaries = [], []
    for measure, ratios in c.profiles.items():
        if ratios.empty or not np.isfinite(ratios.to_numpy(dtype=float)).any():
            continue
        tau_max = default_tau_max(ratios)
        summary = profile_summary(ratios, tau_max).rename(columns={"median ratio": "median_ratio"})
        summaries.append(summary.assign(measure=measure, tau_max=tau_max))
        if figures:
            files += plot_profiles(ratios, out, measure, tau_max)
    if summaries:
        pd.concat(summaries, ignore_index=True).to_csv(out / "profiles.csv", index=False)
        files.insert(0, out / "profiles.csv")
    return files


def _profiles_section(c: _Contents, figures: bool = True) -> list[str]:
    """Performance profiles (Dolan & Moré 2002) of time and steps to target over the task × activation cells."""
    if not c.profiles:
        return []
    parts = ["", "## Performance profiles", "",
             ("Over every task × activation cell (a *problem*), the cost of an optimizer is the median over its "
              "seeds of the time (or steps) to the task's target, a seed that did not complete or never reached "
              "it counting as ∞ (as does a column not run on the cell); r = cost / the best cost on the cell, and "
              "the profile ρ(τ) is the share of cells with r ≤ τ (Dolan & Moré 2002, *Math. Program.* 91:201–213; "
              "AlgoPerf scores training algorithms the same way). *area*: the area under ρ on the log2 τ axis "
              "from 1 to τ_max, divided by log2 τ_max (1: the best on every cell; 0: never within τ_max of the "
              "best); *wins*: cells where it is the best (ties count for each); *median ratio*: over cells; "
              "*solved*: cells where it reached the target (median over seeds finite).")]
    for measure, ratios in c.profiles.items():
        title = MEASURES[measure][1]
        parts += ["", f"### {title[0].upper()}{title[1:]}", ""]
        r = ratios.to_numpy(dtype=float)
        if ratios.empty or not np.isfinite(r).any():
            parts.append(f"No optimizer reached the target on any task × activation cell: no profile of {title}.")
            continue
        tau_max = default_tau_max(ratios)
        unsolved = int((~np.isfinite(r)).all(axis=1).sum())
        notes = []
        if len(ratios) == 1:
            notes.append("Only one task × activation cell: each profile is a single step, a ranking on that cell.")
        if len(ratios.columns) == 1:
            notes.append("Only one optimizer column: it is the best wherever it reached the target.")
        if unsolved:
            notes.append(f"{unsolved} of {len(ratios)} cells were solved by no optimizer (ρ < 1 for all).")
        summary = profile_summary(ratios, tau_max)
        shown = summary.assign(area=summary.area.map("{:.3f}".format),
                               **{"median ratio": summary["median ratio"].map(lambda v: "∞" if v == math.inf
                                                                              else f"{v:.3g}")},
                               wins=summary.wins.astype(str) + "/" + summary.problems.astype(str),
                               solved=summary.solved.astype(str) + "/" + summary.problems.astype(str))
        parts += [f"{len(ratios)} cells, τ_max = {tau_max:g}." + "".join(f" {n}" for n in notes), "",
                  to_markdown(shown.drop(columns=["problems"]))]
        if figures:
            parts += ["", f"![Performance profile: {title}](profile_{measure}.png)"]
    return parts


def _figure_plan(c: _Contents) -> list:
    """The report's figures (:class:`~benchsuite.report.plots.FigureSpec`), described but not drawn."""
    from benchsuite.report.plots import figure_plan

    return figure_plan(c.evals, c.steps, c.stats, c.per_trial if c.trials else None, c.tuning_metric)


def _write_plots(c: _Contents, out: Path) -> list[Path]:
    """Each figure of :func:`_figure_plan` as PNG, followed by its SVG twin."""
    from benchsuite.report.plots import write_figures

    return write_figures(_figure_plan(c), out)


def _figures_section(c: _Contents) -> list[str]:
    """``## Figures``: how the curves are made (the tables' interval) and each PNG with its caption."""
    from benchsuite.report.plots import CURVE_NOTE

    specs = _figure_plan(c)
    if not specs:
        return []
    parts = ["", "## Figures", "", CURVE_NOTE]
    for s in specs:
        parts += ["", f"![{s.caption.replace('[', '(').replace(']', ')')}]({s.stem}.png)"]
    return parts


def _markdown(c: _Contents, notes: Sequence[str] = (), *, plots: bool = True, extra: Sequence[str] = ()) -> str:
    """The report's markdown; without ``plots`` no figure is referenced; ``extra``: more sections (surfaces)."""
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
    parts += _versus_section(c.versus, c.status) + _profiles_section(c, plots) + _tuning_section(c.tuning, c.tuning_metric)
    st = stats_table(c.stats)
    if not st.empty:
        parts += ["", "## Curvature statistics (last probe, mean [95% CI] over seeds)", "", to_markdown(st)]
    if plots:
        parts += _figures_section(c)
    parts += [*extra]
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
        f"at the eval cadence. Over seeds, every table gives `mean [low, high]`: the mean and its {CI_METHOD}; "
        "one seed shows its value alone, – none. Each table gives the seed count: losses and metrics over the completed "
        "seeds (*runs ok*), time and steps to target over the seeds that reached the target (k/n reached: an "
        "interval where k ≥ 2), loss ratios against Adam as a geometric mean with the interval taken on the "
        "log ratios and exponentiated. "
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
