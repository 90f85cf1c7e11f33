"""Where a surface's weights come from: initialisation, a checkpoint file, or a finished run.

Every source builds the network exactly as the runner builds it for a
:class:`~benchsuite.config.spec.RunSpec` (names validated by
:func:`benchsuite.run.runner.resolve`; the global RNGs seeded with the spec's seed
before the data and again before the model, :meth:`Task.build_model`), so ``init``
with seed ``s`` is the initial network of every run with seed ``s``:

* ``init``: those initial weights.
* ``checkpoint PATH``: a file :mod:`benchsuite.run.checkpoint` wrote (its ``model``
  entry) or a bare ``state_dict``, read with ``torch.load(weights_only=True)``, so the
  file cannot run code, into the network of ``--task``/``--activation``/``--size``.
* ``run RUN_ID``: a finished run's final weights. Records do not store parameters,
  so the record's spec is *replayed* on the CPU through :func:`benchsuite.run.runner.run`
  itself, with the budget fixed to the record's step count, ``stop_at_target`` off,
  curvature probes off (they use their own random stream and never touch the
  weights) and a checkpoint written at that last step, which is then read back like
  ``checkpoint PATH``. The replay's final training loss is compared with the
  record's: equal on the CPU (training is deterministic there); a run made on a GPU
  replays with CPU numerics, and the note in ``check.json`` says how far apart the two are.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from benchsuite.config.spec import Budget, RunSpec
from benchsuite.contracts.task import Split, Task, check_contract
from benchsuite.errors import ConfigError
from benchsuite.records.record import Status
from benchsuite.records.store import ResultStore

__all__ = ["SOURCES", "Loaded", "Source", "build_initial", "load"]
log = logging.getLogger(__name__)

SOURCES = ("init", "checkpoint", "run")
"""The kinds of ``--from``: ``init``, ``checkpoint PATH``, ``run RUN_ID``."""

REPLAY_RTOL = 1e-5
"""Relative difference of the replayed and the recorded final training loss above which a run's replay is flagged."""


@dataclass(frozen=True)
class Source:
    """A ``--from`` argument, parsed.

    Attributes:
        kind: One of :data:`SOURCES`.
        path: The checkpoint file (kind ``checkpoint``).
        run_id: The run (kind ``run``); its record is read from ``results``.
        results: The results directory holding the run's record (kind ``run``).
    """

    kind: str = "init"
    path: Path | None = None
    run_id: str | None = None
    results: Path | None = None

    def __post_init__(self) -> None:
        if self.kind not in SOURCES:
            raise ConfigError(f"Unknown source '{self.kind}'. Valid choices: init, checkpoint PATH, run RUN_ID")
        if self.kind == "checkpoint" and self.path is None:
            raise ConfigError("Source 'checkpoint' needs a path: --from checkpoint PATH")
        if self.kind == "run" and (not self.run_id or self.results is None):
            raise ConfigError("Source 'run' needs a run id and a results directory: --from run RUN_ID --results DIR")

    @classmethod
    def parse(cls, words: list[str], results: Path | None = None) -> Source:
        """``["init"]``, ``["checkpoint", PATH]`` or ``["run", RUN_ID]`` (with ``results``) as a Source."""
        kind, rest = (words[0], words[1:]) if words else ("init", [])
        arity = {"init": 0, "checkpoint": 1, "run": 1}
        if kind not in arity:
            raise ConfigError(f"Unknown source '{kind}'. Valid choices: init, checkpoint PATH, run RUN_ID")
        if len(rest) != arity[kind]:
            usage = {"init": "--from init", "checkpoint": "--from checkpoint PATH", "run": "--from run RUN_ID"}[kind]
            raise ConfigError(f"Invalid --from {' '.join(words)}: expected {usage}")
        if kind == "checkpoint":
            return cls(kind, path=Path(rest[0]))
        if kind == "run":
            return cls(kind, run_id=rest[0], results=results)
        return cls()


@dataclass
class Loaded:
    """A network with the weights of a source, and what it was built from.

    Attributes:
        spec: The spec that built the network (for ``run``: the record's own spec).
        task: The task instance.
        model: The network, float64, on the CPU, in eval mode.
        train: The task's full training split, float64.
        label: Short name of the source for directory names (``init-tiny-seed0``, ``run-<id>``, ...).
        note: One sentence on where the weights come from (replays: how well the replay matched).
        details: Machine-readable facts of the source (paths, run ids, losses).
    """

    spec: RunSpec
    task: Task
    model: nn.Sequential
    train: Split
    label: str
    note: str
    details: dict[str, Any]


def build_initial(spec: RunSpec) -> tuple[Task, nn.Sequential, Split]:
    """The task, the initial network and the training split of ``spec``, as the runner builds them.

    The runner's sequence (:func:`benchsuite.run.runner.run`, its set-up): validate the
    names, seed every RNG with ``spec.seed``, build the data of ``spec.data_seed``, seed
    again, build the model in ``spec.dtype`` and check the Task contract.

    Raises:
        UnknownNameError: unknown task, activation or optimizer (lists the valid ones).
        ConfigError: bad size or options.
    """
    from benchsuite.run.runner import resolve
    from benchsuite.run.seeding import seed_everything

    task = resolve(spec).task
    dtype = getattr(torch, spec.dtype)
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNGs as they were
        seed_everything(spec.seed)
        data = task.make_data(spec.data_seed).to("cpu", dtype)
        seed_everything(spec.seed)  # model init independent of how much randomness data generation used
        model = task.build_model(spec.activation, **spec.activation_options).to(dtype=dtype)
    check_contract(task, data, model, name=spec.task)
    return task, model, data.train


def _state_dict(path: Path) -> dict[str, Tensor]:
    """The model ``state_dict`` in ``path``: a checkpoint's ``model`` entry or a bare state_dict."""
    if not path.is_file():
        raise ConfigError(f"Checkpoint not found: {path} (give a file written by a run with checkpoint_every, "
                          "or a saved model state_dict)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one user-facing error
        raise ConfigError(f"Unreadable checkpoint {path}: {type(exc).__name__}: {exc}") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(f"Checkpoint {path} holds no model state_dict (need a benchsuite checkpoint with a "
                          "'model' entry, or a state_dict of tensors)")
    return state


def _load_into(model: nn.Module, state: dict[str, Tensor], where: str, spec: RunSpec) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise ConfigError(f"{where} does not fit task '{spec.task}' x activation '{spec.activation}' at size "
                          f"'{spec.size}': {detail}") from None


def _finish(spec: RunSpec, task: Task, model: nn.Sequential, train: Split, label: str, note: str,
            details: dict[str, Any]) -> Loaded:
    model = model.to(dtype=torch.float64).eval()
    return Loaded(spec, task, model, train.to("cpu", torch.float64), label, note, details)


def load(source: Source, spec: RunSpec | None = None, expect: Mapping[str, Any] | None = None) -> Loaded:
    """The network of ``spec`` with the weights ``source`` names.

    Args:
        source: Where the weights come from.
        spec: The run the network belongs to (kinds ``init`` and ``checkpoint``; any
            optimizer name, it only has to be valid). Kind ``run`` uses the record's spec.
        expect: Kind ``run``: values the record's spec must have (``task``, ``activation``,
            ``size``; None values are not checked), e.g. the CLI's ``--task``.

    Raises:
        BenchsuiteError: unknown names, a missing or unreadable file, a record that is not
            finished or diverged, weights that do not fit the network; one line each.
    """
    if source.kind == "run":
        return _from_run(source, expect or {})
    if spec is None:
        raise ConfigError(f"Source '{source.kind}' needs --task and --activation")
    task, model, train = build_initial(spec)
    if source.kind == "init":
        label = f"init-{spec.size}-seed{spec.seed}"
        note = (f"initial weights of seed {spec.seed} (task options {dict(spec.task_options) or 'default'}), "
                "built as the runner builds them")
        return _finish(spec, task, model, train, label, note, {"kind": "init", "seed": spec.seed})
    assert source.path is not None
    _load_into(model, _state_dict(source.path), f"Checkpoint {source.path}", spec)
    note = f"weights of checkpoint {source.path}"
    return _finish(spec, task, model, train, f"checkpoint-{source.path.stem}", note,
                   {"kind": "checkpoint", "path": str(source.path)})


def _from_run(source: Source, expect: Mapping[str, Any]) -> Loaded:
    """Replay a finished run's spec on the CPU and take its final weights (see the module docstring)."""
    assert source.results is not None and source.run_id is not None
    record = ResultStore(source.results, create=False).load(source.run_id)
    spec = record.spec
    for name, value in expect.items():
        if value is not None and value != getattr(spec, name):
            raise ConfigError(f"Run {source.run_id} has {name} '{getattr(spec, name)}', not '{value}' "
                              f"(leave --{name} out to use the run's)")
    if record.status not in (Status.COMPLETED, Status.TIMEOUT):
        raise ConfigError(f"Run {source.run_id} ended '{record.status}' ({record.reason}): its final weights are "
                          "not a trained network. Valid choices: a completed or timed-out run")
    task, model, train = build_initial(spec)
    label = f"run-{source.run_id}"
    details: dict[str, Any] = {"kind": "run", "run_id": source.run_id, "results": str(source.results),
                               "steps": record.steps, "label": spec.label}
    if record.steps == 0:
        return _finish(spec, task, model, train, label, "the run took no step: its initial weights", details)
    replay = dataclasses.replace(spec, device="cpu", budget=Budget(steps=record.steps), stop_at_target=False,
                                 statistics="none", stats_every=0, timeout_s=None, checkpoint_every=record.steps)
    log.info("replaying run %s (%s, %d steps) on the CPU for its final weights", source.run_id, spec.label,
             record.steps)
    from benchsuite.run.checkpoint import checkpoint_path
    from benchsuite.run.runner import run

    with tempfile.TemporaryDirectory(prefix="benchsuite-surface-") as tmp:
        replayed = run(replay, checkpoint_dir=tmp)
        ckpt = checkpoint_path(tmp, replay.run_id)
        if replayed.steps != record.steps or not ckpt.is_file():
            raise ConfigError(f"Replay of run {source.run_id} stopped at step {replayed.steps} of {record.steps} "
                              f"({replayed.status}: {replayed.reason}); its final weights cannot be reproduced")
        _load_into(model, _state_dict(ckpt), f"The replay of run {source.run_id}", spec)
    recorded = record.evals[-1].get("train_loss") if record.evals else None
    again = replayed.evals[-1].get("train_loss") if replayed.evals else None
    details.update(recorded_train_loss=recorded, replayed_train_loss=again)
    note = f"final weights of run {source.run_id} ({spec.label}, {record.steps} steps), replayed on the CPU"
    if recorded is not None and again is not None and math.isfinite(recorded):
        gap = abs(again - recorded) / max(abs(recorded), 1e-12)
        details["replay_relative_gap"] = gap
        if gap <= REPLAY_RTOL:
            note += f": final training loss {again:.6g} equals the record's"
        else:
            note += (f": final training loss {again:.6g} vs the record's {recorded:.6g} (relative gap {gap:.2g}; "
                     f"the run was made on {spec.device})")
            log.warning("replay of run %s differs from its record: train_loss %.6g vs %.6g", source.run_id,
                        again, recorded)
    return _finish(spec, task, model, train, label, note, details)
