"""The one training loop of the project: ``run(spec) -> RunRecord``.

The runner owns seeding, data, batching, timing, evaluation, curvature probes,
the budget and divergence handling; optimizers only update (AlgoPerf's split).
Only ``optimizer.step(closure)`` is timed (CUDA-synchronised); evaluation,
logging and probes run outside the timed region. A diverged or failed run is
returned as a record, never raised, so a suite always goes on. No NaN passes
silently: after every step the loss and the parameters are checked for NaN/Inf
(untimed), a ``FloatingPointError`` inside a step is a divergence, and a run whose
final evaluation has a non-finite loss or metric on any split is never ``completed``.

The objective the optimizer sees is the task's data loss plus the spec's ℓ2
``weight_cost`` (see :func:`l2_parameters` and :class:`StepClosure`); evaluations
(the train/valid/test losses of records) are the task's data loss alone.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import resource
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import Tensor, nn

from benchsuite.config.spec import FULL_BATCH, RunSpec
from benchsuite.contracts.activation import ACTIVATIONS
from benchsuite.contracts.optimizer import OPTIMIZERS, OptimizerEntry, StepClosure
from benchsuite.contracts.task import TASKS, Split, Task, TaskContractError, check_contract
from benchsuite.curvature.errors import CurvatureError
from benchsuite.errors import ConfigError
from benchsuite.records.record import RunRecord, Status
from benchsuite.run.batches import Batches
from benchsuite.run.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from benchsuite.run.provenance import capture
from benchsuite.run.seeding import deterministic_mode, seed_everything
from benchsuite.run.stops import BudgetSpent, Diverged, Failed, TargetReached, TimedOut, stop_for
from benchsuite.run.timing import TrainTimer

__all__ = ["DEFAULT_TIMEOUT_S", "Resolved", "l2_parameters", "resolve", "run", "timeout_of"]
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
        """Examples per step; ``"full"`` becomes ``sys.maxsize``, which :class:`Batches` caps at the split."""
        if self.spec.batch_size == FULL_BATCH:
            return sys.maxsize
        return self.spec.batch_size or self.task.batch_size


DEFAULT_TIMEOUT_S = 1800.0


def timeout_of(spec: RunSpec) -> float:
    """The run's wall-clock limit: its ``timeout_s``, else :data:`DEFAULT_TIMEOUT_S` (30 minutes).

    The default protects a suite from a pathological configuration (HF with a damping
    of 1e-12 once took 960 s for 60 tiny steps); a suite file sets ``timeout_s`` to
    allow longer runs. It is applied here rather than as the spec's default, so run ids
    of existing specs (``timeout_s = None``) do not move.
    """
    return DEFAULT_TIMEOUT_S if spec.timeout_s is None else float(spec.timeout_s)


def _check_activation_options(spec: RunSpec) -> None:
    """Build the activation once for a width of 1, so a bad option value fails here, named."""
    act = ACTIVATIONS.get(spec.activation)
    options = act.options(**spec.activation_options)  # unknown names raise, listing the valid ones
    try:
        act.build(1, **options)
    except (CurvatureError, TypeError, ValueError) as exc:
        message = str(exc) if isinstance(exc, (CurvatureError, ConfigError)) else f"{type(exc).__name__}: {exc}"
        raise ConfigError(f"Invalid activation_options {dict(spec.activation_options)} for "
                          f"'{spec.activation}': {message}") from None


def resolve(spec: RunSpec) -> Resolved:
    """Validate ``spec`` against the registries without running it.

    Raises:
        UnknownNameError: unknown task, activation or optimizer (lists the valid ones).
        ConfigError: bad size, options, hyperparameters or an unavailable device.
    """
    task = TASKS.get(spec.task)(spec.size, **spec.task_options)
    _check_activation_options(spec)
    entry = OPTIMIZERS.get(spec.optimizer)
    entry.config(spec.hparams)
    if spec.statistics != "none":
        from benchsuite.probes import PRESETS  # lazy: curvature is optional weight

        if spec.statistics not in PRESETS:
            raise ConfigError(f"Unknown statistics preset '{spec.statistics}'. Valid choices: {', '.join(PRESETS)}")
    if spec.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"Invalid device: {spec.device} (CUDA is not available here). Valid choices: cpu")
    return Resolved(spec, task, entry)


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


def run(spec: RunSpec, *, on_step: Callable[[int], None] | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None) -> RunRecord:
    """Train as ``spec`` says and return the record; never raises for a failing run.

    Configuration errors (unknown names, bad values) are raised *before* training, as
    :class:`~benchsuite.errors.BenchsuiteError`, so a suite can be validated up front;
    a task whose data breaks the Task contract raises :class:`TaskContractError` when
    its data is built. Every other way a run ends is a :class:`~benchsuite.run.stops.StopRun`,
    turned into the record's status and reason here, in one place.

    Args:
        spec: The run.
        on_step: Called with the step number after each optimizer step (e.g. a progress bar).
        checkpoint_dir: Where checkpoints of this run go when ``spec.checkpoint_every`` is
            set; a checkpoint found there is resumed from (None: no checkpoints).
    """
    resolved = resolve(spec)
    device = torch.device(spec.device)
    record = RunRecord(run_id=spec.run_id, spec=spec, status=Status.FAILED, reason="not started")
    record.provenance = capture(device)
    record.provenance["deterministic"] = spec.deterministic
    record.target = vars(resolved.task.target).copy()
    wall0 = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        with deterministic_mode(spec.deterministic):
            session = _set_up(resolved, device, record, wall0, on_step)
            if checkpoint_dir is not None and spec.checkpoint_every:
                session.checkpoint = checkpoint_path(checkpoint_dir, spec.run_id)
            _train(session)
    except TaskContractError:
        raise  # a broken task is a bug of its code, not an outcome of this run
    except Exception as exc:  # recorded, not raised: one bad run must not stop a suite
        stop = stop_for(exc, record.steps)
        record.status, record.reason = stop.status, stop.reason
        if isinstance(stop, Failed):
            log.warning("run %s failed: %s", spec.label, record.reason)
            log.debug("traceback:\n%s", "".join(traceback.format_exception(exc)))
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


def l2_parameters(model: nn.Module) -> tuple[Tensor, ...]:
    """The tensors an ℓ2 weight cost applies to: the weight and bias of every ``nn.Linear`` of ``model``.

    As in Martens' released code (``nnet_train_2.m``: ``maskp`` is built from all ones,
    the line that would zero the biases' entries is commented out, and the code prints
    "not masking out the weight-decay for biases"), the biases are penalised too. PReLU
    slopes and other non-Linear parameters are left out.
    """
    return tuple(p for m in model.modules() if isinstance(m, nn.Linear)
                 for p in (m.weight, m.bias) if p is not None)


def _module_weight_cost(spec: RunSpec, model: nn.Module, loss_fn: nn.Module, batch: int) -> float:
    """``s·weight_cost``: the spec's weight cost (papers' units) in the loss module's units.

    ``s`` = :func:`benchsuite.curvature.per_example_scale` for ``batch`` examples and the
    model's outputs (the last ``nn.Linear``'s width): mean MSE/BCE ``1/D``, mean CE ``1``,
    sum ``N``. The papers' objective is ``f + (c/2)‖W‖²``; the module returns ``s·f``, so
    the objective the module's units need is ``s·f + (s·c/2)‖W‖²``.
    """
    if spec.weight_cost == 0:
        return 0.0
    from benchsuite.curvature.losses import per_example_scale

    outputs = [m for m in model.modules() if isinstance(m, nn.Linear)][-1].out_features
    return per_example_scale(loss_fn, batch, outputs) * spec.weight_cost


@dataclass
class _Session:
    """One run, set up: what the loop trains, and the record it writes into."""

    spec: RunSpec
    task: Task
    model: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    batches: Batches
    max_steps: int | None
    splits: dict[str, Split]
    probe: Callable[[int], dict[str, float]] | None
    timer: TrainTimer
    record: RunRecord
    deadline: float | None  # perf_counter() value of the wall-clock timeout
    on_step: Callable[[int], None] | None
    weight_cost: float = 0.0  # the loss module's units (s·spec.weight_cost)
    l2_params: tuple[Tensor, ...] = ()
    checkpoint: Path | None = None  # this run's checkpoint file (None: no checkpoints)

    def save(self, step: int, initial: float) -> None:
        """Checkpoint the state after ``step`` (untimed)."""
        rec = self.record
        logs = {"steps": rec.steps, "train_seconds": rec.train_seconds, "step_log": rec.step_log,
                "evals": rec.evals, "stats": rec.stats, "time_to_target": rec.time_to_target}
        save_checkpoint(self.checkpoint, step=step, model=self.model, optimizer=self.optimizer,
                        batches=self.batches, timer_total=self.timer.total, initial=initial, logs=logs)

    def resume(self) -> tuple[int, float] | None:
        """Load the checkpoint, if any, into this session: ``(step, initial loss)``, or None to start afresh."""
        if self.checkpoint is None:
            return None
        state = load_checkpoint(self.checkpoint, model=self.model, optimizer=self.optimizer, batches=self.batches)
        if state is None:
            return None
        rec, logs = self.record, state["logs"]
        rec.steps, rec.train_seconds = int(logs["steps"]), float(logs["train_seconds"])
        rec.step_log, rec.evals, rec.stats = logs["step_log"], logs["evals"], logs["stats"]
        rec.time_to_target = logs["time_to_target"]
        self.timer.total = float(state["timer_total"])
        log.info("run %s resumed from its checkpoint at step %d", self.spec.label, state["step"])
        return int(state["step"]), float(state["initial"])

    def evaluate(self, step: int) -> dict[str, Any]:
        """Evaluate every split (untimed) and append the row to the record."""
        row = {"step": step, "time": self.timer.total, "epoch": step / self.batches.per_epoch,
               **_evaluate(self.model, self.loss_fn, self.task, self.splits)}
        self.record.evals.append(row)
        return row

    def run_probe(self, step: int) -> None:
        if self.probe is not None:
            self.record.stats.append({"step": step, **self.probe(step)})

    def check_budget(self, step: int) -> None:
        """Raise :class:`BudgetSpent` or :class:`TimedOut` before ``step + 1`` if it must not be taken."""
        budget = self.spec.budget
        if self.max_steps is not None and step >= self.max_steps:
            raise BudgetSpent
        if budget.seconds is not None and self.timer.total >= budget.seconds:
            raise BudgetSpent
        if self.deadline is not None and time.perf_counter() > self.deadline:
            raise TimedOut(timeout_of(self.spec), step, default=self.spec.timeout_s is None)

    def train_step(self) -> float:
        """One timed optimizer step on the next batch; logs it and returns its mini-batch loss."""
        x, y = self.batches.next()
        closure = StepClosure(self.model, self.loss_fn, x, y, weight_cost=self.weight_cost, l2_params=self.l2_params)
        with self.timer:
            loss = self.optimizer.step(closure)
        rec = self.record
        rec.steps, rec.train_seconds = rec.steps + 1, self.timer.total
        value = float(loss) if loss is not None else math.nan  # after the timed block: no sync inside
        for column, v in (("step", rec.steps), ("loss", value), ("time", self.timer.total)):
            rec.step_log[column].append(v)
        if self.on_step is not None:
            self.on_step(rec.steps)
        return value

    def reached_target(self, row: dict[str, Any]) -> bool:
        """Record the time to target at the first evaluation that reaches it; whether it is reached."""
        rec, target = self.record, self.task.target
        value = row.get(target.metric)
        if rec.time_to_target is None and value is not None and target.reached(value):
            rec.time_to_target = {"step": row["step"], "seconds": row["time"], "value": value}
        return rec.time_to_target is not None


def _set_up(r: Resolved, device: torch.device, rec: RunRecord, wall0: float,
            on_step: Callable[[int], None] | None) -> _Session:
    """Seed, build the task's data (checked against the Task contract), model, optimizer, timer and probe."""
    spec, task = r.spec, r.task
    dtype = getattr(torch, spec.dtype)
    seed_everything(spec.seed)
    data = task.make_data(spec.data_seed).to(device, dtype)
    seed_everything(spec.seed)  # model init independent of how much randomness data generation used
    model = task.build_model(spec.activation, **spec.activation_options).to(device=device, dtype=dtype)
    check_contract(task, data, model, name=spec.task)
    loss_fn = task.loss_fn()
    optimizer = r.optimizer.build(model, loss_fn, spec.hparams)
    batches = Batches(data.train, r.batch_size, seed=spec.seed)
    probe = _probe(spec, model, loss_fn, data.train)
    if device.type == "cuda":  # CPU has no lazy library start-up worth excluding
        k = min(r.batch_size, len(data.train))
        warm_up(r.optimizer, spec.hparams, model, loss_fn, data.train.inputs[:k], data.train.targets[:k])
        torch.cuda.reset_peak_memory_stats(device)  # the twin's memory is not the run's
    splits = {"train": _head(data.train, spec.eval_train_examples), "valid": data.valid, "test": data.test}
    deadline = wall0 + timeout_of(spec)
    cost = _module_weight_cost(spec, model, loss_fn, batches.batch_size)
    return _Session(spec, task, model, loss_fn, optimizer, batches, spec.budget.max_steps(batches.per_epoch),
                    splits, probe, TrainTimer(device), rec, deadline, on_step,
                    weight_cost=cost, l2_params=l2_parameters(model) if cost else ())


def _head(split: Split, n: int | None) -> Split:
    """The first ``n`` examples of ``split`` (all of them for None or n ≥ its size)."""
    if n is None or n >= len(split):
        return split
    return Split(split.inputs[:n], split.targets[:n])


def _probe(spec: RunSpec, model: nn.Module, loss_fn: nn.Module,
           train: Split) -> Callable[[int], dict[str, float]] | None:
    """The curvature probe of ``spec.statistics`` on the first training examples (None for ``none``)."""
    if spec.statistics == "none":
        return None
    from benchsuite.probes import CurvatureProbe

    k = min(PROBE_BATCH, len(train))
    return CurvatureProbe(spec.statistics, model, loss_fn, (train.inputs[:k], train.targets[:k]), seed=spec.seed)


def _train(s: _Session) -> NoReturn:
    """Run the loop; on budget or target, evaluate and probe the final step; always ends in a StopRun."""
    try:
        _loop(s)
    except (BudgetSpent, TargetReached):
        _finish(s, s.record.steps)
        raise


def _loop(s: _Session) -> NoReturn:
    """Train until the budget, the target (if ``stop_at_target``), divergence or the timeout stops the run."""
    resumed = s.resume()
    if resumed is None:
        first = s.evaluate(0)
        s.run_probe(0)
        step, initial = 0, first["train_loss"]
    else:
        step, initial = resumed
    if not math.isfinite(initial):
        raise Diverged(f"non-finite initial loss ({initial})", 0)
    blowup = s.spec.divergence_factor * max(abs(initial), 1e-8)
    spec = s.spec
    while True:
        s.check_budget(step)
        value = s.train_step()
        step += 1
        if not math.isfinite(value):
            raise Diverged(f"non-finite loss ({value})", step)
        if value > blowup:
            raise Diverged(f"loss blow-up ({value:.4g} > {spec.divergence_factor:g} x initial {initial:.4g})", step)
        _check_parameters(s.model, step)
        if step % spec.eval_every == 0:
            row = s.evaluate(step)
            _check_eval_loss(row, step)
            if s.reached_target(row) and spec.stop_at_target:
                raise TargetReached
        if spec.stats_every and step % spec.stats_every == 0:
            s.run_probe(step)
        if s.checkpoint is not None and step % spec.checkpoint_every == 0:
            s.save(step, initial)


def _finish(s: _Session, step: int) -> None:
    """The final evaluation and probe at ``step``, unless the cadence already made them.

    Raises:
        Diverged: the final evaluation has a non-finite loss or metric on any split,
            so a run never completes with NaN or Inf in its final row.
    """
    if not s.record.evals or s.record.evals[-1]["step"] != step:
        row = s.evaluate(step)
        s.reached_target(row)
    _check_eval_loss(s.record.evals[-1], step)
    if s.probe is not None and (not s.record.stats or s.record.stats[-1]["step"] != step):
        s.run_probe(step)


def _check_eval_loss(row: dict[str, Any], step: int) -> None:
    """Raise :class:`Diverged` naming the first non-finite loss or metric of an evaluation row."""
    for column, value in row.items():
        if column.startswith(_SPLIT_PREFIXES) and isinstance(value, float) and not math.isfinite(value):
            raise Diverged(f"non-finite evaluation {column} ({value})", step)


_SPLIT_PREFIXES = ("train_", "valid_", "test_")


@torch.no_grad()
def _check_parameters(model: nn.Module, step: int) -> None:
    """Raise :class:`Diverged` naming the first parameter with a NaN or Inf entry after ``step``.

    Runs after the timed step, with the loss check: ``isfinite().all()`` per parameter,
    reduced on the device and stacked (no copy of the parameters), then a single host
    synchronisation (the per-parameter search for the name runs only when it fails). A step
    that writes NaN into the weights while returning the finite loss of the batch it took
    is caught at that step.
    """
    params = list(model.parameters())
    if not params or bool(torch.stack([p.isfinite().all() for p in params]).all()):
        return
    name = next(n for n, p in model.named_parameters() if not bool(p.isfinite().all()))
    raise Diverged(f"non-finite parameters ({name})", step)
