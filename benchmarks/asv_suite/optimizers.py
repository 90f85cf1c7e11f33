"""asv entry point of :mod:`benchmarks.asv_bench` (optimizer step time, state bytes, loss after k steps)."""

from __future__ import annotations

from benchmarks.asv_bench import Convergence, Gradient, OptimizerStep

__all__ = ["Convergence", "Gradient", "OptimizerStep"]
