"""Figures for a paper: mean curves over seeds with 95% CI bands, task × activation facets, fixed optimizer colours.

Every curve figure has one row of panels per task and one column per activation. In a
panel each optimizer is one line, the mean over its seeds, in its colour from
:func:`~benchsuite.report.style.optimizer_palette` (the same colour in every figure),
with a band: the interval of :func:`~benchsuite.report.uncertainty.mean_ci`
(:data:`~benchsuite.report.uncertainty.CI_METHOD`), so figures and tables agree.
One legend serves the whole figure.

* **Against steps** the seeds are aligned on the step.
* **Against time** the seeds have their own time stamps: each seed's curve is
  interpolated linearly onto a common grid per task × activation × optimizer (the
  union of the seeds' time stamps from the latest first one to the earliest last one),
  so every point averages all seeds and the curve stops where the shortest seed stops.
* A seed that stopped at an earlier step than the others of its cell (diverged, failed,
  timed out) is marked ``×`` on the mean curve: on step curves where the seed drops out
  (later points average the remaining seeds), on time curves at the curve's end.
* **Log axes** are chosen from the data, per task row: the y axis is logarithmic when
  every plotted value is positive and they span more than :data:`LOG_RATIO` (max/min);
  the time axis when the optimizers' curves end more than :data:`LOG_TIME_RATIO` apart
  (one optimizer's run costs that many times another's; time 0 is then not shown).

Each figure is written as PNG (embedded by ``report.md`` and the HTML report) and SVG
(vector, text kept as text) next to it. :func:`loss_figures`, :func:`curvature_figures`
and :func:`tuning_figures` describe the figures (:class:`FigureSpec`: file stem, caption,
a function drawing the :class:`~matplotlib.figure.Figure`) without drawing them, so the
report can list them; :func:`plot_loss`, :func:`plot_curvature` and :func:`plot_tuning`
draw and write them.
"""

from __future__ import annotations

import itertools
import logging
import re
import textwrap
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from scipy import stats as sstats

from benchsuite.report.style import AXIS_LABELS, optimizer_palette
from benchsuite.report.uncertainty import CI_LEVEL, CI_METHOD

__all__ = ["CURVE_NOTE", "LOG_RATIO", "LOG_TIME_RATIO", "SMOOTHING_POINTS", "FigureSpec", "curvature_figures",
           "figure_plan", "interpolate_on_grid", "loss_figures", "mean_ci_frame", "plot_curvature", "plot_loss",
           "plot_tuning", "smoothing_window", "tuning_figures", "use_log_scale", "write_figures"]
log = logging.getLogger(__name__)

LOG_RATIO = 30.0
"""A value axis is logarithmic when its finite values are all positive with max/min above this."""
LOG_TIME_RATIO = 10.0
"""A time axis is logarithmic when the curves of a task row end more than this many times apart."""
SMOOTHING_POINTS = 20
"""Mini-batch losses are smoothed per seed over (logged steps of the median run) / this many points."""
MAX_GRID_POINTS = 400
"""At most this many grid points per interpolated time curve (evenly spaced when the seeds' union has more)."""

CURVE_NOTE = (f"Each line is the mean over seeds of one optimizer (one colour per optimizer, the same in every "
              f"figure); its band is the {CI_METHOD}, the interval the tables give (no band where a cell has one "
              "seed; with two seeds t = 12.7, so bands are wide). A value axis is logarithmic when the values of a "
              f"task are positive and span more than {LOG_RATIO:g}×; on such an axis line and band are the geometric "
              "mean and the same interval of log10 values, so a band never runs into zero. Against steps, seeds are "
              "aligned on the step; against time, each seed is interpolated linearly onto a common grid per cell "
              "(the union of its seeds' time stamps) up to the shortest seed's end, and the time axis is "
              f"logarithmic when the curves of a task end more than {LOG_TIME_RATIO:g}× apart (the evaluation at "
              "time 0 is then not shown: a curve starts at its first grid point after 0). Mini-batch losses are "
              "smoothed per seed by a centred moving average (window in the title). "
              "×: a seed stopped at an earlier step than the rest of its cell (diverged, failed or timed out). "
              "Each PNG has a vector twin (SVG) of the same name.")

_CELL = ["task", "activation", "optimizer"]
_STYLES = ["-", "--", ":", "-."]
_AUXILIARY = ("_sign", "_stderr")  # whole-model keys that qualify another statistic: not figures of their own
_ACTIVATION_PALETTE = "Dark2"  # qualitative, distinct from the optimizer colours


@dataclass(frozen=True)
class FigureSpec:
    """A figure of the report, described before it is drawn.

    Attributes:
        stem: File name without suffix (``loss_vs_step`` → ``loss_vs_step.png`` and ``.svg``).
        caption: One sentence saying what the figure shows (the report's image caption).
        draw: Draws and returns the figure (the caller saves and closes it).
    """

    stem: str
    caption: str
    draw: Callable[[], Figure]


# --------------------------------------------------------------------------------------
# Numbers: CI bands, interpolation, scale decisions
# --------------------------------------------------------------------------------------


def mean_ci_frame(data: pd.DataFrame, by: Sequence[str], value: str, level: float = CI_LEVEL) -> pd.DataFrame:
    """:func:`~benchsuite.report.uncertainty.mean_ci` of ``value`` for every group of ``by``, vectorised.

    Non-finite values are left out, as in ``mean_ci``; groups without a finite value are dropped.

    Args:
        data: Long-form values (one row per seed and group).
        by: Grouping columns (e.g. task, activation, optimizer, step).
        value: The column averaged.
        level: Two-sided confidence level.

    Returns:
        The ``by`` columns and ``mean``, ``low``, ``high`` (NaN where ``n`` < 2) and ``n``.
    """
    v = pd.to_numeric(data[value], errors="coerce").astype(float)
    v = v.where(np.isfinite(v))
    agg = v.groupby([data[c] for c in by], sort=True, observed=True).agg(["mean", "std", "count"])
    agg = agg[agg["count"] > 0]
    n = agg["count"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        tq = np.where(n >= 2, sstats.t.ppf(0.5 + level / 2, np.maximum(n - 1, 1)), np.nan)
        half = tq * agg["std"].to_numpy(dtype=float) / np.sqrt(n)
    mean = agg["mean"].to_numpy(dtype=float)
    out = agg.index.to_frame(index=False)
    out["mean"], out["low"], out["high"], out["n"] = mean, mean - half, mean + half, n.astype(int)
    return out


def interpolate_on_grid(data: pd.DataFrame, x: str, y: str, cell: Sequence[str] = tuple(_CELL),
                        max_points: int = MAX_GRID_POINTS) -> pd.DataFrame:
    """Each run's ``y`` interpolated linearly onto a grid of ``x`` shared by the runs of its cell.

    The grid of a cell is the union of its runs' ``x`` values from the latest first value
    to the earliest last one (evenly spaced ``max_points`` values when the union is
    larger), so every grid point has a value of every run. Rows with a non-finite ``x``
    or ``y`` are left out first.

    Args:
        data: Long form: ``cell`` columns, ``run_id``, ``x``, ``y`` (and ``step``, optional).
        x: The column to align on (e.g. ``time``).
        y: The column interpolated.
        cell: The columns of a cell (runs of one cell differ only by seed).
        max_points: Grid size cap per cell.

    Returns:
        ``cell`` columns, ``run_id``, ``x``, ``y`` and ``short``: True on the rows of a cell in
        which some run stopped at an earlier ``step`` than another (if ``step`` is given).
    """
    cols = [*cell, "run_id", x, y] + (["step"] if "step" in data and "step" not in (x, y) else [])
    d = data[cols]
    d = d[np.isfinite(pd.to_numeric(d[x], errors="coerce")) & np.isfinite(pd.to_numeric(d[y], errors="coerce"))]
    d = d.sort_values([*cell, "run_id", x], kind="stable")
    keys: list[tuple] = []
    runs_out: list[np.ndarray] = []
    xs_out: list[np.ndarray] = []
    ys_out: list[np.ndarray] = []
    short_out: list[np.ndarray] = []
    for key, g in d.groupby(list(cell), sort=True, observed=True):
        rid = g["run_id"].to_numpy()
        gx, gy = g[x].to_numpy(dtype=float), g[y].to_numpy(dtype=float)
        bounds = np.flatnonzero(np.r_[True, rid[1:] != rid[:-1], True])  # run boundaries in the sorted cell
        parts = [(rid[a], gx[a:b], gy[a:b]) for a, b in itertools.pairwise(bounds)]
        start, end = max(p[1][0] for p in parts), min(p[1][-1] for p in parts)
        grid = np.unique(gx)
        grid = grid[(grid >= start) & (grid <= end)]
        if grid.size > max_points:
            grid = np.linspace(start, end, max_points)
        short = False
        if "step" in g:
            last = g.groupby("run_id", observed=True)["step"].max()
            short = bool(last.min() < last.max())
        for run, px, py in parts:
            keys.append(key if isinstance(key, tuple) else (key,))
            runs_out.append(np.full(grid.size, run, dtype=object))
            xs_out.append(grid)
            ys_out.append(np.interp(grid, px, py))
            short_out.append(np.full(grid.size, short))
    if not xs_out:
        return pd.DataFrame(columns=[*cell, "run_id", x, y, "short"])
    sizes = [a.size for a in xs_out]
    out = pd.DataFrame({c: np.repeat([k[i] for k in keys], sizes) for i, c in enumerate(cell)})
    out["run_id"], out[x], out[y] = np.concatenate(runs_out), np.concatenate(xs_out), np.concatenate(ys_out)
    out["short"] = np.concatenate(short_out)
    return out


def use_log_scale(values: Iterable[float] | np.ndarray | pd.Series, ratio: float = LOG_RATIO) -> bool:
    """Whether an axis of ``values`` should be logarithmic: all finite ones positive, max/min > ``ratio``."""
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    return bool(v.size > 0 and (v > 0).all() and v.max() / v.min() > ratio)


def _mark_dropouts(bands: pd.DataFrame, x: str, by: Sequence[str]) -> pd.Series:
    """True at the last point of a curve before its seed count falls (a seed dropped out mid-curve)."""
    b = bands.sort_values([*by, x], kind="stable")
    same = (b[list(by)].shift(-1) == b[list(by)]).all(axis=1)
    drop = same & (b["n"].shift(-1) < b["n"])
    return drop.reindex(bands.index)


# --------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------


_METRIC_LABELS = {  # the built-in tasks' metrics, with their units
    "error": "error (fraction misclassified)",
    "sq_error": "squared error (sum over outputs)",
}
_FRACTIONS = ("error", "dead_frac")  # metrics in [0, 1]


def _label(name: str) -> str:
    """Axis label of a column or metric: ``AXIS_LABELS`` if known, else the name in words."""
    if name in AXIS_LABELS:
        return AXIS_LABELS[name]
    for split, word in (("train_", "training"), ("valid_", "validation"), ("test_", "test")):
        if name.startswith(split) and name[len(split):] in _METRIC_LABELS:
            return f"{word} {_METRIC_LABELS[name[len(split):]]}"
    for split, word in (("train_", "training"), ("valid_", "validation"), ("test_", "test")):
        if name.startswith(split):
            return f"{word} {name[len(split):].replace('sq_error', 'squared error').replace('_', ' ')}"
    return name.replace("_", " ")


def _row_limits(mean: np.ndarray, low: np.ndarray, high: np.ndarray, log_scale: bool) -> tuple[float, float] | None:
    """Value-axis limits that show every mean curve and the bands up to 30% of the means' span beyond them."""
    def f(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=float)
        if log_scale:
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(a > 0, np.log10(np.where(a > 0, a, 1.0)), -np.inf)
        return a

    m = f(mean)
    m = m[np.isfinite(m)]
    if m.size == 0:
        return None
    mlo, mhi = float(m.min()), float(m.max())
    span = mhi - mlo if mhi > mlo else max(abs(mhi), 1.0) * 0.1
    lo_band, hi_band = f(low), f(high)
    lo_b = np.nanmin(np.where(np.isnan(lo_band), np.inf, lo_band)) if lo_band.size else np.inf
    hi_b = np.nanmax(np.where(np.isnan(hi_band), -np.inf, hi_band)) if hi_band.size else -np.inf
    lo = min(mlo, max(lo_b, mlo - 0.3 * span))
    hi = max(mhi, min(hi_b, mhi + 0.3 * span))
    pad = 0.04 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    return (10 ** lo, 10 ** hi) if log_scale else (lo, hi)


def _facet_figure(bands: pd.DataFrame, x: str, *, title: str, xlabel: str, ylabel: str,
                  log_y: dict[str, bool], log_x: dict[str, bool] | None = None,
                  series_styles: dict[str, str] | None = None) -> Figure:
    """Rows: tasks; columns: activations; a mean line and CI band per optimizer (and series).

    Args:
        bands: ``task``, ``activation``, ``optimizer``, ``series``, ``x``, ``mean``, ``low``,
            ``high``, ``n`` and ``mark`` (draw × at this point).
        x: The x column.
        title: Figure title.
        xlabel: x-axis label (with units).
        ylabel: y-axis label (with units).
        log_y: Per task: log value axis.
        log_x: Per task: log x axis (x ≤ 0 is then left out).
        series_styles: ``{series: line style}`` when a panel shows several series per optimizer.
    """
    log_x = log_x or {}
    tasks = sorted(bands.task.astype(str).unique())
    acts = sorted(bands.activation.astype(str).unique())
    opts = sorted(bands.optimizer.astype(str).unique())
    palette = optimizer_palette(opts)
    nrow, ncol = len(tasks), len(acts)
    fig, axes = plt.subplots(nrow, ncol, figsize=(_LEFT + _RIGHT + _PANEL_W * ncol, _TOP + _BOTTOM + _PANEL_H * nrow),
                             squeeze=False, sharex="row", sharey="row")
    rows = {t: i for i, t in enumerate(tasks)}
    cols = {a: j for j, a in enumerate(acts)}
    marked = False
    for task in tasks:
        tb = bands[bands.task.astype(str) == task]
        if log_x.get(task):
            tb = tb[tb[x] > 0]
        for ax in axes[rows[task]]:
            ax.set_yscale("log" if log_y.get(task) else "linear")
            ax.set_xscale("log" if log_x.get(task) else "linear")
            ax.minorticks_off()  # decades and the grid suffice; minor log ticks cost most of a figure's drawing
        lim = _row_limits(tb["mean"].to_numpy(), tb["low"].to_numpy(), tb["high"].to_numpy(), bool(log_y.get(task)))
        for (act, opt, series), g in tb.groupby(["activation", "optimizer", "series"], sort=True, observed=True):
            ax = axes[rows[task]][cols[str(act)]]
            color = palette[str(opt)]
            style = (series_styles or {}).get(str(series), "-")
            xv, mean = g[x].to_numpy(dtype=float), g["mean"].to_numpy(dtype=float)
            ax.plot(xv, mean, color=color, lw=1.4, ls=style, solid_capstyle="round", label=str(opt))
            low, high = g["low"].to_numpy(dtype=float), g["high"].to_numpy(dtype=float)
            ok = np.isfinite(low) & np.isfinite(high)
            if ok.any():
                if lim is not None:  # a band beyond the limits (on a log axis: reaching 0) runs off the axis
                    low, high = np.clip(low, lim[0], lim[1]), np.clip(high, lim[0], lim[1])
                ax.fill_between(xv, low, high, where=ok, color=color, alpha=0.18, lw=0, interpolate=False)
            m = g["mark"].to_numpy(dtype=bool)
            if m.any():
                marked = True
                ax.plot(xv[m], mean[m], ls="none", marker="x", ms=6, mew=1.6, color=color)
        if lim is not None and lim[0] < lim[1]:
            axes[rows[task]][0].set_ylim(*lim)
        first = axes[rows[task]][0]
        first.set_ylabel(ylabel)
        first.annotate(task, xy=(0, 0.5), xycoords=first.yaxis.label, xytext=(-4, 0), textcoords="offset points",
                       ha="right", va="center", rotation=90, fontsize=10, fontweight="bold")
    for j, act in enumerate(acts):
        axes[0][j].set_title(act, fontsize=10)
        axes[-1][j].set_xlabel(xlabel)
    for i, task in enumerate(tasks):
        for j, act in enumerate(acts):
            ax = axes[i][j]
            ax.grid(True, which="major", lw=0.4, alpha=0.5)
            ax.tick_params(labelsize=8)
            if not ax.lines:
                ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes, color="0.5")
    handles: list = [Line2D([], [], color=palette[o], lw=2, label=o) for o in opts]
    if series_styles and len(series_styles) > 1:
        handles += [Line2D([], [], color="0.3", lw=1.4, ls=s, label=name) for name, s in series_styles.items()]
    handles.append(Patch(facecolor="0.5", alpha=0.25, label="95% CI"))
    if marked:
        handles.append(Line2D([], [], ls="none", marker="x", color="0.3", label="seed stopped early"))
    subtitle = "line: mean over seeds" + (" (log axis: geometric mean)" if any(log_y.values()) else "")
    subtitle += " · band: 95% CI (Student-t)" + (" · ×: a seed stopped early" if marked else "")
    _fixed_layout(fig, nrow, ncol, handles, title, subtitle)
    return fig


_LEFT, _RIGHT, _TOP, _BOTTOM = 1.2, 0.15, 0.75, 0.85  # figure margins (inches)
_PANEL_W, _PANEL_H, _GAP_W, _GAP_H = 3.0, 2.35, 0.25, 0.55  # panel size and gaps between panels (inches)
_LINE = 0.19  # height of a title line (inches)


def _fixed_layout(fig: Figure, nrow: int, ncol: int, handles: list, title: str, subtitle: str) -> None:
    """Margins in inches (no layout engine: a facet figure draws several times faster), title and legend.

    The title and subtitle are wrapped to the figure's width and the legend to as many
    balanced rows as it needs; the figure grows by the lines they take.
    """
    w, h = fig.get_size_inches()
    fit = min(len(handles), max(2, int((w - 0.3) // 1.1)))  # legend entries that fit in a row
    legend_rows = -(-len(handles) // fit)
    cols = -(-len(handles) // legend_rows)  # rows as full as each other
    width_chars = max(30, int(w * 12))  # ~12 characters of 10 pt text per inch
    lines = textwrap.wrap(title, width_chars) + textwrap.wrap(subtitle, width_chars)
    top = _TOP + _LINE * (len(lines) - 2)
    bottom = _BOTTOM + 0.2 * (legend_rows - 1)
    h = h + 0.2 * (legend_rows - 1) + _LINE * (len(lines) - 2)
    fig.set_size_inches(w, h)
    inner_w = w - _LEFT - _RIGHT
    inner_h = h - top - bottom
    fig.subplots_adjust(left=_LEFT / w, right=1 - _RIGHT / w, top=1 - top / h, bottom=bottom / h,
                        wspace=_GAP_W / (inner_w / ncol - _GAP_W) if ncol > 1 else 0,
                        hspace=_GAP_H / (inner_h / nrow - _GAP_H) if nrow > 1 else 0)
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.02 / h), ncol=cols, frameon=False,
               fontsize=9, handlelength=1.8, columnspacing=1.2)
    fig.suptitle("\n".join(lines), fontsize=10, y=1 - 0.06 / h, va="top")


def _curve_figure(data: pd.DataFrame, x: str, y: str, *, title: str, ylabel: str, series: str | None = None,
                  series_styles: dict[str, str] | None = None, upper: float | None = None) -> Figure:
    """Mean ± CI curves of ``y`` against ``x`` (``time``: interpolated per seed; else aligned on ``x``).

    On a task row with a log value axis the curves are the geometric mean and the interval
    of ``log10 y`` (the same Student-t interval; against time the log values are
    interpolated, straight segments on that axis), so a band is never cut off at zero. The
    band of a quantity that is never negative stops at 0, and at ``upper`` if given (a
    fraction's band stops at 1): a mean cannot lie outside its values' range.
    """
    t0 = time.perf_counter()
    d = data.assign(series=data[series].astype(str) if series else "")
    d = d[np.isfinite(pd.to_numeric(d[y], errors="coerce")) & np.isfinite(pd.to_numeric(d[x], errors="coerce"))]
    d = d.assign(**{y: d[y].astype(float)})
    lower = 0.0 if (d[y] >= 0).all() else None
    by = [*_CELL, "series"]
    log_y = {str(t): use_log_scale(v) for t, v in d.groupby("task", observed=True)[y]}
    on_log = d.task.astype(str).map(log_y).fillna(False).to_numpy(dtype=bool)
    if on_log.any():
        d[y] = np.where(on_log, np.log10(np.where(on_log, d[y], 1.0)), d[y])
    if x == "time":
        per_seed = interpolate_on_grid(d, x, y, cell=by)
        bands = mean_ci_frame(per_seed, [*by, x], y)
        short = per_seed.groupby(by, observed=True)["short"].any()
        last = bands.groupby(by, observed=True)[x].transform("max") == bands[x]
        flag = pd.MultiIndex.from_frame(bands[by]).isin(short[short].index)
        bands["mark"] = last & flag
        ends = bands.groupby(by, observed=True)[x].max()  # where each curve ends
        log_x = {str(t): use_log_scale(e, LOG_TIME_RATIO) for t, e in ends.groupby(level="task", observed=True)}
    else:
        bands = mean_ci_frame(d, [*by, x], y)
        bands["mark"] = _mark_dropouts(bands, x, by).fillna(False).astype(bool)
        log_x = {}
    on_log = bands.task.astype(str).map(log_y).fillna(False).to_numpy(dtype=bool)
    if on_log.any():
        for c in ("mean", "low", "high"):
            bands[c] = np.where(on_log, 10.0 ** bands[c].to_numpy(dtype=float), bands[c])
    if lower is not None or upper is not None:
        for c in ("low", "high"):
            bands[c] = bands[c].clip(lower=lower, upper=upper)
    fig = _facet_figure(bands, x, title=title, xlabel=_label(x), ylabel=ylabel, log_y=log_y, log_x=log_x,
                        series_styles=series_styles)
    log.debug("%s against %s: %d points in %.2f s", y, x, len(bands), time.perf_counter() - t0)
    return fig


def _save(fig: Figure, out: Path, stem: str) -> list[Path]:
    """``<stem>.png`` and ``<stem>.svg`` (text as text, no date: the same figure gives the same file)."""
    png, svg = out / f"{stem}.png", out / f"{stem}.svg"
    fig.savefig(png, dpi=150)
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": stem}):
        fig.savefig(svg, metadata={"Date": None})
    return [png, svg]


def write_figures(specs: Iterable[FigureSpec], out: Path) -> list[Path]:
    """Draw, write (PNG, then its SVG twin) and close each figure; the paths written."""
    files: list[Path] = []
    for spec in specs:
        t0 = time.perf_counter()
        fig = spec.draw()
        try:
            files += _save(fig, Path(out), spec.stem)
        finally:
            plt.close(fig)
        log.debug("figure %s: %.2f s", spec.stem, time.perf_counter() - t0)
    return files


# --------------------------------------------------------------------------------------
# Loss curves
# --------------------------------------------------------------------------------------


def _finite_rows(frame: pd.DataFrame, *cols: str) -> pd.DataFrame:
    if frame.empty or any(c not in frame for c in cols):
        return frame.iloc[:0]
    ok = np.ones(len(frame), dtype=bool)
    for c in cols:
        ok &= np.isfinite(pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=float))
    return frame[ok]


def smoothing_window(data: pd.DataFrame, per: int = SMOOTHING_POINTS) -> int:
    """Moving-average window for mini-batch losses: the median run's logged steps / ``per`` (odd, at least 1)."""
    n = float(data.groupby("run_id", observed=True).size().median()) if not data.empty else 0.0
    w = max(1, int(n // per))
    return w if w % 2 else w + 1 if w > 1 else 1


def _smoothed(data: pd.DataFrame, y: str, window: int) -> np.ndarray:
    """``y`` smoothed per run by a centred moving average of ``window`` points (in step order).

    Near a run's ends the window shrinks symmetrically, so the first and last points are
    the logged values (the initial loss is not averaged with later, lower ones).
    """
    order = np.lexsort((data["step"].to_numpy(dtype=float), data["run_id"].astype(str).to_numpy()))
    rid = data["run_id"].astype(str).to_numpy()[order]
    v = data[y].to_numpy(dtype=float)[order]
    out = np.empty_like(v)
    bounds = np.flatnonzero(np.r_[True, rid[1:] != rid[:-1], True])
    half = window // 2
    for a, b in itertools.pairwise(bounds):
        seg = v[a:b]
        i = np.arange(seg.size)
        k = np.minimum(half, np.minimum(i, seg.size - 1 - i))  # half-width at each point
        c = np.r_[0.0, np.cumsum(seg)]
        out[a:b] = (c[i + k + 1] - c[i - k]) / (2 * k + 1)
    result = np.empty_like(out)
    result[order] = out
    return result


def loss_figures(evals: pd.DataFrame, steps: pd.DataFrame) -> list[FigureSpec]:
    """The loss and training-metric figures the data allows (nothing is drawn yet).

    ``loss_vs_time`` (training loss at evaluations against training seconds),
    ``loss_vs_step`` (mini-batch loss against optimizer steps), ``minibatch_loss_vs_time``
    (mini-batch loss against training seconds) and, for each training-split metric of a
    task (e.g. ``train_sq_error``, the autoencoder papers' training error),
    ``<metric>_vs_step`` and ``<metric>_vs_time``.
    """
    specs: list[FigureSpec] = []

    def add(data: pd.DataFrame, x: str, y: str, stem: str, what: str, ylabel: str, smooth: bool = False) -> None:
        upper = 1.0 if y.split("_", 1)[-1] in _FRACTIONS else None
        d = _finite_rows(data, x, y)
        if d.empty:
            return
        title = f"{what[0].upper()}{what[1:]} against {_label(x).split(' (')[0]}"
        note = ""
        if smooth:
            window = smoothing_window(d)
            if window > 1:
                note = f" (each seed smoothed: centred moving average over {window} logged steps)"
                d = d.assign(**{y: _smoothed(d, y, window)})
        specs.append(FigureSpec(stem, f"{title}{note}: mean over seeds with 95% CI band, per task (rows) and "
                                      f"activation (columns).",
                                lambda: _curve_figure(d, x, y, title=title + note, ylabel=ylabel, upper=upper)))

    add(evals, "time", "train_loss", "loss_vs_time", "training loss (full training split)", _label("train_loss"))
    add(steps, "step", "loss", "loss_vs_step", "mini-batch loss", _label("loss"), smooth=True)
    add(steps, "time", "loss", "minibatch_loss_vs_time", "mini-batch loss", _label("loss"), smooth=True)
    for metric in sorted(c for c in evals.columns if str(c).startswith("train_") and c != "train_loss"):
        what = _label(metric).split(" (")[0]
        add(evals, "step", metric, f"{metric}_vs_step", what, _label(metric))
        add(evals, "time", metric, f"{metric}_vs_time", what, _label(metric))
    return specs


def plot_loss(evals: pd.DataFrame, steps: pd.DataFrame, out: Path) -> list[Path]:
    """Write the figures of :func:`loss_figures` to ``out``: each PNG followed by its SVG twin."""
    return write_figures(loss_figures(evals, steps), out)


# --------------------------------------------------------------------------------------
# Curvature statistics
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _StatFamily:
    """Statistics drawn in one figure: keys matched by prefix, per-layer ones reduced over layers.

    ``reduce`` is None for whole-model keys (no ``/``), ``"top"`` for ``<name>/0`` (the
    largest eigenvalue), else the reduction over the layers' ``<name>/<layer>`` keys.
    """

    stem: str
    title: str
    ylabel: str
    prefixes: tuple[str, ...]
    reduce: str | None


_STAT_FAMILIES = (
    _StatFamily("stat_trace", "Trace of the Hessian H and the Gauss-Newton matrix G", "trace",
                ("trace_H", "trace_G"), None),
    _StatFamily("stat_top_eig", "Top eigenvalue of H and G", "largest eigenvalue", ("eig_H", "eig_G"), "top"),
    _StatFamily("stat_block_rel_diff", "Layer-block check: relative difference of H_l and G_l (max over layers)",
                "rel. diff. of H_l and G_l", ("block_rel_diff",), "max"),
    _StatFamily("stat_block_min_eig", "Smallest eigenvalue of a layer's Hessian block (min over layers)",
                "min over layers of λ_min(H_l)", ("block_min_eig",), "min"),
    _StatFamily("stat_dead_frac", "Dead units (f'(h) = 0 on the whole probe batch), mean over layers",
                "fraction of units dead", ("dead_frac",), "mean"),
)


_STAT_LABELS = {  # whole-model statistics of their own figure: (title, axis label)
    "loss": ("Loss on the probe batch", "probe-batch loss"),
    "grad_norm": ("Gradient norm on the probe batch", "‖∇L‖₂ (probe batch)"),
}


def _matches(base: str, prefix: str) -> bool:
    """``base`` is ``prefix`` or ``prefix_<suffix>`` (an estimate/exact variant), not an auxiliary key."""
    return (base == prefix or base.startswith(prefix + "_")) and not base.endswith(_AUXILIARY)


def _family_values(stats: pd.DataFrame, fam: _StatFamily) -> pd.DataFrame:
    """Rows of the family: the ids, ``step``, ``series`` (the statistic's name) and ``value`` (reduced over layers)."""
    name = stats.statistic.astype(str)
    base = name.str.split("/", n=1).str[0]
    rest = name.str.split("/", n=1).str[1]
    hit = pd.Series(False, index=stats.index)
    for p in fam.prefixes:
        hit |= base.map(lambda b, p=p: _matches(b, p))
    if fam.reduce is None:
        hit &= rest.isna()
    else:
        hit &= rest.notna()
        if fam.reduce == "top":
            hit &= rest.str.match(r"^0(\D|$)").fillna(False).astype(bool)
    d = stats[hit].assign(series=(base[hit] + rest[hit].str.replace(r"^\d+", "", regex=True).fillna(""))
                          if fam.reduce == "top" else base[hit])
    if d.empty or fam.reduce in (None, "top"):
        return d
    ids = [c for c in ("run_id", "task", "activation", "optimizer", "seed") if c in d]
    value = pd.to_numeric(d["value"], errors="coerce")
    red = value.groupby([d[c] for c in [*ids, "step", "series"]], observed=True).agg(fam.reduce)
    return red.rename("value").reset_index()


def _series_styles(names: Iterable[str], prefixes: Sequence[str]) -> dict[str, str]:
    """Line style per series: in the order of the family's prefixes, then by name."""
    def key(s: str) -> tuple[int, str]:
        return next((i for i, p in enumerate(prefixes) if _matches(s, p)), len(prefixes)), s

    return {s: _STYLES[i % len(_STYLES)] for i, s in enumerate(sorted(set(names), key=key))}


def curvature_figures(stats: pd.DataFrame) -> list[FigureSpec]:
    """One figure per curvature statistic over training steps, by optimizer (nothing is drawn yet).

    ``stat_trace`` (``trace_H``, ``trace_G``: solid, dashed), ``stat_top_eig``
    (``eig_H/0``, ``eig_G/0``), ``stat_block_rel_diff`` (max over layers),
    ``stat_block_min_eig`` (min over layers), ``stat_dead_frac`` (mean over layers) and
    ``stat_<name>`` for every other whole-model statistic (``loss``, ``grad_norm``).
    Keys are matched by prefix, so ``trace_H_est`` or ``eig_H_ritz/0`` join their family
    as a series of their own (line style); ``*_sign`` and ``*_stderr`` keys are not drawn.
    """
    if stats.empty or "statistic" not in stats:
        return []
    specs: list[FigureSpec] = []
    used: set[str] = set()
    for fam in _STAT_FAMILIES:
        d = _finite_rows(_family_values(stats, fam), "step", "value")
        if d.empty:
            continue
        styles = _series_styles(d.series.astype(str).unique(), fam.prefixes)
        used.update(styles)
        ylabel = fam.ylabel
        specs.append(FigureSpec(
            fam.stem, f"{fam.title} over training (`{'`, `'.join(styles)}`): mean over seeds with 95% CI band, "
                      "per task (rows) and activation (columns).",
            lambda d=d, fam=fam, styles=styles, ylabel=ylabel: _curve_figure(
                d, "step", "value", title=fam.title, ylabel=ylabel, series="series",
                series_styles=styles if len(styles) > 1 else None,
                upper=1.0 if fam.prefixes[0] in _FRACTIONS else None)))
    name = stats.statistic.astype(str)
    whole = sorted(n for n in name.unique() if "/" not in n and n not in used and not n.endswith(_AUXILIARY)
                   and not any(_matches(n, p) for f in _STAT_FAMILIES for p in f.prefixes))
    for stat in whole:
        d = _finite_rows(stats[name == stat], "step", "value")
        if d.empty:
            continue
        safe = re.sub(r"[^0-9A-Za-z_-]", "_", stat)
        title, ylabel = _STAT_LABELS.get(stat, (f"Probe statistic {stat}", _label(stat)))
        specs.append(FigureSpec(f"stat_{safe}", f"{title} (`{stat}`) over training: mean over seeds with 95% CI "
                                                "band, per task (rows) and activation (columns).",
                                lambda d=d, title=title, ylabel=ylabel: _curve_figure(
                                    d, "step", "value", title=title, ylabel=ylabel)))
    return specs


def plot_curvature(stats: pd.DataFrame, out: Path) -> list[Path]:
    """Write the figures of :func:`curvature_figures` to ``out``: each PNG followed by its SVG twin."""
    return write_figures(curvature_figures(stats), out)


# --------------------------------------------------------------------------------------
# Tuning
# --------------------------------------------------------------------------------------


def _tuning_figure(task: str, g: pd.DataFrame, metric: str) -> Figure:
    opts = sorted(g.optimizer.astype(str).unique())
    acts = sorted(g.activation.astype(str).unique())
    act_colors = dict(zip(acts, plt.get_cmap(_ACTIVATION_PALETTE).colors))  # type: ignore[attr-defined]
    opt_colors = optimizer_palette(opts)
    fig, axes = plt.subplots(1, len(opts), figsize=(0.4 + 3.2 * len(opts), 3.4), squeeze=False,
                             layout="constrained")
    for ax, opt in zip(axes[0], opts):
        d = g[g.optimizer.astype(str) == opt].dropna(axis=1, how="all")
        hps = [c for c in d.columns if str(c).startswith("hp_") and pd.api.types.is_numeric_dtype(d[c])
               and d[c].nunique() > 1]
        x = next((c for c in ("hp_lr", "hp_damping") if c in hps), hps[0] if hps else None)
        ax.set_title(opt, color=opt_colors[opt], fontweight="bold", fontsize=10)
        if x is None:
            ax.text(0.5, 0.5, "nothing tuned", ha="center", va="center", transform=ax.transAxes, color="0.5")
            continue
        score = d.score.astype(float)
        finite = d[np.isfinite(score)]
        top = float(finite.score.max()) if not finite.empty else 1.0
        for act, a in d.groupby("activation", sort=True, observed=True):
            ok = a[np.isfinite(a.score.astype(float))]
            ax.scatter(ok[x], ok.score, s=18, color=act_colors[str(act)])
            bad = a[~np.isfinite(a.score.astype(float))]
            ax.scatter(bad[x], [top] * len(bad), marker="x", s=26, color=act_colors[str(act)])
        if use_log_scale(d[x], 1.0):
            ax.set_xscale("log")
        if use_log_scale(finite.score):
            ax.set_yscale("log")
        ax.set_xlabel(x[3:])
        ax.set_ylabel(f"final {_label(metric)}")
        ax.grid(True, lw=0.4, alpha=0.5)
        ax.tick_params(labelsize=8)
    handles = [Line2D([], [], ls="none", marker="o", color=act_colors[a], label=a) for a in acts]
    handles.append(Line2D([], [], ls="none", marker="x", color="0.3", label="diverged/failed (drawn at the top)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False, fontsize=9)
    fig.suptitle(f"{task}: tuning trials, final {_label(metric)} against the main hyperparameter", fontsize=10)
    return fig


def tuning_figures(trials: pd.DataFrame, metric: str) -> list[FigureSpec]:
    """``tuning_<task>``: each tuned optimizer's trial scores against its main hyperparameter.

    One panel per optimizer (x: ``lr`` if tuned, else ``damping``, else the first tuned
    value; log when positive over decades), titled in the optimizer's colour; one colour
    per activation (a qualitative palette distinct from the optimizers'); diverged or
    failed trials are crosses on the panel's top edge, so sensitivity and failure
    regions read at a glance.
    """
    if trials.empty or "task" not in trials:
        return []
    return [FigureSpec(f"tuning_{task}", f"Tuning trials on {task}: final {metric} of each trial against the "
                                         "optimizer's main hyperparameter (×: diverged or failed).",
                       lambda task=task, g=g: _tuning_figure(str(task), g, metric))
            for task, g in trials.groupby("task", sort=True, observed=True)]


def plot_tuning(trials: pd.DataFrame, metric: str, out: Path) -> list[Path]:
    """Write the figures of :func:`tuning_figures` to ``out``: each PNG followed by its SVG twin."""
    return write_figures(tuning_figures(trials, metric), out)


def figure_plan(evals: pd.DataFrame, steps: pd.DataFrame, stats: pd.DataFrame, trials: pd.DataFrame | None = None,
                metric: str = "valid_loss") -> list[FigureSpec]:
    """Every figure the report writes for these frames, in order, without drawing any."""
    specs = loss_figures(evals, steps) + curvature_figures(stats)
    if trials is not None and not trials.empty:
        specs += tuning_figures(trials, metric)
    return specs

