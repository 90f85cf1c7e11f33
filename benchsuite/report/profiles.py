"""Performance profiles (Dolan & Moré 2002) over the task × activation cells of a results directory.

A *problem* ``p`` is one task × activation cell, a *solver* ``s`` one optimizer column.
The cost ``t_{p,s}`` of a solver on a problem is the median over its seeds of a measure
(training seconds or optimizer steps to the task's target), where a seed that did not
complete or never reached the target costs ``+∞`` — so a solver that reached the target
on fewer than half of its seeds has ``t_{p,s} = ∞`` — and a solver with no runs on a
problem is not part of that problem's comparison either way: it counts as ``+∞`` too.
The performance ratio is

    r_{p,s} = t_{p,s} / min_s t_{p,s}

(1 for the best solver, ties included; ``∞`` where the solver failed or no solver
reached the target at all), and the profile of a solver is the share of problems it
solves within a factor ``τ`` of the best,

    ρ_s(τ) = |{p : r_{p,s} ≤ τ}| / |P|,   τ ≥ 1,

read on a log2 τ axis up to ``τ_max``: ``ρ_s(1)`` is the share of problems where ``s``
is (one of) the best, ``ρ_s(τ_max)`` the share it solves at all (when ``τ_max`` is at
least every finite ratio). AlgoPerf (Dahl et al. 2023) scores training algorithms with
the normalised area under such a profile; :func:`profile_summary` does the same.

Reference: E. D. Dolan and J. J. Moré, *Benchmarking optimization software with
performance profiles*, Math. Program. 91:201–213 (2002).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from benchsuite.report.frames import completed
from benchsuite.report.style import optimizer_palette

__all__ = ["MEASURES", "PROBLEM", "RHO_LABEL", "TAU_LABEL", "default_tau_max", "performance_costs",
           "performance_profile", "performance_ratios", "plot_profiles", "profile_summary"]
log = logging.getLogger(__name__)

PROBLEM = ["task", "activation"]
MEASURES: dict[str, tuple[str, str]] = {  # measure -> (runs_frame column, title)
    "time_to_target": ("ttt_seconds", "time to target (training seconds)"),
    "steps_to_target": ("ttt_step", "steps to target"),
}
TAU_LABEL = "τ (ratio to the best, log2)"
RHO_LABEL = "share of task × activation cells"


def performance_costs(runs: pd.DataFrame, measure: str) -> pd.DataFrame:
    """``t_{p,s}``: the median over seeds of ``measure`` per problem (rows) and optimizer (columns).

    A seed that did not complete or did not reach the target counts as ``+∞``; an
    optimizer without runs on a problem gets ``+∞`` there.

    Args:
        runs: :func:`~benchsuite.report.frames.runs_frame` rows (``status``,
            ``reached_target`` and the measure's column).
        measure: A key of :data:`MEASURES` (``"time_to_target"``, ``"steps_to_target"``).
    """
    if measure not in MEASURES:
        raise ValueError(f"Unknown measure {measure!r}. Valid choices: {', '.join(MEASURES)}")
    if runs.empty:
        return pd.DataFrame(index=pd.MultiIndex.from_tuples([], names=PROBLEM))
    column = MEASURES[measure][0]
    ok = completed(runs) & runs.reached_target.astype(bool)
    value = runs[column].astype(float).where(ok, math.inf).fillna(math.inf)
    costs = value.groupby([runs[k] for k in [*PROBLEM, "optimizer"]]).median().unstack("optimizer")
    costs.columns.name = "optimizer"
    return costs.fillna(math.inf)


def _ratios_from_costs(costs: pd.DataFrame) -> pd.DataFrame:
    best = costs.min(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = costs.div(best, axis=0)
    ratios = ratios.mask(costs.eq(best, axis=0) & np.isfinite(costs), 1.0)  # ties, and a best cost of 0
    return ratios.mask(~np.isfinite(costs) | ratios.isna(), math.inf)


def performance_ratios(runs: pd.DataFrame, measure: str) -> pd.DataFrame:
    """``r_{p,s} = t_{p,s} / min_s t_{p,s}``: one row per task × activation, one column per optimizer.

    1 for the best solver of a problem (every tied one), ``+∞`` where the solver's
    cost is infinite (see :func:`performance_costs`), and so ``+∞`` everywhere on a
    problem that no solver solved.

    Args:
        runs: :func:`~benchsuite.report.frames.runs_frame` rows.
        measure: A key of :data:`MEASURES`.
    """
    return _ratios_from_costs(performance_costs(runs, measure))


def performance_profile(ratios: pd.DataFrame, taus: Sequence[float] | np.ndarray) -> pd.DataFrame:
    """``ρ_s(τ)``: the share of problems (rows of ``ratios``) with ``r_{p,s} ≤ τ``, per τ and optimizer.

    Args:
        ratios: :func:`performance_ratios` output.
        taus: The τ values (≥ 1).

    Returns:
        Index ``tau`` (the given order), one column per optimizer, values in [0, 1].
    """
    tau = np.asarray(taus, dtype=float).ravel()  # (k,)
    r = ratios.to_numpy(dtype=float)  # (problems, solvers)
    share = (r[None, :, :] <= tau[:, None, None]).mean(axis=1) if len(r) else np.zeros((tau.size, r.shape[1]))
    return pd.DataFrame(share, index=pd.Index(tau, name="tau"), columns=ratios.columns)


def default_tau_max(ratios: pd.DataFrame, cap: float = 2.0 ** 10) -> float:
    """The smallest power of two ≥ every finite ratio, at least 2 and at most ``cap``."""
    r = ratios.to_numpy(dtype=float)
    finite = r[np.isfinite(r)]
    top = float(finite.max()) if finite.size else 1.0
    return float(min(cap, max(2.0, 2.0 ** math.ceil(math.log2(max(top, 1.0))))))


def profile_summary(ratios: pd.DataFrame, tau_max: float) -> pd.DataFrame:
    """Per optimizer: area under ``ρ_s`` on the log2 τ axis, wins, median ratio to the best, problems solved.

    ``area`` is ``∫_0^{log2 τ_max} ρ_s(2^x) dx / log2 τ_max`` (exact: a problem with
    ratio ``r ≤ τ_max`` contributes ``1 − log2 r / log2 τ_max``): 1 for a solver that
    is the best on every problem, 0 for one that never comes within ``τ_max`` of it.
    ``wins`` counts the problems where the solver is the best (ties count for each
    tied solver; a problem nobody solved is nobody's win), ``median ratio`` is the
    median of ``r_{p,s}`` over problems (``inf`` when it failed on at least half),
    ``solved`` the problems with a finite ratio, ``problems`` their number.

    Args:
        ratios: :func:`performance_ratios` output.
        tau_max: The end of the τ axis, > 1.

    Returns:
        One row per optimizer, sorted by area (then wins) from best to worst.
    """
    if not tau_max > 1:
        raise ValueError(f"Invalid tau_max: {tau_max} (need tau_max > 1)")
    columns = ["optimizer", "area", "wins", "median ratio", "solved", "problems"]
    if ratios.empty or not len(ratios.columns):
        return pd.DataFrame(columns=columns)
    r = ratios.to_numpy(dtype=float)  # (problems, solvers)
    span = math.log2(tau_max)
    with np.errstate(divide="ignore"):
        part = np.where(r <= tau_max, 1.0 - np.log2(r) / span, 0.0)
    summary = pd.DataFrame({
        "optimizer": list(ratios.columns),
        "area": part.mean(axis=0) if len(r) else np.zeros(r.shape[1]),
        "wins": (r == 1.0).sum(axis=0),
        "median ratio": np.median(r, axis=0) if len(r) else np.full(r.shape[1], math.nan),
        "solved": np.isfinite(r).sum(axis=0),
        "problems": len(r),
    })
    return summary.sort_values(["area", "wins", "optimizer"], ascending=[False, False, True], ignore_index=True)


def _step_taus(ratios: pd.DataFrame, tau_max: float) -> np.ndarray:
    """Every τ where some profile steps (the finite ratios within range), plus 1 and ``tau_max``, sorted."""
    r = ratios.to_numpy(dtype=float).ravel()
    inside = r[np.isfinite(r) & (r <= tau_max)]
    return np.unique(np.concatenate([[1.0, tau_max], inside]))


def plot_profiles(ratios: pd.DataFrame, out: Path, measure: str, tau_max: float | None = None) -> list[Path]:
    """``profile_<measure>.png`` and ``.svg``: ``ρ_s(τ)`` as step lines, one colour per optimizer.

    Args:
        ratios: :func:`performance_ratios` output.
        out: Output directory.
        measure: A key of :data:`MEASURES` (names the files and the title).
        tau_max: The end of the τ axis (default :func:`default_tau_max`).

    Returns:
        The two files written (none when ``ratios`` has no problem or no optimizer).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if ratios.empty or not len(ratios.columns):
        return []
    tau_max = tau_max or default_tau_max(ratios)
    taus = _step_taus(ratios, tau_max)
    profile = performance_profile(ratios, taus)
    palette = optimizer_palette(ratios.columns)
    styles = ["-", "--", "-.", ":"]
    fig, ax = plt.subplots(figsize=(7.2, 4.0))
    for k, name in enumerate(ratios.columns):
        ax.step(taus, profile[name].to_numpy(), where="post", color=palette[str(name)],
                linestyle=styles[k % len(styles)], linewidth=1.6, alpha=0.9, label=str(name))
    ax.set_xscale("log", base=2)
    ax.set_xlim(1.0, tau_max)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(TAU_LABEL)
    ax.set_ylabel(RHO_LABEL)
    ax.set_title(f"Performance profile: {MEASURES[measure][1]} ({len(ratios)} cells)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    files = [out / f"profile_{measure}.png", out / f"profile_{measure}.svg"]
    for path in files:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    log.debug("wrote %s", ", ".join(str(p) for p in files))
    return files
