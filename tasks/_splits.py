"""Shared helpers for deterministic train/validation/test splits."""

from __future__ import annotations

import numpy as np
import torch

from benchsuite.contracts.task import Split, TaskData


def split_arrays(
    x: np.ndarray, y: np.ndarray, n_train: int, n_valid: int, n_test: int, seed: int
) -> TaskData:
    """Shuffle ``(x, y)`` with ``seed`` and cut it into train/validation/test splits."""
    n = n_train + n_valid + n_test
    if n > len(x):
        raise ValueError(f"asked for {n} examples, only {len(x)} available")
    perm = np.random.default_rng(seed).permutation(len(x))[:n]
    x, y = x[perm], y[perm]
    cuts = np.cumsum([n_train, n_valid])
    parts = [(x[a:b], y[a:b]) for a, b in zip([0, *cuts], [*cuts, n])]
    return TaskData(*(Split(torch.as_tensor(px), torch.as_tensor(py)) for px, py in parts))


def classification_error(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of examples whose arg-max logit is not the target class."""
    return (logits.argmax(dim=-1) != targets).float().mean().item()
