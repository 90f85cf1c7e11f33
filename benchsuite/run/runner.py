"""The one training loop of the project: ``run(spec) -> RunRecord``.

The runner owns seeding, data, batching, timing, evaluation, curvature probes,
the budget and divergence handling; optimizers only update (AlgoPerf's split).
Only ``optimizer.step(closure)`` is timed (CUDA-synchronised); evaluation,
logging and probes run outside the timed region. A diverged or failed run is
returned as a record, never raised, so a suite always goes on.
"""

from __future__ import annotations

import copy
import logging
import math
import resource
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from benchsuite.contracts.activation import ACTIVATIONS
from benchsuite.errors import ConfigError
from benchsuite.contracts.optimizer import OPTIMIZERS, OptimizerEntry, StepClosure
from benchsuite.run.provenance import capture
from benchsuite.records.record import RunRecord, Status
from benchsuite.config.spec import RunSpec
from benchsuite.contracts.task import TASKS, Split, Task
from benchsuite.run.timing import TrainTimer, seed_everything

__all__ = ["Resolved", "resolve", "run"]
log = logging.getLogger(__name__)

EVAL_CHUNK = 4096
PROBE_BATCH = 256


@dataclass(frozen=True)
class Resolved:
    """A spec's names turned into objects, with every value validated."""

    spec: RunSpec
    task: Task
    optimizer: OptimizerEntry

    @property
    def batch_size(self) -> int:
        return self.spec.batch_size or self.task.batch_size


def resolve(spec: RunSpec) -> Resolved:
    """Validate ``spec`` against the registries without running it.

    Raises:
        UnknownNameError: unknown task, activation or optimizer (lists the valid ones).
        ConfigError: bad size, options, hyperparameters or an unavailable device.
    """
    task = TASKS.get(spec.task)(spec.size, **spec.task_options)
    ACTIVATIONS.get(spec.activation).options(**spec.activation_options)
    entry = OPTIMIZERS.get(spec.optimizer)
    entry.config(spec.hparams)
    if spec.statistics != "none":
        from benchsuite.probes import PRESETS  # lazy: curvature is optional weight

        if spec.statistics not in PRESETS:
            raise ConfigError(f"Unknown statistics preset '{spec.statistics}'. Valid choices: {', '.join(PRESETS)}")
    if spec.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"Invalid device: {spec.device} (CUDA is not available here). Valid choices: cpu")
    return Resolved(spec, task, entry)


class _Batches:
    """Shuffled mini-batches without replacement, one permutation per epoch, from a seeded generator."""

    def __init__(self, split: Split, batch_size: int, seed: int):
        self.split, self.n = split, len(split)
        self.batch_size = min(batch_size, self.n)
        self.per_epoch = max(1, self.n // self.batch_size)  # incomplete last batch dropped
        self.gen = torch.Generator().manual_seed(seed)
        self._order: Tensor | None = None
        self._pos = self.per_epoch

    def next(self) -> tuple[Tensor, Tensor]:
        if self._pos >= self.per_epoch:
            self._order = torch.randperm(self.n, generator=self.gen).to(self.split.inputs.device)
            self._pos = 0
        if self.batch_size == self.n:
            self._pos += 1
            return self.split.inputs, self.split.targets
        idx = self._order[self._pos * self.batch_size : (self._pos + 1) * self.batch_size]  # (B,)
        self._pos += 1
        return self.split.inputs[idx], self.split.targets[idx]


@torch.no_grad()
def _evaluate(model: nn.Module, loss_fn: nn.Module, task: Task, splits: dict[str, Split]) -> dict[str, float]:
    was_training = model.training
    model.eval()
    out: dict[str, float] = {}
    for name, split in splits.items():
        logits = torch.cat([model(x) for x in split.inputs.split(EVAL_CHUNK)])  # (N, C)
        out[f"{name}_loss"] = loss_fn(logits, split.targets).item()
        for metric, value in task.metrics(logits, split.targets).items():
            out[f"{name}_{metric}"] = value
    model.train(was_training)
    return out


def _peak_rss() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def run(spec: RunSpec, *, on_step: Callable[[int], None] | None = None) -> RunRecord:
    """Train as ``spec`` says and return the record; never raises for a failing run.

    Configuration errors (unknown names, bad values) are raised *before* training, as
    :class:`~benchsuite.errors.BenchsuiteError`, so a suite can be validated up front.
    """
    resolved = resolve(spec)
    device = torch.device(spec.device)
    record = RunRecord(run_id=spec.run_id, spec=spec.to_dict(), status=Status.FAILED.value, reason="not started")
    record.provenance = capture(device)
    record.target = vars(resolved.task.target).copy()
    wall0 = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        _train(resolved, device, record, wall0, on_step)
    except FloatingPointError as exc:  # an optimizer met non-finite curvature: the run diverged
        record.status, record.reason = Status.DIVERGED.value, f"{exc} during step {record.steps + 1}"
    except Exception as exc:  # recorded, not raised: one bad run must not stop a suite
        record.status = Status.FAILED.value
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        record.reason = f"{last} (at step {record.steps})"
        log.warning("run %s failed: %s", spec.label, record.reason)
        log.debug("traceback:\n%s", traceback.format_exc())
    record.wall_seconds = time.perf_counter() - wall0
    if device.type == "cuda":
        record.peak_memory_bytes = int(torch.cuda.max_memory_allocated(device))
    record.peak_rss_bytes = _peak_rss()
    return record


def warm_up(entry: OptimizerEntry, hparams: Mapping[str, Any], model: nn.Module, loss_fn: nn.Module,
            x: Tensor, y: Tensor) -> None:
    """One untimed optimizer step on throw-away copies of ``model`` and its optimizer.

    CUDA initialises libraries lazily (cuBLAS handles, cuSOLVER for the
    factorisations of second-order methods, the caching allocator's first blocks), so
    without this the first *timed* step of each run would pay a one-off cost that is
    no property of the method, and a short time budget would charge it unevenly. The
    copies are discarded and every global RNG is restored: the run that follows is
    the same as without the warm-up.
    """
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        twin = copy.deepcopy(model)
        entry.build(twin, loss_fn, hparams).step(StepClosure(twin, loss_fn, x, y))
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)


def _train(r: Resolved, device: torch.device, rec: RunRecord, wall0: float,
           on_step: Callable[[int], None] | None) -> None:
    spec, task = r.spec, r.task
    dtype = getattr(torch, spec.dtype)
    seed_everything(spec.seed)
    data = task.make_data(spec.data_seed).to(device, dtype)
    seed_everything(spec.seed)  # model init independent of how much randomness data generation used
    model = task.build_model(spec.activation, **spec.activation_options).to(device=device, dtype=dtype)
    loss_fn = task.loss_fn()
    optimizer = r.optimizer.build(model, loss_fn, spec.hparams)
    batches = _Batches(data.train, r.batch_size, seed=spec.seed)
    max_steps = spec.budget.max_steps(batches.per_epoch)
    train_eval = data.train
    if spec.eval_train_examples is not None and spec.eval_train_examples < len(train_eval):
        n = spec.eval_train_examples
        train_eval = Split(train_eval.inputs[:n], train_eval.targets[:n])
    splits = {"train": train_eval, "valid": data.valid, "test": data.test}
    target = task.target

    probe = None
    if spec.statistics != "none":
        from benchsuite.probes import CurvatureProbe

        k = min(PROBE_BATCH, len(data.train))
        probe = CurvatureProbe(spec.statistics, model, loss_fn, (data.train.inputs[:k], data.train.targets[:k]),
                               seed=spec.seed)

    if device.type == "cuda":  # CPU has no lazy library start-up worth excluding
        k = min(r.batch_size, len(data.train))
        warm_up(r.optimizer, spec.hparams, model, loss_fn, data.train.inputs[:k], data.train.targets[:k])
        torch.cuda.reset_peak_memory_stats(device)  # the twin's memory is not the run's

    timer = TrainTimer(device)
    log_step, log_loss, log_time = rec.step_log["step"], rec.step_log["loss"], rec.step_log["time"]

    def evaluate(step: int) -> dict[str, float]:
        row = {"step": step, "time": timer.total, "epoch": step / batches.per_epoch,
               **_evaluate(model, loss_fn, task, splits)}
        rec.evals.append(row)
        return row

    def run_probe(step: int) -> None:
        if probe is not None:
            rec.stats.append({"step": step, **probe(step)})

    def diverged(step: int, why: str) -> None:
        rec.status, rec.reason = Status.DIVERGED.value, f"{why} at step {step}"

    first = evaluate(0)
    run_probe(0)
    initial = first["train_loss"]
    if not math.isfinite(initial):
        diverged(0, f"non-finite initial loss ({initial})")
        return
    blowup = spec.divergence_factor * max(abs(initial), 1e-8)
    step, stop = 0, "budget"
    while True:
        if max_steps is not None and step >= max_steps:
            break
        if spec.budget.seconds is not None and timer.total >= spec.budget.seconds:
            break
        if spec.timeout_s is not None and time.perf_counter() - wall0 > spec.timeout_s:
            rec.status, rec.reason = Status.TIMEOUT.value, f"wall-clock timeout {spec.timeout_s}s at step {step}"
            rec.steps = step
            return
        x, y = batches.next()
        closure = StepClosure(model, loss_fn, x, y)
        with timer:
            loss = optimizer.step(closure)
        step += 1
        rec.steps, rec.train_seconds = step, timer.total
        value = float(loss) if loss is not None else math.nan  # after the timed block: no sync inside
        log_step.append(step)
        log_loss.append(value)
        log_time.append(timer.total)
        if on_step is not None:
            on_step(step)
        if not math.isfinite(value):
            diverged(step, f"non-finite loss ({value})")
            return
        if value > blowup:
            diverged(step, f"loss blow-up ({value:.4g} > {spec.divergence_factor:g} x initial {initial:.4g})")
            return
        if step % spec.eval_every == 0:
            row = evaluate(step)
            if not math.isfinite(row["train_loss"]):
                diverged(step, f"non-finite evaluation loss ({row['train_loss']})")
                return
            if _check_target(rec, row, target) and spec.stop_at_target:
                stop = "target"
                break
        if probe is not None and spec.stats_every and step % spec.stats_every == 0:
            run_probe(step)
    if not rec.evals or rec.evals[-1]["step"] != step:
        row = evaluate(step)
        _check_target(rec, row, target)
        if not math.isfinite(row["train_loss"]):
            diverged(step, f"non-finite evaluation loss ({row['train_loss']})")
            return
    if probe is not None and (not rec.stats or rec.stats[-1]["step"] != step):
        run_probe(step)
    rec.status, rec.reason = Status.COMPLETED.value, stop


def _check_target(rec: RunRecord, row: dict[str, Any], target: Any) -> bool:
    value = row.get(target.metric)
    if rec.time_to_target is None and value is not None and target.reached(value):
        rec.time_to_target = {"step": row["step"], "seconds": row["time"], "value": value}
    return rec.time_to_target is not None
