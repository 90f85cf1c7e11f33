"""Exceptions with messages a user can act on.

Every error raised for bad input derives from :class:`BenchsuiteError`; the CLI
prints its message on one line (no traceback) and exits non-zero.
"""

from __future__ import annotations

from collections.abc import Iterable


class BenchsuiteError(Exception):
    """Base class of the errors benchsuite raises for bad input or state."""


class ConfigError(BenchsuiteError, ValueError):
    """A configuration value (hyperparameter, budget, suite field) is invalid."""


class UnknownNameError(BenchsuiteError, KeyError):
    """A name is not registered; the message lists the valid choices."""

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        self.kind, self.name, self.known = kind, name, sorted(known)
        choices = ", ".join(self.known) if self.known else "(none registered)"
        super().__init__(f"Unknown {kind} '{name}'. Valid choices: {choices}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class ResultsError(BenchsuiteError):
    """A results directory or record file is missing or broken."""
