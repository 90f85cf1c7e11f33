"""Timing of training work only, synchronised with the device."""

from __future__ import annotations

import time

import torch

__all__ = ["TrainTimer", "synchronize"]


def synchronize(device: torch.device) -> None:
    """Wait for the queued kernels of a CUDA ``device`` (nothing to wait for on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TrainTimer:
    """Accumulates the seconds spent inside ``with timer:`` blocks.

    Entering and leaving synchronise the device so that queued CUDA kernels are
    charged to the block that launched them and not to the evaluation after it.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.total = 0.0
        self._start = 0.0

    def __enter__(self) -> TrainTimer:
        synchronize(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        synchronize(self.device)
        self.total += time.perf_counter() - self._start
