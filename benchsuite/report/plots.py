"""Seaborn figures: loss against wall-clock and against steps per task, curvature over training."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

__all__ = ["plot_curvature", "plot_loss", "plot_tuning"]


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
    ``loss_vs_step.png`` (mini-batch loss against optimizer steps), one panel per task;
    for each task metric on the training split (e.g. ``train_sq_error``, the
    autoencoder papers' training error) ``<metric>_vs_step.png`` and ``<metric>_vs_time.png``."""
    files = []
    ev = evals.dropna(subset=["train_loss"])
    if not ev.empty:
        files.append(_relplot(ev, "time", "train_loss", out / "loss_vs_time.png",
                              "training time (s, excl. eval)", "training loss"))
    for metric in sorted(c for c in evals.columns if c.startswith("train_") and c != "train_loss"):
        em = evals.dropna(subset=[metric])
        if em.empty:
            continue
        files.append(_relplot(em, "step", metric, out / f"{metric}_vs_step.png", "optimizer step", metric))
        files.append(_relplot(em, "time", metric, out / f"{metric}_vs_time.png",
                              "training time (s, excl. eval)", metric))
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


def plot_tuning(trials: pd.DataFrame, metric: str, out: Path) -> list[Path]:
    """``tuning_<task>.png``: each tuned optimizer's trial scores against its main hyperparameter.

    One panel per optimizer (log x: ``lr`` if tuned, else ``damping``, else the first
    tuned value), one colour per activation; diverged or failed trials are drawn as
    crosses on the panel's top edge, so sensitivity and failure regions read at a glance.
    """
    files = []
    for task, g in trials.groupby("task", sort=True):
        opts = sorted(g.optimizer.unique())
        fig, axes = plt.subplots(1, len(opts), figsize=(3.6 * len(opts), 3.2), squeeze=False)
        for ax, opt in zip(axes[0], opts):
            d = g[g.optimizer == opt].dropna(axis=1, how="all")
            hps = [c for c in d.columns if c.startswith("hp_") and pd.api.types.is_numeric_dtype(d[c])
                   and d[c].nunique() > 1]
            x = next((c for c in ("hp_lr", "hp_damping") if c in hps), hps[0] if hps else None)
            if x is None:
                continue
            finite = d[np.isfinite(d.score)]
            top = finite.score.max() if not finite.empty else 1.0
            for i, (act, a) in enumerate(d.groupby("activation", sort=True)):
                ok = a[np.isfinite(a.score)]
                ax.scatter(ok[x], ok.score, s=18, color=f"C{i}", label=act)
                bad = a[~np.isfinite(a.score)]
                ax.scatter(bad[x], [top] * len(bad), marker="x", s=24, color=f"C{i}")
            ax.set_xscale("log")
            if not finite.empty and (finite.score > 0).all():
                ax.set_yscale("log")
            ax.set_title(opt)
            ax.set_xlabel(x[3:])
            ax.set_ylabel(f"final {metric}")
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"{task}: tuning trials (x: diverged)")
        fig.tight_layout()
        path = out / f"tuning_{task}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path)
    return files
