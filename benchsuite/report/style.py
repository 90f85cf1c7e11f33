"""One look for every figure and table: a fixed colour per optimizer column, units on axes.

A reader compares figures side by side, so an optimizer keeps its colour in every
figure of every report, whatever subset of columns a figure shows. The built-in
columns have fixed colours (first-order methods in cool colours, the Kronecker-factored
family in vermillion, dark gold and magenta, Hessian-free in purple, the diagonal GN in greens); a column
label that is not listed (a user's own optimizer, or a variant such as
``kfgn-kflr-lm``) takes the colour of its family (the label's prefix before ``-``)
lightened or darkened by a stable hash of the label, or, for an unknown family, a
colour picked from a 20-colour palette by the same hash. Colours never depend on the
order in which columns appear.
"""

from __future__ import annotations

import colorsys
import hashlib
from collections.abc import Iterable

import matplotlib.colors as mcolors
import seaborn as sns

__all__ = ["AXIS_LABELS", "optimizer_color", "optimizer_palette"]

# Fixed colours of the built-in columns (Okabe–Ito and Tableau hues, colour-blind aware).
_FIXED: dict[str, str] = {
    "sgd": "#0072B2",
    "sgd-momentum": "#56B4E9",
    "adam": "#009E73",
    "rmsprop": "#17BECF",
    "kfgn-kfra": "#D55E00",
    "kfgn-kflr": "#B8860B",
    "kfgn-kfac": "#C51B7D",
    "kfgn": "#D55E00",
    "hf": "#7B3294",
    "hf-martens": "#C2A5CF",
    "diag_gn": "#4D9221",
    "diag_gn-mc": "#A6D96A",
    "diag_gn-exact": "#1B7837",
}

AXIS_LABELS: dict[str, str] = {
    "time": "training time (s, excl. evaluation)",
    "step": "optimizer step",
    "train_loss": "training loss",
    "valid_loss": "validation loss",
    "loss": "mini-batch loss",
    "epoch": "epoch",
}


def _stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def _shade(color: str, label: str) -> str:
    """``color`` with its lightness moved by a stable, label-dependent amount in ±0.25."""
    r, g, b = mcolors.to_rgb(color)
    h, lightness, s = colorsys.rgb_to_hls(r, g, b)
    delta = ((_stable_hash(label) % 1000) / 999 - 0.5) * 0.5  # in [-0.25, 0.25]
    if abs(delta) < 0.1:  # keep a variant visibly apart from its family's colour
        delta = 0.1 if delta >= 0 else -0.1
    return mcolors.to_hex(colorsys.hls_to_rgb(h, min(0.85, max(0.15, lightness + delta)), s))


def optimizer_color(label: str) -> str:
    """The colour (hex) of optimizer column ``label``: the same in every figure."""
    if label in _FIXED:
        return _FIXED[label]
    family = label.split("-")[0]
    prefix = next((k for k in sorted(_FIXED, key=len, reverse=True) if label.startswith(k + "-")), None)
    base = _FIXED.get(prefix or family)
    if base is not None:
        return _shade(base, label)
    palette = sns.color_palette("tab20", 20)
    return mcolors.to_hex(palette[_stable_hash(label) % 20])


def optimizer_palette(labels: Iterable[str]) -> dict[str, str]:
    """``{label: colour}`` for seaborn's ``palette=`` argument."""
    return {str(label): optimizer_color(str(label)) for label in labels}
