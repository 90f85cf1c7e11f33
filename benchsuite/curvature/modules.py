"""Activation modules torch lacks: absolute-value rectification and maxout.

Both are piecewise linear (``f'' = 0`` a.e.), so each layer's Hessian block equals
its Gauss-Newton block (Botev, Ritter & Barber, ICML 2017). Their derivatives live
in :mod:`benchsuite.curvature.activations` and :mod:`benchsuite.curvature.handlers`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from benchsuite.curvature.errors import CurvatureError

__all__ = ["Abs", "Maxout"]


class Abs(nn.Module):
    """Absolute-value rectification ``f(h) = |h|`` (a leaky ReLU with slope −1)."""

    def forward(self, h: Tensor) -> Tensor:
        return h.abs()


class Maxout(nn.Module):
    """Maxout with ``k`` pieces (Goodfellow et al. 2013, "Maxout networks").

    Unit ``i`` outputs ``max_j h[..., i·k + j]``: an input of ``k·d`` features gives
    ``d`` outputs, so the Linear layer before it is ``k`` times wider. Its Jacobian is
    a selection matrix ``S`` (d × k·d) with one 1 per row (ties: the first maximum,
    as ``torch.max`` routes the gradient).

    Raises:
        CurvatureError: for ``pieces`` that is not an integer ``>= 2``.
    """

    def __init__(self, pieces: int = 2):
        super().__init__()
        if isinstance(pieces, bool) or not isinstance(pieces, int) or pieces < 2:
            raise CurvatureError(f"Invalid maxout pieces: {pieces} (need an integer >= 2)")
        self.pieces = pieces

    def forward(self, h: Tensor) -> Tensor:
        return self.argmax_and_max(h)[1]

    def argmax_and_max(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """Indices into the last axis of ``h`` selected per output, and the outputs."""
        *lead, width = h.shape
        if width % self.pieces:
            raise ValueError(f"Maxout input width {width} is not a multiple of pieces={self.pieces}")
        grouped = h.reshape(*lead, width // self.pieces, self.pieces)  # (..., d, k)
        values, idx = grouped.max(dim=-1)  # (..., d)
        offsets = torch.arange(0, width, self.pieces, device=h.device)  # (d,)
        return idx + offsets, values

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"
