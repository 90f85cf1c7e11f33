"""Records → tidy pandas DataFrames (one row per run, per logged step, per eval, per statistic)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from benchsuite.records.record import RunRecord, Status

__all__ = ["ID_COLUMNS", "completed", "evals_frame", "runs_frame", "stats_frame", "steps_frame"]

ID_COLUMNS = ["run_id", "task", "size", "activation", "optimizer", "seed"]


def _ids(rec: RunRecord) -> dict[str, Any]:
    s = rec.spec
    return {"run_id": rec.run_id, "task": s.task, "size": s.size, "activation": s.activation,
            "optimizer": s.display_optimizer, "seed": s.seed}


def completed(frame: pd.DataFrame) -> pd.Series:
    """Row mask of the runs that completed (``status`` holds :class:`Status` string values)."""
    return frame.status.map(Status.is_completed).astype(bool)


def runs_frame(records: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per run: identity, outcome, final/best losses and metrics, time-to-target, cost."""
    rows = []
    for rec in records:
        row = _ids(rec)
        row.update(status=rec.status.value, reason=rec.reason, steps=rec.steps, train_seconds=rec.train_seconds,
                   wall_seconds=rec.wall_seconds,
                   sec_per_step=rec.train_seconds / rec.steps if rec.steps else math.nan,
                   hparams=json.dumps(dict(rec.spec.hparams), sort_keys=True),
                   batch_size=rec.spec.batch_size, device=rec.provenance.get("device"),
                   gpu=rec.provenance.get("gpu"), git_commit=rec.provenance.get("git_commit"),
                   peak_memory_bytes=rec.peak_memory_bytes, peak_rss_bytes=rec.peak_rss_bytes)
        if rec.evals:
            last = rec.evals[-1]
            for key, value in last.items():
                if key not in ("step", "time", "epoch"):
                    row[f"final_{key}"] = value
            for key in last:
                if key.endswith("_loss") or key.endswith("_error"):
                    vals = [e[key] for e in rec.evals if key in e and e[key] == e[key]]
                    row[f"best_{key}"] = min(vals) if vals else math.nan
        target = rec.target or {}
        row.update(target_metric=target.get("metric"), target_value=target.get("value"),
                   reached_target=rec.time_to_target is not None,
                   ttt_seconds=(rec.time_to_target or {}).get("seconds", math.nan),
                   ttt_step=(rec.time_to_target or {}).get("step", math.nan))
        rows.append(row)
    return pd.DataFrame(rows)


def steps_frame(records: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per logged optimizer step: ``step``, mini-batch ``loss``, cumulative training ``time``."""
    frames = [pd.DataFrame({**_ids(r), **r.step_log}) for r in records if r.step_log.get("step")]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*ID_COLUMNS, "step", "loss", "time"])


def evals_frame(records: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per evaluation: ``step``, ``time``, ``epoch`` and every ``{split}_{metric}``."""
    rows = [{**_ids(r), **e} for r in records for e in r.evals]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=[*ID_COLUMNS, "step", "time"])


def stats_frame(records: Sequence[RunRecord]) -> pd.DataFrame:
    """Curvature statistics in long form: one row per (run, probe step, statistic)."""
    rows = [{**_ids(r), "step": s["step"], "statistic": k, "value": v}
            for r in records for s in r.stats for k, v in s.items() if k != "step"]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=[*ID_COLUMNS, "step", "statistic", "value"])
