"""RunSpec: the frozen description of one run, and its content-hash run id."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from benchsuite.errors import ConfigError

__all__ = ["FULL_BATCH", "Budget", "RunSpec"]

DTYPES = ("float32", "float64")

FULL_BATCH = "full"
"""The ``batch_size`` meaning the whole training split at every step (full-batch steps)."""


@dataclass(frozen=True)
class Budget:
    """When a run stops: after ``steps`` optimizer steps, ``epochs`` passes over the
    training set, or ``seconds`` of timed training work, whichever comes first."""

    steps: int | None = None
    epochs: float | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.steps is None and self.epochs is None and self.seconds is None:
            raise ConfigError("Invalid budget: give at least one of steps, epochs, seconds")
        if self.steps is not None and (not _is_int(self.steps) or self.steps < 1):
            raise ConfigError(f"Invalid budget steps: {self.steps!r} (need a positive integer)")
        for name in ("epochs", "seconds"):
            v = getattr(self, name)
            if v is not None and (not _is_number(v) or not math.isfinite(v) or v <= 0):
                raise ConfigError(f"Invalid budget {name}: {v} (need a positive number)")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Budget:
        if not isinstance(d, Mapping):
            raise ConfigError(f"Invalid budget: {d!r} (need a table with steps, epochs and/or seconds)")
        unknown = sorted(set(d) - {"steps", "epochs", "seconds"})
        if unknown:
            raise ConfigError(f"Unknown budget field(s) {unknown}. Valid: epochs, seconds, steps")
        return cls(**d)

    def max_steps(self, steps_per_epoch: int) -> int | None:
        """The step limit implied by ``steps`` and ``epochs`` (None if only seconds)."""
        limits = []
        if self.steps is not None:
            limits.append(self.steps)
        if self.epochs is not None:
            limits.append(max(1, math.ceil(self.epochs * steps_per_epoch)))
        return min(limits) if limits else None


MAX_SEED = 2**63  # torch.Generator.manual_seed takes a signed 64-bit integer


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _plain(d: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k): d[k] for k in sorted(d)}


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines a run. Two equal specs give the same run id.

    Attributes:
        task, activation, optimizer: Registry names.
        seed: Seeds model initialisation, batch order and every RNG of the run.
        size: The task's size preset (``tiny``, ``default``, ...).
        task_options, activation_options, hparams: Overrides (validated when resolved).
        batch_size: Mini-batch size (None: the task's default; ``"full"``: the whole
            training split at every step, as Martens (2010) runs HF; an int above the
            split's size also gives full-batch steps, see :class:`~benchsuite.run.batches.Batches`).
        weight_cost: ℓ2 weight cost ``c`` added to the training objective,
            ``f(θ) + (c/2)·Σ‖θ_l‖²`` over the weights and biases of the ``nn.Linear`` layers
            (no PReLU slopes; Martens' code does not mask the biases out), in the papers' units: ``f`` is the loss per example summed
            over outputs (Martens 2010: ``weightcost = 2e-5``), the convention of the
            optimizers' damping. The runner converts it to the loss module's units
            (``s·c``, :func:`benchsuite.curvature.per_example_scale`). Evaluations
            (train/valid/test losses in records) stay the task's data loss. Left out of
            the run id at its default 0, so the ids of older specs do not move.
        budget: When to stop.
        eval_every: Evaluate train/validation/test every so many steps (and at start/end).
        eval_train_examples: Training examples used for the train loss at evals (None: all).
        stop_at_target: Stop once the task's target is reached.
        divergence_factor: Loss above this multiple of the initial loss counts as diverged.
        statistics: Curvature-statistics preset (``none``, ``cheap``, ``full``).
        stats_every: Probe cadence in steps (0: only at start and end when a preset is set).
        device, dtype: Where and in which precision to run.
        data_seed: Seeds the data set (fixed across ``seed`` so seeds differ only in training;
            a suite's ``data_seed`` sets it). Part of the run id, as it always was.
        timeout_s: Wall-clock guard (status ``timeout``), None for none.
        checkpoint_every: Save a checkpoint every so many steps (0: never), so a killed
            run resumes from its last one (:mod:`benchsuite.run.checkpoint`). It does not
            change the outcome, so it is not part of the run id.
        deterministic: Deterministic GPU mode for the run
            (:func:`benchsuite.run.seeding.deterministic_mode`:
            ``torch.use_deterministic_algorithms(True)``, cuDNN deterministic and not
            benchmarking, ``CUBLAS_WORKSPACE_CONFIG=:4096:8``), so two runs of one spec on one
            GPU give the same loss series. Slower on CUDA; no effect on the CPU, whose
            kernels are deterministic already. It can change the GPU's numerics, so it is
            part of the run id when on (left out at its default, so no id moves).
        optimizer_label: Name shown in reports (e.g. ``kfgn-kfra``); defaults to ``optimizer``.
        trial: Index of the tuning trial this run is (None: not a tuning trial). Trials
            are ordinary records; reports keep them out of the comparison tables.
    """

    task: str
    activation: str
    optimizer: str
    seed: int = 0
    size: str = "default"
    task_options: Mapping[str, Any] = field(default_factory=dict)
    activation_options: Mapping[str, Any] = field(default_factory=dict)
    hparams: Mapping[str, Any] = field(default_factory=dict)
    batch_size: int | str | None = None
    weight_cost: float = 0.0
    budget: Budget = Budget(steps=100)
    eval_every: int = 50
    eval_train_examples: int | None = None
    stop_at_target: bool = False
    divergence_factor: float = 1e3
    statistics: str = "none"
    stats_every: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    data_seed: int = 0
    timeout_s: float | None = None
    checkpoint_every: int = 0
    deterministic: bool = False
    optimizer_label: str | None = None
    trial: int | None = None

    def __post_init__(self) -> None:
        for name in ("task", "activation", "optimizer"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"Invalid {name}: {getattr(self, name)!r}")
        for name in ("seed", "data_seed"):
            value = getattr(self, name)
            if not _is_int(value) or not 0 <= value < MAX_SEED:
                raise ConfigError(f"Invalid {name}: {value!r} (need an integer in [0, 2**63))")
        if not isinstance(self.size, str) or not self.size:
            raise ConfigError(f"Invalid size: {self.size!r} (need a size name such as tiny or default)")
        for name in ("task_options", "activation_options", "hparams"):
            value = getattr(self, name)
            if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
                raise ConfigError(f"Invalid {name}: {value!r} (need a table of named values)")
        if not isinstance(self.budget, Budget):
            raise ConfigError(f"Invalid budget: {self.budget!r} (need a table with steps, epochs and/or seconds)")
        if not isinstance(self.deterministic, bool):
            raise ConfigError(f"Invalid deterministic: {self.deterministic!r} (need true or false)")
        if not isinstance(self.stop_at_target, bool):
            raise ConfigError(f"Invalid stop_at_target: {self.stop_at_target!r} (need true or false)")
        n = self.eval_train_examples
        if n is not None and (not _is_int(n) or n < 1):
            raise ConfigError(f"Invalid eval_train_examples: {n!r} (need a positive integer, or leave it out for all)")
        t = self.timeout_s
        if t is not None and not (_is_number(t) and math.isfinite(t) and t > 0):
            raise ConfigError(f"Invalid timeout_s: {t!r} (need a positive number of seconds, or leave it out)")
        if not isinstance(self.statistics, str):
            raise ConfigError(f"Invalid statistics: {self.statistics!r} (need a preset name: none, cheap, full)")
        if not _is_int(self.checkpoint_every) or self.checkpoint_every < 0:
            raise ConfigError(f"Invalid checkpoint_every: {self.checkpoint_every!r} (need a step count >= 0; 0: off)")
        label = self.optimizer_label
        if label is not None and (not isinstance(label, str) or not label.strip()):
            raise ConfigError(f"Invalid optimizer_label: {label!r} (need a non-empty string)")
        b = self.batch_size
        if not (b is None or b == FULL_BATCH or (isinstance(b, int) and not isinstance(b, bool) and b >= 1)):
            raise ConfigError(f"Invalid batch_size: {b!r} (need a positive integer or \"{FULL_BATCH}\")")
        c = self.weight_cost
        if not (isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) and c >= 0):
            raise ConfigError(f"Invalid weight_cost: {c!r} (need a finite number >= 0)")
        object.__setattr__(self, "weight_cost", float(c))  # 1 and 1.0 are one spec, one run id
        if not _is_int(self.eval_every) or self.eval_every < 1:
            raise ConfigError(f"Invalid eval_every: {self.eval_every!r} (need a positive integer)")
        if not _is_int(self.stats_every) or self.stats_every < 0:
            raise ConfigError(f"Invalid stats_every: {self.stats_every!r} (need a non-negative integer)")
        f = self.divergence_factor
        if not (_is_number(f) and math.isfinite(f) and f > 1):
            raise ConfigError(f"Invalid divergence_factor: {f!r} (need a finite number > 1)")
        if self.trial is not None and (not _is_int(self.trial) or self.trial < 0):
            raise ConfigError(f"Invalid trial: {self.trial!r} (need a non-negative integer or None)")
        if self.dtype not in DTYPES:
            raise ConfigError(f"Invalid dtype: {self.dtype}. Valid choices: {', '.join(DTYPES)}")
        if not isinstance(self.device, str) or not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"Invalid device: {self.device}. Valid choices: cpu, cuda, cuda:N")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("task_options", "activation_options", "hparams"):
            d[key] = _plain(getattr(self, key))
        d["budget"] = {k: v for k, v in asdict(self.budget).items() if v is not None}
        if d["trial"] is None:  # keeps the run ids of non-trial specs as they were before trials existed
            del d["trial"]
        if d["weight_cost"] == 0:  # likewise for specs without a weight cost
            del d["weight_cost"]
        if d["checkpoint_every"] == 0:
            del d["checkpoint_every"]
        if not d["deterministic"]:
            del d["deterministic"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"Unknown RunSpec field(s) {unknown}. Valid: {', '.join(sorted(known))}")
        d = dict(d)
        if "budget" in d and not isinstance(d["budget"], Budget):
            d["budget"] = Budget.from_dict(d["budget"])
        return cls(**d)

    @property
    def run_id(self) -> str:
        """A content hash of the spec: equal specs share it, so finished runs are skipped."""
        d = self.to_dict()
        d.pop("checkpoint_every", None)  # how often to save does not change the run
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def display_optimizer(self) -> str:
        return self.optimizer_label or self.optimizer

    @property
    def label(self) -> str:
        return f"{self.task}-{self.activation}-{self.display_optimizer}-seed{self.seed}"
