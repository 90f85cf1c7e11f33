"""Mini-batches of a training split for the runner."""

from __future__ import annotations

import torch
from torch import Tensor

from benchsuite.contracts.task import Split

__all__ = ["Batches"]


class Batches:
    """Shuffled mini-batches without replacement, one permutation per epoch, from a seeded generator.

    The incomplete last batch of an epoch is dropped, so every step sees ``batch_size``
    examples; a batch size of at least the split's size gives full-batch steps.

    Args:
        split: The training split.
        batch_size: Examples per step (capped at the split's size).
        seed: Seeds the generator of the permutations (independent of the global RNGs).
    """

    def __init__(self, split: Split, batch_size: int, seed: int):
        self.split, self.n = split, len(split)
        self.batch_size = min(batch_size, self.n)
        self.per_epoch = max(1, self.n // self.batch_size)
        self.gen = torch.Generator().manual_seed(seed)
        self._order: Tensor | None = None
        self._pos = self.per_epoch

    def state_dict(self) -> dict:
        """Where the sampler is: its generator state, this epoch's order and position (for checkpoints)."""
        return {"gen": self.gen.get_state(), "order": None if self._order is None else self._order.cpu(),
                "pos": self._pos}

    def load_state_dict(self, state: dict) -> None:
        self.gen.set_state(state["gen"])
        order = state["order"]
        self._order = None if order is None else order.to(self.split.inputs.device)
        self._pos = int(state["pos"])

    def next(self) -> tuple[Tensor, Tensor]:
        """The next ``(inputs, targets)`` batch, reshuffling at the start of each epoch."""
        if self._pos >= self.per_epoch:
            self._order = torch.randperm(self.n, generator=self.gen).to(self.split.inputs.device)
            self._pos = 0
        if self.batch_size == self.n:
            self._pos += 1
            return self.split.inputs, self.split.targets
        idx = self._order[self._pos * self.batch_size : (self._pos + 1) * self.batch_size]  # (B,)
        self._pos += 1
        return self.split.inputs[idx], self.split.targets[idx]
