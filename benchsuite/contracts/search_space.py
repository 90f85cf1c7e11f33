"""Hyperparameter search spaces and quasi-random trial sampling.

A search space maps hyperparameter names to *dimensions*. Each dimension maps a
point ``u ∈ [0, 1)`` of the unit interval to a value (its inverse CDF), so one
low-discrepancy sequence in the unit cube drives every space:

- :class:`LogUniform` ``(a, b)``: ``a · (b/a)^u`` (learning rates, damping);
- :class:`OneMinusLogUniform` ``(a, b)``: ``1 − a · (b/a)^u`` (momentum, EMA decays:
  log-uniform in the distance from 1, as in AlgoPerf's search spaces);
- :class:`Uniform` ``(a, b)``: ``a + (b − a) u``;
- :class:`Choice` ``(v_1, …, v_k)``: ``v_⌊k u⌋``.

Trials are the first ``n`` points of a scrambled Halton sequence (Owen-scrambled,
``scipy.stats.qmc.Halton``) seeded by a fixed seed, so the same space, count and
seed always give the same trials, and any prefix of a longer budget is a
well-spread design (Bergstra & Bengio 2012 on random search; Bousquet et al. 2017
on quasi-random search).

In suite files a dimension is a one-key table: ``{ log = [1e-4, 1e-1] }``,
``{ one_minus_log = [1e-3, 0.5] }``, ``{ uniform = [0, 1] }``, ``{ choice = [...] }``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from benchsuite.errors import ConfigError

__all__ = ["Choice", "Dimension", "LogUniform", "OneMinusLogUniform", "SearchSpace", "Uniform",
           "parse_space", "sample_trials"]


class Dimension(ABC):
    """One hyperparameter's range: ``from_unit(u)`` maps ``u ∈ [0, 1)`` to a value."""

    kind: ClassVar[str]

    @abstractmethod
    def from_unit(self, u: float) -> Any:
        """The value at quantile ``u`` (the inverse CDF)."""

    @abstractmethod
    def to_dict(self) -> dict[str, list[Any]]:
        """The suite-file form, e.g. ``{"log": [1e-4, 1e-1]}``."""


@dataclass(frozen=True)
class _Interval(Dimension):
    """A range ``[low, high]`` of finite numbers (positive ones when ``positive``)."""

    low: float
    high: float
    positive: ClassVar[bool] = True

    def __post_init__(self) -> None:
        low, high = self.low, self.high
        ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high))
        if not ok or low >= high or (self.positive and low <= 0):
            need = "0 < low < high" if self.positive else "low < high"
            raise ConfigError(f"Invalid {self.kind} range: [{low}, {high}] (need finite numbers with {need})")

    def to_dict(self) -> dict[str, list[Any]]:
        return {self.kind: [self.low, self.high]}


@dataclass(frozen=True)
class LogUniform(_Interval):
    """Log-uniform on ``[low, high]``."""

    kind = "log"

    def from_unit(self, u: float) -> float:
        return float(self.low * (self.high / self.low) ** u)


@dataclass(frozen=True)
class OneMinusLogUniform(_Interval):
    """``1 − x`` with ``x`` log-uniform on ``[low, high]`` (values in ``[1 − high, 1 − low]``)."""

    kind = "one_minus_log"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.high > 1:
            raise ConfigError(f"Invalid {self.kind} range: [{self.low}, {self.high}] (need high <= 1)")

    def from_unit(self, u: float) -> float:
        return float(1.0 - self.low * (self.high / self.low) ** u)


@dataclass(frozen=True)
class Uniform(_Interval):
    """Uniform on ``[low, high]``."""

    kind = "uniform"
    positive = False

    def from_unit(self, u: float) -> float:
        return float(self.low + (self.high - self.low) * u)


@dataclass(frozen=True)
class Choice(Dimension):
    """One of ``values``, each with probability ``1/k``."""

    values: tuple[Any, ...]
    kind = "choice"

    def __post_init__(self) -> None:
        if not isinstance(self.values, tuple) or not self.values:
            raise ConfigError(f"Invalid choice: {self.values!r} (need a non-empty list of values)")

    def from_unit(self, u: float) -> Any:
        return self.values[min(int(u * len(self.values)), len(self.values) - 1)]

    def to_dict(self) -> dict[str, list[Any]]:
        return {self.kind: list(self.values)}


SearchSpace = Mapping[str, Dimension]
_KINDS: dict[str, type[Dimension]] = {c.kind: c for c in (LogUniform, OneMinusLogUniform, Uniform, Choice)}


def parse_dimension(name: str, spec: Any) -> Dimension:
    """A dimension from its suite-file form, e.g. ``{"log": [1e-4, 1e-1]}``."""
    if isinstance(spec, Dimension):
        return spec
    if not (isinstance(spec, Mapping) and len(spec) == 1):
        raise ConfigError(f"Invalid search dimension for {name}: {spec!r} "
                          f"(need a one-key table; valid keys: {', '.join(_KINDS)})")
    (kind, args), = spec.items()
    if kind not in _KINDS:
        raise ConfigError(f"Unknown search dimension kind '{kind}' for {name}. Valid choices: {', '.join(_KINDS)}")
    if not isinstance(args, (list, tuple)):
        raise ConfigError(f"Invalid {kind} range for {name}: {args!r} (need a list)")
    if kind == "choice":
        return Choice(tuple(args))
    if len(args) != 2:
        raise ConfigError(f"Invalid {kind} range for {name}: {args!r} (need [low, high])")
    return _KINDS[kind](*args)


def parse_space(spec: Mapping[str, Any]) -> dict[str, Dimension]:
    """A search space from its suite-file form (a table of dimensions)."""
    if not isinstance(spec, Mapping):
        raise ConfigError(f"Invalid search space: {spec!r} (need a table of hyperparameter ranges)")
    return {str(k): parse_dimension(str(k), v) for k, v in spec.items()}


def unit_points(n: int, dims: int, seed: int) -> np.ndarray:
    """The first ``n`` points of a scrambled Halton sequence in ``[0, 1)^dims``."""
    from scipy.stats import qmc

    if dims == 0:
        return np.zeros((n, 0))
    try:
        sampler = qmc.Halton(d=dims, scramble=True, rng=seed)  # SciPy >= 1.15
    except TypeError:  # pragma: no cover - older SciPy
        sampler = qmc.Halton(d=dims, scramble=True, seed=seed)
    return sampler.random(n)  # (n, dims)


def sample_trials(space: SearchSpace, n: int, seed: int,
                  fixed: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """``n`` hyperparameter settings: ``fixed`` values overlaid with quasi-random draws from ``space``.

    Dimensions are ordered by name, so the trials do not depend on the order in
    which a space was written down.
    """
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"Invalid trials: {n} (need a positive integer)")
    names: Sequence[str] = sorted(space)
    points = unit_points(n, len(names), seed)  # (n, d)
    return [{**(fixed or {}), **{k: space[k].from_unit(float(u)) for k, u in zip(names, row)}} for row in points]
