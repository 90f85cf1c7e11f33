"""Why a run stopped: one exception per reason, each knowing the :class:`Status` it records.

The training loop raises one of these instead of assigning a status by hand, so
the runner assigns ``record.status`` and ``record.reason`` in exactly one place.
:func:`stop_for` also turns any other exception of a run into its stop reason.
"""

from __future__ import annotations

import traceback
from typing import ClassVar

from benchsuite.records.record import Status

__all__ = ["BudgetSpent", "Diverged", "Failed", "StopRun", "TargetReached", "TimedOut", "stop_for"]


class StopRun(Exception):
    """A run ended; ``reason`` is what the record says, ``status`` how it counts."""

    status: ClassVar[Status]

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class BudgetSpent(StopRun):
    """The step, epoch or training-seconds budget is used up."""

    status = Status.COMPLETED

    def __init__(self) -> None:
        super().__init__("budget")


class TargetReached(StopRun):
    """The task's target was reached and the spec asked to stop there."""

    status = Status.COMPLETED

    def __init__(self) -> None:
        super().__init__("target")


class Diverged(StopRun):
    """A non-finite or blown-up loss (``why``) at ``step``, or non-finite curvature ``during`` it."""

    status = Status.DIVERGED

    def __init__(self, why: str, step: int, *, during: bool = False):
        super().__init__(f"{why} {'during' if during else 'at'} step {step}")
        self.step = step


class TimedOut(StopRun):
    """The wall-clock guard ``timeout_s`` fired before ``step``."""

    status = Status.TIMEOUT

    def __init__(self, timeout_s: float, step: int, *, default: bool = False):
        why = " (the default limit; set timeout_s in the suite file to allow more)" if default else ""
        super().__init__(f"wall-clock timeout {timeout_s:g}s at step {step}{why}")
        self.step = step


class Failed(StopRun):
    """Any other exception inside the run (retried when the suite is run again)."""

    status = Status.FAILED


def stop_for(exc: Exception, steps: int) -> StopRun:
    """The stop reason of an exception that ended a run after ``steps`` completed steps.

    A :class:`FloatingPointError` is what an optimizer raises on non-finite curvature:
    the run diverged during the step it was taking.
    """
    if isinstance(exc, StopRun):
        return exc
    if isinstance(exc, FloatingPointError):
        return Diverged(str(exc), steps + 1, during=True)
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return Failed(f"{last} (at step {steps})")
