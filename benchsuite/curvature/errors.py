"""Exceptions of the curvature engine (it depends only on torch, so it defines its own).

Every error derives from :class:`CurvatureError`, a ``ValueError``: the input (model,
loss module, option) is unsupported or invalid. Messages name the problem and list
the supported choices, so a caller can show them as they are.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["CurvatureError", "UnsupportedLossError", "UnsupportedModelError"]


class CurvatureError(ValueError):
    """Bad input to the curvature engine (an option, a block name, a target)."""


class UnsupportedModelError(CurvatureError):
    """The model has a module (or a module option) the engine cannot differentiate."""


class UnsupportedLossError(CurvatureError):
    """The loss module, its reduction or one of its options is not supported."""


def choices(names: Iterable[str]) -> str:
    """``"a, b, c"``: the sorted choices a message lists."""
    return ", ".join(sorted(names))
