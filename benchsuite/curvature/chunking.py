"""One chunking rule for every engine function that can split its work.

Functions that batch K vectors or columns through the network take the keyword
``max_elements``: the largest number of tensor elements one chunk of work may hold
(e.g. a (K, N, d) block of backpropagated columns). Results do not depend on it,
only memory and speed do.
"""

from __future__ import annotations

from collections.abc import Iterator

from benchsuite.curvature.errors import CurvatureError

__all__ = ["DEFAULT_MAX_ELEMENTS", "chunk_count", "spans"]

DEFAULT_MAX_ELEMENTS = 2**25


def chunk_count(max_elements: int, per_item: int, total: int) -> int:
    """Items per chunk so that ``items · per_item ≤ max_elements`` (at least 1, at most ``total``).

    Raises:
        CurvatureError: if ``max_elements`` is not a positive integer.
    """
    if isinstance(max_elements, bool) or not isinstance(max_elements, int) or max_elements < 1:
        raise CurvatureError(f"Invalid max_elements: {max_elements!r} (need a positive integer)")
    return max(1, min(total, max_elements // max(1, per_item)))


def spans(total: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of consecutive chunks of ``size`` items covering ``range(total)``."""
    for start in range(0, total, size):
        yield start, min(total, start + size)
