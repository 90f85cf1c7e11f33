"""Figures of a loss-surface slice: a filled contour plot and a 3-D surface, PNG and SVG.

The contour plot also shows the check of :func:`benchsuite.analysis.surface.check_slice`:
the sampled points where the slice Hessian is PSD (open circles), has negative
curvature (red crosses) or was skipped next to a kink (grey dots), and ``W`` itself
(the origin, a black plus). The colour scale is the training loss; it is logarithmic
when the loss spans more than two decades over the grid (Li et al. 2018 draw
their contours the same way for wide ranges).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FormatStrFormatter, MaxNLocator

if TYPE_CHECKING:
    from benchsuite.analysis.surface import SliceResult

__all__ = ["plot_slice"]

CMAP = "viridis"
DPI = 120


def _norm(loss: np.ndarray) -> mcolors.Normalize:
    lo, hi = float(np.nanmin(loss)), float(np.nanmax(loss))
    if lo > 0 and hi / lo > 100:
        return mcolors.LogNorm(vmin=lo, vmax=hi)
    return mcolors.Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1e-12)


def _tick_format(norm: mcolors.Normalize) -> FormatStrFormatter | None:
    """Ticks with as many decimals as the range needs (a loss at 2.31… over a range of 0.02: 3 decimals)."""
    if isinstance(norm, mcolors.LogNorm):
        return None
    spread = max(norm.vmax - norm.vmin, 1e-12)
    decimals = min(8, max(0, 2 - int(np.floor(np.log10(spread)))))
    return FormatStrFormatter(f"%.{decimals}f")


def _levels(norm: mcolors.Normalize, n: int = 30) -> np.ndarray:
    if isinstance(norm, mcolors.LogNorm):
        return np.geomspace(norm.vmin, norm.vmax, n)
    return np.linspace(norm.vmin, norm.vmax, n)


def _titles(s: SliceResult, meta: dict[str, Any]) -> tuple[str, str, str]:
    i, j = s.layers
    where = f"within layer {i}" if s.name == "within" else f"across layers {i} (α) and {j} (β)"
    title = f"{meta['task']} · {meta['activation']} · {meta['source']}: {where}"
    return title, f"α (direction A in layer {i})", f"β (direction B in layer {j})"


def _verdict(check: dict[str, Any]) -> str:
    if check["psd"] is None:
        return "no smooth point sampled"
    if check["psd"]:
        return f"PSD at all {check['smooth_points']} smooth points (min eig {check['min_eig']:.2g})"
    return (f"negative curvature at {check['negative_points']}/{check['smooth_points']} smooth points "
            f"(min eig {check['min_eig']:.2g})")


def plot_slice(s: SliceResult, meta: dict[str, Any], out_dir: Path) -> list[Path]:
    """Draw ``<slice>-contour`` and ``<slice>-surface`` as PNG and SVG in ``out_dir``; the paths."""
    title, xlabel, ylabel = _titles(s, meta)
    label = f"training loss ({meta['examples']} examples)"
    aa, bb = np.meshgrid(s.alphas, s.betas)  # (R_β, R_α) each, like s.loss
    norm = _norm(s.loss)
    files: list[Path] = []

    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    filled = ax.contourf(aa, bb, s.loss, levels=_levels(norm), cmap=CMAP, norm=norm, extend="neither")
    ax.contour(aa, bb, s.loss, levels=_levels(norm, 15), colors="k", linewidths=0.4, alpha=0.5)
    cbar = fig.colorbar(filled, ax=ax, format=_tick_format(norm))
    cbar.set_label(label)
    if not isinstance(norm, mcolors.LogNorm):
        cbar.locator = MaxNLocator(nbins=8)
        cbar.update_ticks()
    samples = s.check["samples"]
    groups = [
        ([p for p in samples if p["smooth"] and not p["negative"]],
         {"marker": "o", "facecolors": "none", "edgecolors": "white", "s": 28, "label": "PSD slice Hessian"}),
        ([p for p in samples if p["negative"]], {"marker": "x", "c": "red", "s": 36, "label": "negative curvature"}),
        ([p for p in samples if not p["smooth"]],
         {"marker": ".", "c": "0.6", "s": 20, "label": "near a kink (skipped)"}),
    ]
    for points, style in groups:
        if points:
            ax.scatter([p["alpha"] for p in points], [p["beta"] for p in points], linewidths=1.0, **style)
    ax.scatter([0], [0], marker="+", c="black", s=80, linewidths=1.5, label="W")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\n{_verdict(s.check)}", fontsize=9)
    ax.set_aspect("equal")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=4, fontsize=7, facecolor="0.75", edgecolor="none")
    fig.tight_layout()
    for ext in ("png", "svg"):
        path = out_dir / f"{s.name}-contour.{ext}"
        fig.savefig(path, dpi=DPI)
        files.append(path)
    plt.close(fig)

    fig = plt.figure(figsize=(7.0, 5.6))
    ax3 = fig.add_subplot(projection="3d")
    z = np.log10(s.loss) if isinstance(norm, mcolors.LogNorm) else s.loss
    surf = ax3.plot_surface(aa, bb, z, cmap=CMAP, linewidth=0, antialiased=True, rcount=len(s.betas),
                            ccount=len(s.alphas))
    zlabel = f"log₁₀ {label}" if isinstance(norm, mcolors.LogNorm) else label
    cbar = fig.colorbar(surf, ax=ax3, shrink=0.6, pad=0.1)
    cbar.set_label(zlabel)
    ax3.set_xlabel(xlabel, fontsize=8, labelpad=8)
    ax3.set_ylabel(ylabel, fontsize=8, labelpad=8)
    ax3.set_zlabel(zlabel, fontsize=8, labelpad=12)
    ax3.tick_params(labelsize=7)
    ax3.zaxis.set_major_formatter(_tick_format(norm) if not isinstance(norm, mcolors.LogNorm) else "{x:.3g}")
    ax3.set_title(title, fontsize=9)
    fig.tight_layout()
    for ext in ("png", "svg"):
        path = out_dir / f"{s.name}-surface.{ext}"
        fig.savefig(path, dpi=DPI)
        files.append(path)
    plt.close(fig)
    return files
