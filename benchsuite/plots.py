"""Seaborn figures: loss against wall-clock and against steps per task, curvature over training."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

__all__ = ["plot_curvature", "plot_loss"]


def _relplot(data: pd.DataFrame, x: str, y: str, path: Path, xlabel: str, ylabel: str, log_y: bool = True) -> Path:
    grid = sns.relplot(data=data, x=x, y=y, col="task", hue="optimizer", style="activation", units="run_id",
                       estimator=None, kind="line", col_wrap=min(3, data.task.nunique()), height=3.6, aspect=1.25,
                       facet_kws={"sharex": False, "sharey": False}, linewidth=1.0, alpha=0.85)
    if log_y and (data[y] > 0).all():
        grid.set(yscale="log")
    grid.set_axis_labels(xlabel, ylabel)
    grid.set_titles("{col_name}")
    grid.savefig(path, dpi=120)
    plt.close(grid.figure)
    return path


def plot_loss(evals: pd.DataFrame, steps: pd.DataFrame, out: Path) -> list[Path]:
    """``loss_vs_time.png`` (training loss at evals against training seconds) and
    ``loss_vs_step.png`` (mini-batch loss against optimizer steps), one panel per task."""
    files = []
    ev = evals.dropna(subset=["train_loss"])
    if not ev.empty:
        files.append(_relplot(ev, "time", "train_loss", out / "loss_vs_time.png",
                              "training time (s, excl. eval)", "training loss"))
    st = steps.dropna(subset=["loss"])
    if not st.empty:
        files.append(_relplot(st, "step", "loss", out / "loss_vs_step.png", "optimizer step", "mini-batch loss"))
    return files


def plot_curvature(stats: pd.DataFrame, out: Path) -> list[Path]:
    """One figure per whole-model statistic over training steps (if any were recorded)."""
    if stats.empty:
        return []
    files = []
    whole = stats[~stats.statistic.str.contains("/")]
    for name, g in whole.groupby("statistic"):
        safe = "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in str(name))
        files.append(_relplot(g.rename(columns={"value": name}), "step", name, out / f"stat_{safe}.png",
                              "optimizer step", str(name), log_y=False))
    return files
