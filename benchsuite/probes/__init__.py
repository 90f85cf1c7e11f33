"""Curvature probes: statistics a run records on a fixed probe batch, outside timed work.

Built on the torch-only engine :mod:`benchsuite.curvature`; the runner uses
:class:`CurvatureProbe` and :data:`PRESETS`, plugins add to :data:`STATISTICS`.
"""

from benchsuite.probes.context import ProbeContext, ProbeOptions
from benchsuite.probes.probe import CurvatureProbe
from benchsuite.probes.registry import PRESETS, STATISTICS, Statistic

__all__ = ["PRESETS", "STATISTICS", "CurvatureProbe", "ProbeContext", "ProbeOptions", "Statistic"]
