"""Seeding of every global random number generator a run touches, and deterministic GPU mode."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["deterministic_mode", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) global RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


CUBLAS_WORKSPACE = ":4096:8"


@contextlib.contextmanager
def deterministic_mode(enabled: bool = True) -> Iterator[None]:
    """Deterministic kernels for the duration of a run, then the previous settings again.

    Sets ``torch.use_deterministic_algorithms(True)`` (an operation with no
    deterministic implementation raises instead of silently varying),
    ``torch.backends.cudnn.deterministic = True`` and ``cudnn.benchmark = False``, and
    ``CUBLAS_WORKSPACE_CONFIG=:4096:8``, which cuBLAS ≥ 10.2 needs for reproducible
    GEMMs (PyTorch's "Reproducibility" notes). cuBLAS reads the variable when it creates
    a handle, so it is set before the run touches the GPU; a variable already set by
    the user is kept. On the CPU the kernels this suite uses are deterministic already,
    so the mode changes nothing there but the checks.

    Args:
        enabled: False makes this a no-op (the runner always enters it).
    """
    if not enabled:
        yield
        return
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    env_before = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    if env_before is None:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]
        if env_before is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
