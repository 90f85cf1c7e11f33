"""Suites: TOML files expanded into RunSpecs, with command-line narrowing and overrides.

A suite file is a grid::

    description = "CPU smoke suite"
    tasks = "all"                       # or a list of task names
    activations = ["relu", "leaky_relu", "tanh"]
    optimizers = ["sgd", "adam", { name = "sgd", label = "sgd-nesterov", hparams = { nesterov = true } },
                  { name = "hf", label = "hf-full", batch_size = "full" }]   # a column's own batch size
    seeds = [0, 1]
    data_seed = 0                       # seeds the data sets (default 0, the same for every seed)
    size = "tiny"
    eval_every = 25
    statistics = "none"                 # curvature probes: none | cheap | full
    stats_every = 0
    batch_size = 128                    # examples per step (default: the task's); "full" = the whole training split
    weight_cost = 0.0                   # l2 cost on the Linear weights, papers' units (Martens 2010: 2e-5)
    [budget]                            # steps, epochs and/or seconds
    steps = 150
    [hparams.sgd]                       # per-optimizer hyperparameters
    lr = 0.05
    [task_options.digits_mlp]           # per-task option overrides
    width = 64
    init = "sparse"                     # any task: Martens' sparse initialisation (sparse_connections = 15)
    [task_activations]                  # per-task subset of the activations (default: all of them)
    linear_regression = ["relu"]        # e.g. a model without hidden units needs only one
    [tuning]                            # optional: tune these columns first (benchsuite.run.tuning)
    optimizers = ["sgd", "adam"]
    trials = 16
    [tuning.space.sgd]                  # optional: override a registry search space
    lr = { log = [1e-3, 1.0] }
    [at_size.tiny]                      # optional: values that apply when the size is "tiny"
    budget = { steps = 60 }             # (tables merge key by key; other values replace)
    tuning = { trials = 4 }

Built-in suites ship inside the package (``benchsuite/suites/*.toml``); any path to
a ``.toml`` file works too. Every value is validated when the suite is expanded,
before anything runs.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from benchsuite.config.spec import FULL_BATCH, MAX_SEED, Budget, RunSpec
from benchsuite.contracts.activation import ACTIVATIONS
from benchsuite.contracts.optimizer import OPTIMIZERS
from benchsuite.contracts.task import TASKS
from benchsuite.errors import ConfigError, UnknownNameError
from benchsuite.run.ray_executor import check_gpus_per_run
from benchsuite.run.runner import resolve
from benchsuite.run.tuning import TuningConfig, select, tuned_specs

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["OptimizerChoice", "Suite", "builtin_suites", "load_suite"]

_KEYS = {"threads", "description", "tasks", "activations", "optimizers", "seeds", "size", "eval_every", "statistics",
         "stats_every", "budget", "hparams", "task_options", "task_activations", "activation_options", "batch_size", "device",
         "dtype", "stop_at_target", "eval_train_examples", "timeout_s", "divergence_factor", "tuning",
         "at_size", "data_seed", "weight_cost", "workers", "checkpoint_every", "gpus_per_run",
         "deterministic"}


@dataclass(frozen=True)
class OptimizerChoice:
    """One optimizer column of a suite: a registry name, a display label, hyperparameters and
    optionally its own batch size (None: the suite's), e.g. HF full-batch beside mini-batch baselines."""

    name: str
    label: str
    hparams: Mapping[str, Any] = field(default_factory=dict)
    batch_size: int | str | None = None


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    tasks: tuple[str, ...]
    activations: tuple[str, ...]
    optimizers: tuple[OptimizerChoice, ...]
    seeds: tuple[int, ...]
    base: RunSpec  # carries every other field (size, budget, eval cadence, device, ...)
    task_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    task_activations: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    threads: int | None = None  # torch CPU threads for the whole suite (not part of run ids)
    workers: int | str = 1  # runs at once on this machine, or "auto" (not part of run ids)
    gpus_per_run: float | None = None  # GPUs each run reserves with the ray executor (None: 1; not part of run ids)
    shard: tuple[int, int] | None = None  # (i, n): only the task x activation cells k with k % n == i
    tuning: TuningConfig | None = None

    def narrow(self, *, tasks: Sequence[str] | None = None, activations: Sequence[str] | None = None,
               optimizers: Sequence[str] | None = None, seeds: Sequence[int] | None = None,
               shard: tuple[int, int] | None = None, **overrides: Any) -> Suite:
        """A copy restricted to the given names (each must be registered) with spec fields overridden.

        ``optimizers`` matches either registry names or labels of the suite's choices;
        a registered optimizer not in the suite is added with its default hyperparameters.
        """
        new = self
        if shard is not None:
            i, n = shard
            if not (isinstance(i, int) and isinstance(n, int) and 0 <= i < n):
                raise ConfigError(f"Invalid shard: {i}/{n} (need i/N with 0 <= i < N)")
            new = replace(new, shard=(i, n))
        if tasks:
            new = replace(new, tasks=tuple(_known(TASKS, tasks)))
        if activations:
            new = replace(new, activations=tuple(_known(ACTIVATIONS, activations)))
        if optimizers:
            chosen: list[OptimizerChoice] = []
            for name in optimizers:
                hits = [c for c in self.optimizers if name in (c.name, c.label)]
                if not hits:
                    OPTIMIZERS.get(name)  # raises with the valid choices
                    hits = [OptimizerChoice(name, name)]
                chosen += [h for h in hits if h not in chosen]
            new = replace(new, optimizers=tuple(chosen))
        if seeds:
            new = replace(new, seeds=tuple(int(s) for s in seeds))
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if overrides:
            new = replace(new, base=replace(new.base, **overrides))
        if "budget" in overrides and new.tuning is not None:  # a budget given now replaces the trials' too
            new = replace(new, tuning=replace(new.tuning, budget=None))
        return new

    def cells(self) -> list[tuple[str, str]]:
        """The (task, activation) cells of the grid, in order, restricted to this suite's shard.

        Shards deal the cells out in turn (cell ``k`` goes to shard ``k mod N``), so each
        cell, and with it its tuning group, is in exactly one shard, and the N shards
        together are the whole suite.
        """
        cells = [(task, act) for task in self.tasks for act in self.activations_for(task)]
        if self.shard is None:
            return cells
        i, n = self.shard
        return [c for k, c in enumerate(cells) if k % n == i]

    def specs(self) -> list[RunSpec]:
        """Every RunSpec of the grid (of this shard), validated (unknown names and bad values raise here)."""
        out = []
        for task, act in self.cells():
            for choice in self.optimizers:
                hparams = {**self.base.hparams, **choice.hparams}
                for seed in self.seeds:
                    spec = replace(self.base, task=task, activation=act, optimizer=choice.name, seed=seed,
                                   hparams=hparams, task_options=dict(self.task_options.get(task, {})),
                                   optimizer_label=None if choice.label == choice.name else choice.label)
                    if choice.batch_size is not None:
                        spec = replace(spec, batch_size=choice.batch_size)
                    out.append(spec)
        for spec in _distinct_configs(out):
            resolve(spec)
        return out

    def trial_specs(self) -> list[RunSpec]:
        """The tuning trials of the tuned columns (empty without ``[tuning]``), validated."""
        if self.tuning is None:
            return []
        trials = self.tuning.trial_specs(self.specs())
        for spec in _distinct_configs(trials):
            resolve(spec)
        return trials

    def final_specs(self, records: Iterable[Any] = ()) -> list[RunSpec]:
        """The comparison runs, with each tuned column's winning hyperparameters from ``records``."""
        finals = self.specs()
        if self.tuning is None:
            return finals
        selections = select(records, self.tuning.metric, expected=self.trial_specs())
        return tuned_specs(finals, selections, self.tuning)

    def activations_for(self, task: str) -> list[str]:
        """The suite's activations that ``task`` runs with (``[task_activations]`` may restrict them)."""
        wanted = self.task_activations.get(task, self.activations)
        return [a for a in self.activations if a in wanted]

    def __len__(self) -> int:
        return len(self.cells()) * len(self.optimizers) * len(self.seeds)


def _distinct_configs(specs: Iterable[RunSpec]) -> list[RunSpec]:
    seen, out = set(), []
    for s in specs:
        key = (s.task, s.activation, s.optimizer, s.optimizer_label)
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


def _known(registry: Any, names: Iterable[str]) -> list[str]:
    names = list(names)
    if names in (["all"], ["*"]):
        return registry.names()
    for n in names:
        registry.get(n)
    return names


def builtin_suites() -> dict[str, str]:
    """Built-in suite names mapped to their description."""
    out = {}
    for res in sorted(resources.files("benchsuite.suites").iterdir(), key=lambda r: r.name):
        if res.name.endswith(".toml"):
            data = tomllib.loads(res.read_text(encoding="utf-8"))
            out[res.name[:-5]] = str(data.get("description", ""))
    return out


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def load_suite(name_or_path: str, size: str | None = None) -> Suite:
    """A built-in suite by name, or a suite file by path, at ``size`` (None: the suite's own).

    The suite's ``[at_size.<size>]`` table, if any, is merged over the rest first, so
    one suite file can say how its budget shrinks for ``tiny`` CPU runs.
    """
    path = Path(name_or_path)
    if name_or_path.endswith(".toml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"Suite file not found: {path}")
        text, name = path.read_text(encoding="utf-8"), path.stem
        if not _SAFE_NAME.fullmatch(name):  # the name is the default results directory, results/<name>
            raise ConfigError(f"Invalid suite file name {path.name!r}: its stem names the default results "
                              f"directory, so it must start with a letter or digit and use only letters, digits, "
                              f"'_', '-' and '.'; rename the file")
    else:
        known = builtin_suites()
        if name_or_path not in known:
            raise UnknownNameError("suite", name_or_path, known)
        text = resources.files("benchsuite.suites").joinpath(f"{name_or_path}.toml").read_text(encoding="utf-8")
        name = name_or_path
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Suite '{name}' is not valid TOML: {exc}") from None
    return parse_suite(name, data, size)


def at_size(name: str, data: Mapping[str, Any], size: str | None) -> dict[str, Any]:
    """``data`` with ``size`` set and its ``[at_size.<size>]`` table merged in (recursively for tables)."""
    data = dict(data)
    per_size = data.pop("at_size", {})
    if not isinstance(per_size, Mapping) or not all(isinstance(v, Mapping) for v in per_size.values()):
        raise ConfigError(f"Invalid at_size in suite '{name}': {per_size!r} (need a table per size)")
    size = size if size is not None else data.get("size", "default")
    if not isinstance(size, str) or not size:
        raise ConfigError(f"Invalid size in suite '{name}': {size!r} (need a size name such as tiny or default)")
    data["size"] = size
    return _merge(data, per_size.get(size, {}))


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_suite(name: str, data: Mapping[str, Any], size: str | None = None) -> Suite:
    """A validated :class:`Suite` from a suite file's table, at ``size`` (None: its own).

    Raises:
        ConfigError: an unknown key or a value of the wrong type or range, naming the suite.
        UnknownNameError: an unknown task, activation or optimizer (listing the valid ones).
    """
    data = at_size(name, data, size)
    _check_types(name, data)
    choices = _optimizer_choices(name, data)
    task_activations = _task_activations(name, data)
    tuning = _tuning(name, data, choices)
    seeds = _seeds(name, data)
    spec_fields = {k: data[k] for k in _SPEC_FIELDS if k in data}
    base = RunSpec(task="?", activation="?", optimizer="?", budget=Budget.from_dict(data.get("budget", {"steps": 100})),
                   activation_options=dict(data.get("activation_options", {})), **spec_fields)
    return Suite(name=name, description=str(data.get("description", "")), tasks=_names(name, data, "tasks", TASKS),
                 activations=_names(name, data, "activations", ACTIVATIONS), optimizers=tuple(choices), seeds=seeds,
                 base=base, task_options=dict(data.get("task_options", {})), threads=data.get("threads"),
                 workers=_workers(name, data.get("workers", 1)),
                 gpus_per_run=check_gpus_per_run(data.get("gpus_per_run"), f"gpus_per_run in suite '{name}'"),
                 task_activations=task_activations, tuning=tuning)


_SPEC_FIELDS = ("size", "eval_every", "statistics", "stats_every", "batch_size", "device", "dtype", "stop_at_target",
                "eval_train_examples", "timeout_s", "divergence_factor", "data_seed", "weight_cost",
                "checkpoint_every", "deterministic")


def _check_types(name: str, data: Mapping[str, Any]) -> None:
    """Unknown keys and values of the wrong type are errors naming the suite and the key."""
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ConfigError(f"Unknown key(s) {unknown} in suite '{name}'. Valid: {', '.join(sorted(_KEYS))}")

    def need(key: str, types: tuple[type, ...], what: str) -> None:
        if key in data and not isinstance(data[key], types):
            raise ConfigError(f"Invalid {key} in suite '{name}': {data[key]!r} (need {what})")

    for key in ("tasks", "activations"):
        need(key, (str, list), "a name, a list of names or \"all\"")
    for key in ("budget", "hparams", "task_options", "task_activations", "activation_options"):
        need(key, (Mapping,), "a table")
    for key in ("hparams", "task_options"):
        for sub, value in data.get(key, {}).items():
            if not isinstance(value, Mapping):
                raise ConfigError(f"Invalid {key}.{sub} in suite '{name}': {value!r} (need a table)")
    for key in ("size", "device", "dtype", "statistics", "description"):
        need(key, (str,), "a string")
    for key in ("eval_every", "stats_every", "threads", "data_seed"):
        need(key, (int,), "an integer")
        if isinstance(data.get(key), bool):
            raise ConfigError(f"Invalid {key} in suite '{name}': {data[key]!r} (need an integer)")
    if "threads" in data and data["threads"] < 1:
        raise ConfigError(f"Invalid threads in suite '{name}': {data['threads']} (need a positive integer)")


def _names(name: str, data: Mapping[str, Any], key: str, registry: Any) -> tuple[str, ...]:
    value = data.get(key, "all")
    if isinstance(value, str):
        value = [value]
    if not all(isinstance(v, str) for v in value):
        raise ConfigError(f"Invalid {key} in suite '{name}': {value!r} (need names)")
    if not value:
        raise ConfigError(f"Invalid {key} in suite '{name}': [] (need at least one name, or \"all\")")
    return tuple(_known(registry, value))


_COLUMN_FIELDS = ("batch_size", "hparams", "label", "name")


def _optimizer_choices(name: str, data: Mapping[str, Any]) -> list[OptimizerChoice]:
    """The optimizer columns: names, ``"all"``, or tables with ``name``, ``label``, ``hparams`` and ``batch_size``."""
    items = data.get("optimizers", "all")
    items = [items] if isinstance(items, (str, Mapping)) else items
    if not isinstance(items, list):
        raise ConfigError(f"Invalid optimizers in suite '{name}': {items!r}")
    hparams = data.get("hparams", {})
    choices = []
    for item in items:
        if isinstance(item, str) and item in ("all", "*"):
            choices += [OptimizerChoice(n, n) for n in OPTIMIZERS.names()]
        elif isinstance(item, str):
            OPTIMIZERS.get(item)
            choices.append(OptimizerChoice(item, item, dict(hparams.get(item, {}))))
        elif isinstance(item, Mapping) and "name" in item:
            extra = sorted(set(item) - set(_COLUMN_FIELDS))
            if extra:
                raise ConfigError(f"Unknown optimizer field(s) {extra} in suite '{name}'. "
                                  f"Valid: {', '.join(_COLUMN_FIELDS)}")
            if not isinstance(item["name"], str):
                raise ConfigError(f"Invalid optimizer name in suite '{name}': {item['name']!r} (need a registry name)")
            OPTIMIZERS.get(item["name"])
            label = item.get("label", item["name"])
            if not isinstance(label, str) or not label.strip():
                raise ConfigError(f"Invalid label of optimizer column '{item['name']}' in suite '{name}': "
                                  f"{label!r} (need a non-empty string)")
            if not isinstance(item.get("hparams", {}), Mapping):
                raise ConfigError(f"Invalid hparams of optimizer column '{label}' in suite '{name}': "
                                  f"{item['hparams']!r} (need a table)")
            hp = {**hparams.get(item["name"], {}), **item.get("hparams", {})}
            batch = item.get("batch_size")
            if batch is not None:
                _check_column_batch_size(name, label, batch)
            choices.append(OptimizerChoice(item["name"], label, hp, batch))
        else:
            raise ConfigError(f"Invalid optimizer entry in suite '{name}': {item!r} (need a registry name or a "
                              f"table with name, and optionally label, hparams, batch_size)")
    if not choices:
        raise ConfigError(f"Invalid optimizers in suite '{name}': no optimizer column (need at least one)")
    labels = [c.label for c in choices]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ConfigError(f"Duplicate optimizer label(s) {dupes} in suite '{name}': give each column its own label")
    stray = sorted(set(hparams) - {c.name for c in choices})
    if stray:
        raise ConfigError(f"[hparams.{stray[0]}] in suite '{name}' names no optimizer of the suite. "
                          f"Valid: {', '.join(sorted({c.name for c in choices}))}")
    return choices


def _check_column_batch_size(name: str, label: str, batch: Any) -> None:
    """A column's ``batch_size`` must be a positive integer or ``"full"`` (the error names suite and column)."""
    if not (batch == FULL_BATCH or (isinstance(batch, int) and not isinstance(batch, bool) and batch >= 1)):
        raise ConfigError(f"Invalid batch_size of optimizer column '{label}' in suite '{name}': {batch!r} "
                          f"(need a positive integer or \"{FULL_BATCH}\")")


def _task_activations(name: str, data: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for task, acts in data.get("task_activations", {}).items():
        TASKS.get(task)
        if not (isinstance(acts, list) and acts and all(isinstance(a, str) for a in acts)):
            raise ConfigError(f"Invalid task_activations.{task} in suite '{name}': {acts!r} (need a list of names)")
        out[task] = tuple(_known(ACTIVATIONS, acts))
    return out


def _tuning(name: str, data: Mapping[str, Any], choices: Sequence[OptimizerChoice]) -> TuningConfig | None:
    """The ``[tuning]`` table, checked against the suite's optimizer columns (None if absent)."""
    if "tuning" not in data:
        return None
    tuning = TuningConfig.from_dict(data["tuning"])
    labels = {c.label for c in choices} | {c.name for c in choices}
    unknown = sorted(set(tuning.optimizers) - labels)
    if unknown:
        raise ConfigError(f"[tuning] of suite '{name}' names optimizer column(s) {unknown} that the suite "
                          f"does not run. Valid: {', '.join(sorted(labels))}")
    for c in choices:
        if tuning.tunes(c.label, c.name):
            tuning.space(c.label, c.name)  # raises for a missing or bad space
    return tuning


def _workers(name: str, value: Any) -> int | str:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ConfigError(f"Invalid workers in suite '{name}': {value!r} (need a positive integer or \"auto\")")


def _seeds(name: str, data: Mapping[str, Any]) -> tuple[int, ...]:
    seeds = data.get("seeds", [0])
    ok = isinstance(seeds, list) and all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < MAX_SEED
                                         for s in seeds)
    if not ok or not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"Invalid seeds in suite '{name}': {seeds!r} (need a non-empty list of distinct "
                          f"integers in [0, 2**63))")
    return tuple(seeds)
