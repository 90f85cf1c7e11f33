"""MLP classifier on scikit-learn's 8×8 digits (1,797 images shipped inside scikit-learn)."""

from __future__ import annotations

import numpy as np
from benchsuite.tasks._splits import classification_error, split_arrays
from sklearn.datasets import load_digits
from torch import Tensor

from benchsuite.contracts.task import TASKS, LossKind, Target, Task, TaskData


@TASKS.register("digits_mlp")
class DigitsMLP(Task):
    """MLP classifier on sklearn digits (64 -> width^depth -> 10, softmax cross-entropy)."""

    loss_kind = LossKind.SOFTMAX_CROSS_ENTROPY
    batch_size = 128
    sizes = {
        "default": {"width": 128, "depth": 2, "n_train": 1077, "n_valid": 360, "n_test": 360},
        "tiny": {"width": 32, "depth": 2},
    }

    def make_data(self, seed: int) -> TaskData:
        ds = load_digits()
        x = (ds.data / 16.0).astype(np.float32)  # (1797, 64) in [0, 1]
        y = ds.target.astype(np.int64)  # (1797,)
        o = self.options
        data = split_arrays(x, y, o["n_train"], o["n_valid"], o["n_test"], seed)
        # Standardise with training statistics only.
        mean = data.train.inputs.mean(0, keepdim=True)  # (1, 64)
        std = data.train.inputs.std(0, keepdim=True).clamp_min(1e-2)  # (1, 64)
        return TaskData(*(type(s)((s.inputs - mean) / std, s.targets) for s in (data.train, data.valid, data.test)))

    def layer_sizes(self) -> tuple[list[int], frozenset[int]]:
        o = self.options
        return [64, *([o["width"]] * o["depth"]), 10], frozenset()

    def metrics(self, logits: Tensor, targets: Tensor) -> dict[str, float]:
        return {"error": classification_error(logits, targets)}

    @property
    def target(self) -> Target:
        return Target("valid_error", 0.05)
