"""Synthetic regression controls whose optimum is known to be exactly zero loss.

* ``teacher_student``: regression onto a random ReLU *teacher* MLP, the classic
  teacher-student setting of statistical-mechanics studies of learning (Saad &
  Solla, "On-line learning in soft committee machines", Phys. Rev. E 52, 1995;
  Goldt et al., "Dynamics of stochastic gradient descent for two-layer neural
  networks in the teacher-student setup", NeurIPS 2019). The student is the task's
  network, as deep as the teacher and at least as wide, so with ReLU units it can
  represent the teacher exactly and the minimum training loss is zero (without
  noise): a loss floor is then the optimizer's, not the model's.
* ``linear_regression``: the convex control. One Linear layer fits noise-free
  affine targets of inputs with axis-aligned scales log-spaced over [0.1, 10]
  (input covariance with condition number 10⁴). Gradient descent crawls along the
  small-scale inputs, while the Kronecker-factored GN (exact for one Linear layer
  under the MSE loss), Hessian-free and even the diagonal GN (the covariance is
  diagonal up to sampling noise) see almost the exact curvature.

Both draw everything from a local :class:`torch.Generator` seeded with the data
seed (teacher weights included); the global RNGs are never touched. Targets are
normalised to zero mean and unit variance per output on the training split, by an
exact affine change of the last layer, so losses read as fractions of the target
variance.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from benchsuite.contracts.activation import ACTIVATIONS
from benchsuite.contracts.task import TASKS, LossKind, Split, Target, Task, TaskData, mlp
from benchsuite.errors import ConfigError

__all__ = ["LinearRegression", "TeacherStudent"]


def _split(x: Tensor, y: Tensor, counts: list[int]) -> TaskData:
    return TaskData(*(Split(a, b) for a, b in zip(torch.split(x, counts), torch.split(y, counts))))


def _normalise_last_layer(weight: Tensor, bias: Tensor, outputs: Tensor) -> tuple[Tensor, Tensor]:
    """Rescale ``(weight, bias)`` so that ``outputs`` (N, K) become zero-mean, unit-variance per column."""
    mean, std = outputs.mean(0), outputs.std(0).clamp_min(1e-12)  # (K,), (K,)
    return weight / std[:, None], (bias - mean) / std  # (K, H), (K,)


@TASKS.register("teacher_student")
class TeacherStudent(Task):
    """Regression (MSE) onto a random ReLU teacher MLP; the student can fit it exactly.

    The teacher is ``n_inputs → teacher_width^depth → n_outputs`` with ReLU units,
    hidden weights ``N(0, 2/fan_in)`` (He), hidden biases ``N(0, 0.5²)`` and an output
    layer rescaled so the training targets have zero mean and unit variance. Inputs are
    ``x ~ N(0, I)``; targets are ``teacher(x) + noise·ε`` with ``ε ~ N(0, 1)``. The student
    (:meth:`build_model`) is ``n_inputs → width^depth → n_outputs`` with ``width ≥
    teacher_width``: a ReLU student holding the teacher's weights (padded with zero
    units) has zero loss. No paper fixes a size; the defaults (20 inputs, teacher
    width 20, student width 100, two hidden layers) are ours.
    """

    loss_kind = LossKind.MSE
    batch_size = 128
    sizes = {
        "default": {"n_inputs": 20, "teacher_width": 20, "width": 100, "depth": 2, "n_outputs": 1,
                    "noise": 0.0, "n_train": 8000, "n_valid": 1000, "n_test": 1000},
        "tiny": {"n_inputs": 8, "teacher_width": 8, "width": 32, "depth": 2,
                 "n_train": 512, "n_valid": 128, "n_test": 128},
    }

    def validate(self) -> None:
        super().validate()
        self.require_positive_ints("n_inputs", "teacher_width", "n_outputs", "n_train", "n_valid", "n_test")
        o = self.options
        if o["width"] < o["teacher_width"]:
            raise ConfigError(f"Invalid width: {o['width']} (need width >= teacher_width {o['teacher_width']}, "
                              "or the student cannot represent the teacher)")
        noise = o["noise"]
        if not isinstance(noise, (int, float)) or isinstance(noise, bool) or not (math.isfinite(noise) and noise >= 0):
            raise ConfigError(f"Invalid noise: {noise} (need a finite number >= 0)")

    def teacher_sizes(self) -> list[int]:
        o = self.options
        return [o["n_inputs"], *([o["teacher_width"]] * o["depth"]), o["n_outputs"]]

    def _generate(self, seed: int) -> tuple[nn.Sequential, Tensor, Tensor]:
        o = self.options
        gen = torch.Generator().manual_seed(seed)
        sizes = self.teacher_sizes()
        with torch.random.fork_rng(devices=[]):  # nn.Linear's default init draws from the global RNG
            teacher = mlp(sizes, ACTIVATIONS.get("relu"))
        linears = [m for m in teacher if isinstance(m, nn.Linear)]
        counts = [o["n_train"], o["n_valid"], o["n_test"]]
        with torch.no_grad():
            for i, layer in enumerate(linears):
                fan_in = sizes[i]
                gain = 2.0 if i < len(linears) - 1 else 1.0
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * math.sqrt(gain / fan_in))
                bias_std = 0.5 if i < len(linears) - 1 else 0.0
                layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen) * bias_std)
            x = torch.randn(sum(counts), o["n_inputs"], generator=gen)  # (N, D)
            eps = torch.randn(sum(counts), o["n_outputs"], generator=gen)  # (N, K)
            last = linears[-1]
            w, b = _normalise_last_layer(last.weight, last.bias, teacher(x[: counts[0]]))
            last.weight.copy_(w)
            last.bias.copy_(b)
            y = teacher(x) + o["noise"] * eps  # (N, K), unit variance on train without noise
        return teacher.requires_grad_(False), x, y

    def teacher(self, seed: int) -> nn.Sequential:
        """The ReLU teacher of data seed ``seed`` (an ``nn.Sequential`` like the student's)."""
        return self._generate(seed)[0]

    def make_data(self, seed: int) -> TaskData:
        o = self.options
        _, x, y = self._generate(seed)
        return _split(x, y, [o["n_train"], o["n_valid"], o["n_test"]])

    def layer_sizes(self) -> tuple[list[int], frozenset[int]]:
        o = self.options
        return [o["n_inputs"], *([o["width"]] * o["depth"]), o["n_outputs"]], frozenset()

    @property
    def target(self) -> Target:
        # The noise-free training targets have unit variance (predicting their mean scores
        # 1.0), so this asks for 1e-3 of the target variance above the noise floor. At tiny
        # after 200 steps (seed 0): HF 2e-4, KFGN 2e-3, Adam 0.05 (lr 1e-3) / 8e-3 (lr 1e-2);
        # Adam at lr 1e-2 gets there after about 1,000 steps.
        return Target("train_loss", 1e-3 + self.options["noise"] ** 2)


@TASKS.register("linear_regression")
class LinearRegression(Task):
    """Convex control: least squares with one Linear layer on axis-aligned ill-conditioned inputs.

    Inputs ``x ~ N(0, diag(s²))`` with ``s`` log-spaced over ``[min_scale, max_scale]``
    (default [0.1, 10]: covariance condition number 10⁴); targets ``y = W* x + b*``
    exactly, with ``W*`` drawn so every input direction carries the same share of the
    target variance and rescaled so training targets have zero mean and unit variance
    per output. The minimum loss is exactly zero. The network is a single Linear layer
    (``layer_sizes`` is ``[n_inputs, n_outputs]``, no hidden layer), so the activation
    a run names is never used. The default batch is the whole training split, so every
    step sees the exact curvature.
    """

    loss_kind = LossKind.MSE
    sizes = {
        "default": {"n_inputs": 100, "n_outputs": 10, "min_scale": 0.1, "max_scale": 10.0,
                    "n_train": 2000, "n_valid": 500, "n_test": 500},
        "tiny": {"n_inputs": 16, "n_outputs": 4, "n_train": 512, "n_valid": 128, "n_test": 128},
    }

    @property
    def batch_size(self) -> int:  # type: ignore[override]
        """The whole training split: full-batch steps, exact curvature."""
        return self.options["n_train"]

    def validate(self) -> None:
        super().validate()
        self.require_positive_ints("n_inputs", "n_outputs", "n_train", "n_valid", "n_test")
        lo, hi = self.options["min_scale"], self.options["max_scale"]
        for key, value in (("min_scale", lo), ("max_scale", hi)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not (
                    math.isfinite(value) and value > 0):
                raise ConfigError(f"Invalid {key}: {value} (need a finite number > 0)")
        if lo > hi:
            raise ConfigError(f"Invalid min_scale: {lo} (need min_scale <= max_scale {hi})")

    def scales(self) -> Tensor:
        """The input standard deviations ``s`` (n_inputs,), log-spaced, smallest first."""
        o = self.options
        return torch.logspace(math.log10(o["min_scale"]), math.log10(o["max_scale"]), o["n_inputs"],
                              dtype=torch.float64)  # (D,)

    def make_data(self, seed: int) -> TaskData:
        o = self.options
        counts = [o["n_train"], o["n_valid"], o["n_test"]]
        gen = torch.Generator().manual_seed(seed)
        s = self.scales()  # (D,)
        x = torch.randn(sum(counts), o["n_inputs"], generator=gen, dtype=torch.float64) * s  # (N, D)
        # Column j of W carries x_j with weight ∝ 1/s_j: every direction adds the same variance.
        w = torch.randn(o["n_outputs"], o["n_inputs"], generator=gen, dtype=torch.float64)
        w = w / (s * math.sqrt(o["n_inputs"]))  # (K, D)
        b = torch.zeros(o["n_outputs"], dtype=torch.float64)  # (K,)
        w, b = _normalise_last_layer(w, b, x[: counts[0]] @ w.T)
        y = x @ w.T + b  # (N, K), exactly affine in x
        return _split(x.float(), y.float(), counts)

    def layer_sizes(self) -> tuple[list[int], frozenset[int]]:
        o = self.options
        return [o["n_inputs"], o["n_outputs"]], frozenset()

    @property
    def target(self) -> Target:
        # The training targets have unit variance: 1e-6 of it, i.e. the affine map
        # recovered to about 1e-3 relative RMS error. Full-batch KFGN (KFLR, γ = 1e-8) and
        # HF get there in 2 steps, diagonal GN in about 7, while plain gradient descent at
        # lr 1/L is still at ~1e-2 of the initial loss after 500 steps (tiny and default).
        return Target("train_loss", 1e-6)
