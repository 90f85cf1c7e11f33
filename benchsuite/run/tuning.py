"""The tuning protocol: quasi-random trials, selection on a suite-chosen metric, final runs with N seeds.

A suite's ``[tuning]`` table names the optimizer columns to tune. For each task ×
activation × tuned column:

1. **Trials.** ``trials`` settings are drawn from the optimizer's search space (its
   registry entry, or a suite override) with a scrambled Halton sequence seeded by
   ``seed`` (:func:`benchsuite.contracts.search_space.sample_trials`); every trial runs with
   each of ``trial_seeds`` under the tuning budget. Trials are ordinary RunSpecs
   with ``trial = k``, so they are stored as records, skipped when finished, and an
   interrupted tuning resumes where it stopped.
2. **Selection.** A trial's score is the suite's ``metric`` (a training or validation
   evaluation column, e.g. ``train_loss``, ``valid_loss``, ``train_error``) at its
   final evaluation, averaged over its seeds; a trial with a
   diverged, failed, timed-out or non-finite seed scores ``+inf``. The lowest score
   wins (ties: the lower trial index).
3. **Final runs.** The winner's hyperparameters run with the suite's seeds and
   budget, as the column's ordinary (non-trial) runs.

Columns not named in ``[tuning]`` run with their suite hyperparameters (e.g. the
published settings of a second-order method). The report says how each column was
tuned, lists each winner and the spread of the trial scores (how sensitive the
optimizer was to its hyperparameters), and marks every comparison of a tuned column
with an untuned one (:mod:`benchsuite.report.tuned`). This follows the "fixed trial
budget, quasi-random search" protocol of AlgoPerf (Dahl et al. 2023) and DeepOBS
(Schneider et al. 2019); AlgoPerf selects on validation, an optimization benchmark
may select on training loss at the comparison's own budget (the quantity its
verdicts compare). Test columns are never a selection metric.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from benchsuite.config.spec import Budget, RunSpec
from benchsuite.contracts.optimizer import OPTIMIZERS
from benchsuite.contracts.search_space import SearchSpace, parse_space, sample_trials
from benchsuite.errors import ConfigError
from benchsuite.records.record import RunRecord, Status

__all__ = ["METRIC_SPLITS", "Selection", "TuningConfig", "metric_choices", "select", "trial_table", "tuning_summary"]
log = logging.getLogger(__name__)

MAX_TRIALS = 10_000  # per cell and column; far above any published protocol (AlgoPerf: 100 or fewer)
GroupKey = tuple[str, str, str, str]  # (task, size, activation, optimizer label)
METRIC_SPLITS = ("train", "valid")  # splits a tuning metric may come from (never test)
_KEYS = {"optimizers", "trials", "seed", "trial_seeds", "metric", "budget", "space"}


@dataclass(frozen=True)
class TuningConfig:
    """The ``[tuning]`` table of a suite.

    Attributes:
        optimizers: Labels (or registry names) of the suite's optimizer columns to tune.
        trials: Trials per task × activation × column (the fixed budget).
        seed: Seeds the quasi-random sequence (same seed, same trials).
        trial_seeds: Training seeds each trial runs with (scores are averaged).
        metric: Evaluation column to minimise at the final evaluation: ``train_*`` or
            ``valid_*`` (e.g. ``train_loss``, ``valid_loss``, ``train_error``).
        budget: Budget of a trial (None: the suite's budget, i.e. each final run's own).
        spaces: Search-space overrides by label or registry name.
    """

    optimizers: tuple[str, ...]
    trials: int = 16
    seed: int = 0
    trial_seeds: tuple[int, ...] = (0,)
    metric: str = "valid_loss"
    budget: Budget | None = None
    spaces: Mapping[str, SearchSpace] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.trials, int) or isinstance(self.trials, bool) or not 1 <= self.trials <= MAX_TRIALS:
            raise ConfigError(f"Invalid tuning trials: {self.trials!r} (need an integer from 1 to {MAX_TRIALS})")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"Invalid tuning seed: {self.seed!r} (need a non-negative integer)")
        if not self.trial_seeds or not all(isinstance(s, int) and s >= 0 for s in self.trial_seeds):
            raise ConfigError(f"Invalid tuning trial_seeds: {list(self.trial_seeds)!r} "
                              "(need a non-empty list of non-negative integers)")
        if not isinstance(self.metric, str) or not self.metric.startswith(tuple(f"{s}_" for s in METRIC_SPLITS)):
            raise ConfigError(f"Invalid tuning metric: {self.metric!r} (need a training or validation "
                              "evaluation column: train_loss, valid_loss, or train_*/valid_* of a task "
                              "metric such as train_error, valid_error)")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TuningConfig:
        if not isinstance(d, Mapping):
            raise ConfigError(f"Invalid tuning: {d!r} (need a table)")
        unknown = sorted(set(d) - _KEYS)
        if unknown:
            raise ConfigError(f"Unknown tuning key(s) {unknown}. Valid: {', '.join(sorted(_KEYS))}")
        names = d.get("optimizers", [])
        names = [names] if isinstance(names, str) else names
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"Invalid tuning optimizers: {names!r} (need a list of optimizer labels)")
        spaces = d.get("space", {})
        if not isinstance(spaces, Mapping):
            raise ConfigError(f"Invalid tuning space: {spaces!r} (need a table per optimizer)")
        seeds = d.get("trial_seeds", [0])
        if not isinstance(seeds, list):
            raise ConfigError(f"Invalid tuning trial_seeds: {seeds!r} (need a list)")
        return cls(optimizers=tuple(names), trials=d.get("trials", 16), seed=d.get("seed", 0),
                   trial_seeds=tuple(seeds), metric=d.get("metric", "valid_loss"),
                   budget=Budget.from_dict(d["budget"]) if "budget" in d else None,
                   spaces={str(k): parse_space(v) for k, v in spaces.items()})

    def tunes(self, label: str, name: str) -> bool:
        """Whether the column ``label`` (registry name ``name``) is tuned."""
        return label in self.optimizers or name in self.optimizers

    def space(self, label: str, name: str) -> SearchSpace:
        """The search space of a column: the suite's override, else the registry entry's."""
        space = self.spaces.get(label, self.spaces.get(name))
        if space is None:
            space = OPTIMIZERS.get(name).search_space
        if not space:
            raise ConfigError(f"Optimizer '{label}' has no search space to tune: give one in "
                              f"[tuning.space.{label}] or register it with search_space=...")
        fields = set(OPTIMIZERS.get(name).config_cls.__dataclass_fields__)
        unknown = sorted(set(space) - fields)
        if unknown:
            raise ConfigError(f"Unknown hyperparameter(s) {unknown} in the search space of '{label}'. "
                              f"Valid: {', '.join(sorted(fields))}")
        return space

    def trial_specs(self, finals: Iterable[RunSpec]) -> list[RunSpec]:
        """The trial specs for the tuned columns among ``finals`` (one per trial × trial seed)."""
        out: list[RunSpec] = []
        seen: set[GroupKey] = set()
        for spec in finals:
            key = _key(spec)
            if key in seen or not self.tunes(spec.display_optimizer, spec.optimizer):
                continue
            seen.add(key)
            space = self.space(spec.display_optimizer, spec.optimizer)
            for k, hparams in enumerate(sample_trials(space, self.trials, self.seed, fixed=spec.hparams)):
                for seed in self.trial_seeds:
                    out.append(replace(spec, hparams=hparams, seed=seed, trial=k, budget=self.budget or spec.budget,
                                       statistics="none", stats_every=0, stop_at_target=False))
        return out


def _key(spec: RunSpec) -> GroupKey:
    return spec.task, spec.size, spec.activation, spec.display_optimizer


@dataclass(frozen=True)
class Selection:
    """The outcome of tuning one column on one task × activation.

    Attributes:
        key: (task, size, activation, optimizer label).
        trial: Index of the winning trial (None: no trial finished with a finite score).
        hparams: The winner's hyperparameters (empty when no trial won).
        scores: Score of every trial, by index (``inf``: diverged/failed/non-finite; NaN: not run yet).
    """

    key: GroupKey
    trial: int | None
    hparams: Mapping[str, Any]
    scores: Mapping[int, float]

    @property
    def best(self) -> float:
        return self.scores[self.trial] if self.trial is not None else math.inf


def _final_value(record: RunRecord, metric: str) -> float:
    """The metric at the final evaluation, ``inf`` unless the run completed with a finite value."""
    if record.status is not Status.COMPLETED or not record.evals:
        return math.inf
    value = record.evals[-1].get(metric)
    if value is None:
        raise ConfigError(f"Tuning metric '{metric}' is not an evaluation column of task "
                          f"'{record.spec.task}'. Valid: {', '.join(metric_choices(record.evals[-1]))}")
    return float(value) if math.isfinite(value) else math.inf


def metric_choices(evaluation: Mapping[str, Any]) -> list[str]:
    """The columns of an evaluation row that can select a tuning winner (``train_*``, ``valid_*``)."""
    return sorted(k for k in evaluation if k.split("_", 1)[0] in METRIC_SPLITS)


def trial_scores(records: Iterable[RunRecord], metric: str) -> dict[GroupKey, dict[int, tuple[float, dict]]]:
    """Per column: trial index → (score averaged over its seeds, hyperparameters)."""
    per: dict[GroupKey, dict[int, list[Any]]] = {}
    for rec in records:
        k = rec.spec.trial
        if k is None:
            continue
        entry = per.setdefault(_key(rec.spec), {}).setdefault(k, [[], dict(rec.spec.hparams)])
        entry[0].append(_final_value(rec, metric))
    return {g: {k: (float(np.mean(v)) if v else math.nan, hp) for k, (v, hp) in trials.items()}
            for g, trials in per.items()}


def select(records: Iterable[RunRecord], metric: str, expected: Sequence[RunSpec] = ()) -> dict[GroupKey, Selection]:
    """The winning trial of every tuned column found in ``records``.

    ``expected`` (the trial specs) lets a trial seed that has no record yet count as
    unfinished: such a trial cannot win, so a partial tuning never picks a trial on
    fewer seeds than the others.
    """
    records = list(records)
    have = {r.run_id for r in records if r.finished}
    missing = {(_key(s), s.trial) for s in expected if s.run_id not in have}
    out = {}
    for key, trials in trial_scores(records, metric).items():
        scores = {k: (math.nan if (key, k) in missing else s) for k, (s, _) in sorted(trials.items())}
        finite = [(s, k) for k, s in scores.items() if math.isfinite(s)]
        if finite:
            _, best = min(finite)
            out[key] = Selection(key, best, dict(trials[best][1]), scores)
        else:
            out[key] = Selection(key, None, {}, scores)
    return out


def tuned_specs(finals: Sequence[RunSpec], selections: Mapping[GroupKey, Selection],
                config: TuningConfig) -> list[RunSpec]:
    """``finals`` with each tuned column's hyperparameters replaced by its winner's."""
    out = []
    for spec in finals:
        if config.tunes(spec.display_optimizer, spec.optimizer):
            chosen = selections.get(_key(spec))
            if chosen is None or chosen.trial is None:
                log.warning("no finished trial for %s; running its suite hyperparameters", "/".join(_key(spec)))
            else:
                spec = replace(spec, hparams=dict(chosen.hparams))
        out.append(spec)
    return out


def tuning_summary(records: Iterable[RunRecord], metric: str = "valid_loss",
                   finals: Iterable[RunRecord] = ()) -> pd.DataFrame:
    """One row per tuned column: the winner and the spread of the trial scores.

    ``records`` are the trials. With the comparison runs in ``finals``, the winner
    shown is the trial whose hyperparameters those runs actually used (the ground
    truth, whatever metric selected it), flagged if it is not the best on ``metric``.
    Sensitivity columns: median and worst finite score, the share of trials within
    10 % of the best score, and the number of trials that diverged or failed.
    """
    records = list(records)
    names = {_key(r.spec): r.spec.optimizer for r in records}
    hp_of = {(_key(r.spec), r.spec.trial): _canon(r.spec.hparams) for r in records}
    used = {_key(r.spec): _canon(r.spec.hparams) for r in finals}
    rows = []
    for key, sel in sorted(select(records, metric).items()):
        ran = next((k for k in sel.scores if key in used and hp_of.get((key, k)) == used[key]), None)
        winner = _winner(sel, ran, used.get(key), names[key], metric)
        rows.append({"task": key[0], "activation": key[2], "optimizer": key[3], **_spread(sel, winner, metric)})
    return pd.DataFrame(rows)


def _winner(sel: Selection, ran: int | None, used: str | None, name: str, metric: str) -> str:
    """The trial the final runs used (``ran``, with hyperparameters ``used``), else the selected one."""
    if ran is not None:
        winner = f"#{ran}: {_fmt_hparams(dict(json.loads(used)), name)}"
        return winner + (f" (best on {metric}: #{sel.trial})" if ran != sel.trial else "")
    if used is not None:
        return "no trial (ran its suite settings)"
    return "–" if sel.trial is None else f"#{sel.trial}: {_fmt_hparams(sel.hparams, name)}"


def _spread(sel: Selection, winner: str, metric: str) -> dict[str, Any]:
    """The summary columns of one tuned column: finite trials, winner, best/median/worst, share near the best."""
    s = np.array([v for v in sel.scores.values() if not math.isnan(v)])
    finite = s[np.isfinite(s)]
    best = sel.best
    return {
        "trials": f"{len(finite)}/{len(sel.scores)} finite",
        "winner": winner,
        f"best {metric}": f"{best:.4g}" if math.isfinite(best) else "–",
        f"median {metric}": f"{np.median(finite):.4g}" if finite.size else "–",
        "worst finite": f"{finite.max():.4g}" if finite.size else "–",
        "within 10% of best": f"{(finite <= 1.1 * best).mean():.0%}" if finite.size and best > 0 else "–",
        "diverged/failed": int(np.isinf(s).sum()),
    }


def _canon(hparams: Mapping[str, Any]) -> str:
    return json.dumps(dict(hparams), sort_keys=True, default=str)


def _fmt_hparams(hparams: Mapping[str, Any], name: str) -> str:
    """The tuned hyperparameters (those in the optimizer's search space) in short form."""
    try:
        space = OPTIMIZERS.get(name).search_space
    except ConfigError:
        space = {}
    shown = {k: v for k, v in hparams.items() if k in space} or dict(hparams)
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(shown.items()))


def trial_table(records: Iterable[RunRecord], metric: str = "valid_loss") -> pd.DataFrame:
    """Long form: one row per trial with its hyperparameters and score (for CSV and plots)."""
    rows = []
    for key, trials in trial_scores(records, metric).items():
        for k, (score, hp) in sorted(trials.items()):
            rows.append({"task": key[0], "size": key[1], "activation": key[2], "optimizer": key[3], "trial": k,
                         "score": score, **{f"hp_{n}": v for n, v in hp.items()}})
    return pd.DataFrame(rows)
