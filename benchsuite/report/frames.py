"""Records → tidy pandas DataFrames (one row per run, per logged step, per eval, per statistic).

Each frame is built in one pass over the records: the rows (or, for the long
``steps_frame``, the columns) are collected first and turned into one DataFrame, never
one DataFrame per record.

:func:`load_frames` reads the four frames of a results directory through a parquet
cache beside the records, ``<results>/.cache/frames-<key>.<frame>.parquet``. The key
hashes the set of record files (name, size, modification time and inode of every
``*.json``: an atomic rewrite of a record makes a new inode) and the source of the code
that shapes the frames, so a changed, added or removed record, or a new benchsuite,
misses the cache and rebuilds it. Cache files are written atomically (temporary file,
fsync, rename; group-readable, like the records) and an unreadable, partial or foreign
cache is ignored and rebuilt, never trusted: the JSON records stay the only truth.
Frames read from the cache equal the frames built from the records, column names and
dtypes included (object columns round-trip as JSON, so ``None`` stays ``None`` and an
int stays an int).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchsuite.records.record import RunRecord, Status, dumps_strict, loads_strict

__all__ = ["CACHE_DIR", "FRAME_NAMES", "ID_COLUMNS", "Frames", "build_frames", "completed", "evals_frame",
           "load_frames", "runs_frame", "stats_frame", "steps_frame"]

log = logging.getLogger(__name__)

ID_COLUMNS = ["run_id", "task", "size", "activation", "optimizer", "seed"]

#: The frames :func:`load_frames` returns and caches, in order.
FRAME_NAMES = ("runs", "steps", "evals", "stats")

#: The cache's folder inside a results directory (the store reads only ``*.json`` at the top).
CACHE_DIR = ".cache"

_CACHE_FORMAT = "benchsuite-frames-1"
_META_KEY = b"benchsuite_frames"


def _ids(rec: RunRecord) -> dict[str, Any]:
    s = rec.spec
    return {"run_id": rec.run_id, "task": s.task, "size": s.size, "activation": s.activation,
            "optimizer": s.display_optimizer, "seed": s.seed}


def completed(frame: pd.DataFrame) -> pd.Series:
    """Row mask of the runs that completed (``status`` holds :class:`Status` string values)."""
    return frame.status.map(Status.is_completed).astype(bool)


def _run_row(rec: RunRecord, ids: dict[str, Any]) -> dict[str, Any]:
    row = dict(ids)
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
            if key.endswith(("_loss", "_error")):
                vals = [e[key] for e in rec.evals if key in e and e[key] == e[key]]
                row[f"best_{key}"] = min(vals) if vals else math.nan
    target = rec.target or {}
    row.update(target_metric=target.get("metric"), target_value=target.get("value"),
               reached_target=rec.time_to_target is not None,
               ttt_seconds=(rec.time_to_target or {}).get("seconds", math.nan),
               ttt_step=(rec.time_to_target or {}).get("step", math.nan))
    return row


def runs_frame(records: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per run: identity, outcome, final/best losses and metrics, time-to-target, cost."""
    return pd.DataFrame([_run_row(rec, _ids(rec)) for rec in records])


_STEPS_EMPTY = [*ID_COLUMNS, "step", "loss", "time"]


def _steps_from(records: Sequence[RunRecord], ids: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The long steps frame from column lists: one DataFrame for all records.

    Equals concatenating one frame per record (``pd.concat(..., ignore_index=True)``):
    the columns are the union in order of first appearance, a column a record lacks is
    NaN there, and a step-log column is int64 only when every record logged it as ints.
    """
    logged = [(rec, row) for rec, row in zip(records, ids) if rec.step_log.get("step")]
    if not logged:
        return pd.DataFrame(columns=_STEPS_EMPTY)
    lengths = []
    for rec, _ in logged:
        n = len(rec.step_log["step"])
        bad = sorted(k for k, v in rec.step_log.items() if len(v) != n)
        if bad:
            raise ValueError(f"Run {rec.run_id}: step_log columns {bad} are not as long as 'step' ({n})")
        lengths.append(n)
    counts = np.asarray(lengths, dtype=np.int64)
    # Identity columns: one value per record, inferred as a per-record frame infers it, repeated.
    columns: dict[str, Any] = {
        key: pd.Series([row[key] for _, row in logged]).repeat(counts).reset_index(drop=True)
        for key in ID_COLUMNS}
    keys: list[str] = []
    for rec, _ in logged:
        keys.extend(k for k in rec.step_log if k not in keys and k not in columns)
    for key in keys:
        parts: list[float] = []
        for (rec, _), n in zip(logged, lengths):
            col = rec.step_log.get(key)
            parts.extend(col if col is not None else [math.nan] * n)
        columns[key] = np.asarray(parts)  # int64 if every value is an int, else float64 (as concat gives)
    return pd.DataFrame(columns)


def steps_frame(records: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per logged optimizer step: ``step``, mini-batch ``loss``, cumulative training ``time``."""
    return _steps_from(records, [_ids(r) for r in records])


def evals_frame(records: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per evaluation: ``step``, ``time``, ``epoch`` and every ``{split}_{metric}``."""
    rows = [{**_ids(r), **e} for r in records for e in r.evals]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=[*ID_COLUMNS, "step", "time"])


def stats_frame(records: Sequence[RunRecord]) -> pd.DataFrame:
    """Curvature statistics in long form: one row per (run, probe step, statistic)."""
    rows = [{**_ids(r), "step": s["step"], "statistic": k, "value": v}
            for r in records for s in r.stats for k, v in s.items() if k != "step"]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=[*ID_COLUMNS, "step", "statistic", "value"])


@dataclass
class Frames:
    """The four frames of a set of records, and the files that could not be read.

    Attributes:
        runs, steps, evals, stats: :func:`runs_frame`, :func:`steps_frame`,
            :func:`evals_frame`, :func:`stats_frame` of the records.
        problems: One message per unreadable record file (as ``ResultStore.records``).
        cached: Whether the frames came from the parquet cache.
    """

    runs: pd.DataFrame
    steps: pd.DataFrame
    evals: pd.DataFrame
    stats: pd.DataFrame
    problems: list[str] = field(default_factory=list)
    cached: bool = False


def build_frames(records: Sequence[RunRecord], problems: Sequence[str] = ()) -> Frames:
    """All four frames in one pass over ``records`` (each record's identity computed once)."""
    ids = [_ids(r) for r in records]
    runs = pd.DataFrame([_run_row(r, i) for r, i in zip(records, ids)])
    evals_rows = [{**i, **e} for r, i in zip(records, ids) for e in r.evals]
    stats_rows = [{**i, "step": s["step"], "statistic": k, "value": v}
                  for r, i in zip(records, ids) for s in r.stats for k, v in s.items() if k != "step"]
    evals = pd.DataFrame(evals_rows) if evals_rows else pd.DataFrame(columns=[*ID_COLUMNS, "step", "time"])
    stats = (pd.DataFrame(stats_rows) if stats_rows
             else pd.DataFrame(columns=[*ID_COLUMNS, "step", "statistic", "value"]))
    return Frames(runs, _steps_from(records, ids), evals, stats, list(problems))


# ----------------------------------------------------------------------------- the parquet cache


def _code_digest() -> str:
    """Hash of the source that shapes the frames: a new benchsuite misses an old cache."""
    from benchsuite.config import spec
    from benchsuite.records import record

    h = hashlib.sha256()
    for module_file in (__file__, record.__file__, spec.__file__):
        with contextlib.suppress(OSError):
            h.update(Path(module_file).read_bytes())
    return h.hexdigest()


def cache_key(root: str | os.PathLike[str]) -> str:
    """The cache key of a results directory: its record files (name, size, mtime, inode) and the code."""
    h = hashlib.sha256(f"{_CACHE_FORMAT}\n{pd.__version__}\n{_code_digest()}\n".encode())
    with os.scandir(root) as entries:  # the files ResultStore.records() reads: <root>/*.json
        found = [e for e in entries if e.name.endswith(".json")]  # a directory is a "problem" there
    for entry in sorted(found, key=lambda e: e.name):
        try:
            st = entry.stat()
        except OSError:  # removed meanwhile: the second key of load_frames differs then
            continue
        h.update(f"{entry.name}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\n".encode())
    return h.hexdigest()[:32]


def _cache_paths(root: Path, key: str) -> dict[str, Path]:
    return {name: root / CACHE_DIR / f"frames-{key}.{name}.parquet" for name in FRAME_NAMES}


def _is_native(col: pd.Series) -> bool:
    """Whether parquet stores ``col`` exactly as it is (else it is stored as JSON text)."""
    kind = col.dtype.kind
    if kind in "biuf":
        return True
    return isinstance(col.dtype, pd.StringDtype)


def _encode(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    out, encoded = {}, []
    for name in frame.columns:
        col = frame[name]
        if _is_native(col):
            out[name] = col
        else:
            out[name] = pd.Series([dumps_strict(_plain(v)) for v in col], dtype=object, index=col.index)
            encoded.append(name)
    return pd.DataFrame(out, index=frame.index), encoded


def _plain(v: Any) -> Any:
    """``v`` as a JSON value that reads back to an equal Python value (numpy scalars → Python)."""
    if isinstance(v, np.generic):
        return v.item()
    if v is None or isinstance(v, (str, bool, int, float, list, dict)):
        return v
    raise TypeError(f"cannot cache a value of type {type(v).__name__}")


def _decode(texts: pd.Series) -> list[Any]:
    """JSON texts → values; each distinct scalar is decoded once (lists and dicts once per row)."""
    memo: dict[str, Any] = {}
    out: list[Any] = []
    for text in texts:
        if text in memo:
            out.append(memo[text])
            continue
        value = loads_strict(text)
        if not isinstance(value, (list, dict)):
            memo[text] = value
        out.append(value)
    return out


def _write_frame(path: Path, frame: pd.DataFrame, meta: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from benchsuite.records.store import atomic_write

    if not all(isinstance(c, str) for c in frame.columns) or len(set(frame.columns)) != len(frame.columns):
        raise TypeError("frame columns must be unique strings")
    encoded_frame, encoded = _encode(frame)
    table = pa.Table.from_pandas(encoded_frame, preserve_index=False)
    info = {**meta, "encoded": encoded, "columns": list(frame.columns),
            "dtypes": {c: str(frame[c].dtype) for c in frame.columns}}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), _META_KEY: json.dumps(info).encode()})
    atomic_write(path, lambda fh: pq.write_table(table, fh))


def _read_frame(path: Path, key: str, name: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    info = json.loads((table.schema.metadata or {})[_META_KEY])
    if info.get("key") != key or info.get("format") != _CACHE_FORMAT or info.get("frame") != name:
        raise ValueError(f"{path.name} holds another cache (frame {info.get('frame')!r}, key {info.get('key')!r})")
    frame = table.to_pandas()
    for column in info["encoded"]:
        frame[column] = pd.Series(_decode(frame[column]), dtype=object, index=frame.index)
    frame = frame[info["columns"]] if info["columns"] else frame
    if frame.columns.tolist() != info["columns"]:
        raise ValueError("the cached columns differ from the written ones")
    if len(frame.columns) == 0:
        frame = pd.DataFrame(index=pd.RangeIndex(len(frame)))
    got = {c: str(frame[c].dtype) for c in frame.columns}
    if got != info["dtypes"]:
        raise ValueError(f"cached dtypes {got} differ from the written {info['dtypes']}")
    return frame, info


def _read_cache(root: Path, key: str) -> Frames | None:
    paths = _cache_paths(root, key)
    if not all(p.is_file() for p in paths.values()):
        return None
    try:
        loaded = {name: _read_frame(path, key, name) for name, path in paths.items()}
    except Exception as exc:  # noqa: BLE001 - any unreadable cache is rebuilt, never trusted
        log.warning("Ignoring the unreadable frames cache in %s (%s: %s); rebuilding it from the records",
                    root / CACHE_DIR, type(exc).__name__, exc)
        return None
    problems = loaded["runs"][1].get("problems", [])
    return Frames(*(loaded[name][0] for name in FRAME_NAMES), problems=list(problems), cached=True)


def _write_cache(root: Path, key: str, frames: Frames) -> None:
    paths = _cache_paths(root, key)
    try:
        paths["runs"].parent.mkdir(exist_ok=True)
        meta = {"key": key, "format": _CACHE_FORMAT, "problems": frames.problems}
        for name, path in paths.items():
            _write_frame(path, getattr(frames, name), {**meta, "frame": name})
    except Exception as exc:  # noqa: BLE001 - the cache is an optimisation: the frames are still returned
        log.warning("Could not write the frames cache in %s (%s: %s); the report reads the records each time",
                    root / CACHE_DIR, type(exc).__name__, exc)
        for path in paths.values():
            with contextlib.suppress(OSError):
                path.unlink()
        return
    keep = {p.name for p in paths.values()}
    for stale in (root / CACHE_DIR).glob("frames-*.parquet"):
        if stale.name not in keep:
            with contextlib.suppress(OSError):
                stale.unlink()


def load_frames(root: str | os.PathLike[str], *, cache: bool = True) -> Frames:
    """The four frames of a results directory, through the parquet cache.

    Args:
        root: A results directory (``<run_id>.json`` records).
        cache: Read and write ``<root>/.cache/frames-<key>.*.parquet``; False reads the
            records and touches no cache.

    Returns:
        The frames and the messages of unreadable record files (``frames.cached`` says
        whether they came from the cache).

    Raises:
        ResultsError: ``root`` is not a results directory.
    """
    from benchsuite.records.store import ResultStore

    store = ResultStore(root, create=False)
    key = cache_key(store.root) if cache else ""
    if cache:
        hit = _read_cache(store.root, key)
        if hit is not None:
            return hit
    records, problems = store.records()
    frames = build_frames(records, problems)
    if cache and cache_key(store.root) == key:  # a record changed while we read: do not cache a mix
        _write_cache(store.root, key, frames)
    return frames
