"""Shared shape of the deep autoencoders (Hinton & Salakhutdinov 2006): halving encoder,
linear code layer, mirrored decoder, sigmoid cross-entropy, per-image squared error."""

from __future__ import annotations

import torch

from benchsuite.contracts.task import LossKind, Task
from benchsuite.errors import ConfigError


class AutoencoderTask(Task):
    """Base of image autoencoders with options ``image_size``, ``width``, ``depth``, ``code``.

    The encoder is ``width, width/2, …, width/2^(depth−1)`` followed by a linear
    ``code`` layer; the decoder mirrors it and outputs one logit per pixel (the
    sigmoid belongs to the loss). Subclasses supply data, sizes and the target.
    """

    loss_kind = LossKind.SIGMOID_CROSS_ENTROPY

    def validate(self) -> None:
        super().validate()
        o = self.options
        if o["width"] // 2 ** (o["depth"] - 1) < 1:
            raise ConfigError(f"Invalid depth: {o['depth']} halves width {o['width']} below 1")
        self.require_positive_ints("image_size", "code", "n_train", "n_valid", "n_test")

    def layer_sizes(self) -> tuple[list[int], frozenset[int]]:
        o = self.options
        d = o["image_size"] ** 2
        enc = [o["width"] // 2**i for i in range(o["depth"])]
        sizes = [d, *enc, o["code"], *reversed(enc), d]
        return sizes, frozenset({len(enc) + 1})  # linear code layer

    def metrics(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        # Per-image summed squared reconstruction error, as Hinton & Salakhutdinov and Martens report.
        return {"sq_error": ((torch.sigmoid(logits) - targets) ** 2).sum(-1).mean().item()}  # logits (N, D)
