"""Frames built in one pass equal the per-record construction; the parquet cache equals the
records, is invalidated when a record changes, is written atomically and is ignored when broken."""

from __future__ import annotations

import logging
import math
import os
import stat
from pathlib import Path

import pandas as pd
import pytest

from benchsuite.config.spec import RunSpec
from benchsuite.records.record import RunRecord
from benchsuite.records.store import ResultStore
from benchsuite.report import frames as fr
from benchsuite.report.frames import (
    CACHE_DIR,
    FRAME_NAMES,
    ID_COLUMNS,
    build_frames,
    cache_key,
    evals_frame,
    load_frames,
    runs_frame,
    stats_frame,
    steps_frame,
)

pytest.importorskip("pyarrow")


def _record(run_id: str, *, seed: int = 0, optimizer: str = "sgd", steps: int = 3, status: str = "completed",
            step_log: dict | None = None, stats: list | None = None, batch_size: int | str | None = None,
            gpu: str | None = None, evals: bool = True) -> RunRecord:
    spec = RunSpec(task="digits_mlp", activation="relu", optimizer=optimizer, seed=seed, size="tiny",
                   batch_size=batch_size)
    log = step_log if step_log is not None else {
        "step": list(range(1, steps + 1)), "loss": [2.0 - 0.1 * i + seed for i in range(steps)],
        "time": [0.1 * i for i in range(1, steps + 1)]}
    return RunRecord(
        run_id=run_id, spec=spec, status=status, reason="budget", steps=steps, train_seconds=0.5, wall_seconds=1.0,
        step_log=log,
        evals=[{"step": 0, "time": 0.0, "epoch": 0.0, "train_loss": 2.3, "valid_error": 0.9},
               {"step": steps, "time": 0.5, "epoch": 0.1, "train_loss": 1.5 + seed, "valid_error": math.nan}]
        if evals else [],
        stats=stats or [],
        target={"metric": "valid_error", "value": 0.05, "mode": "min"},
        time_to_target={"seconds": 0.4, "step": 2} if seed == 1 else None,
        provenance={"git_commit": "0" * 40, "device": "cpu", "gpu": gpu, "versions": {"torch": "x"}},
    )


def _mixed_records() -> list[RunRecord]:
    """Records that exercise every branch: no step log, an extra or missing step-log column,
    integer losses, NaN, statistics, a ``"full"`` batch size beside ints and None, a GPU name."""
    return [
        _record("a1", seed=0),
        _record("a2", seed=1, optimizer="adam", batch_size=64, gpu="H200",
                stats=[{"step": 0, "grad_norm": 1.5, "dead_units": 0.25}, {"step": 3, "grad_norm": math.nan}]),
        _record("a3", seed=2, batch_size="full", step_log={"step": [], "loss": [], "time": []}),
        _record("a4", seed=3, step_log={"step": [1, 2], "loss": [3, 2], "time": [0.1, 0.2], "lr": [0.5, 0.25]}),
        _record("a5", seed=4, status="diverged", evals=False,
                step_log={"step": [1, 2], "loss": [1.0, math.nan]}),
    ]


def _steps_per_record(records: list[RunRecord]) -> pd.DataFrame:
    """HEAD's steps_frame: one DataFrame per record, concatenated (the reference)."""
    frames = [pd.DataFrame({**fr._ids(r), **r.step_log}) for r in records if r.step_log.get("step")]
    return (pd.concat(frames, ignore_index=True) if frames
            else pd.DataFrame(columns=[*ID_COLUMNS, "step", "loss", "time"]))


def _assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert list(a.columns) == list(b.columns)
    assert [str(t) for t in a.dtypes] == [str(t) for t in b.dtypes]
    for col in a.columns:  # None stays None and NaN stays NaN in object columns
        if a[col].dtype == object:
            assert [type(v) for v in a[col]] == [type(v) for v in b[col]], col


@pytest.mark.parametrize("records", [_mixed_records(), _mixed_records()[:1], _mixed_records()[2:3], []],
                         ids=["mixed", "one", "no-steps", "none"])
def test_steps_frame_equals_one_frame_per_record(records):
    _assert_same(steps_frame(records), _steps_per_record(records))


def test_steps_frame_dtypes():
    steps = steps_frame(_mixed_records())
    assert steps.step.dtype == "int64" and steps.seed.dtype == "int64"
    assert steps.loss.dtype == "float64" and steps.time.dtype == "float64" and steps.lr.dtype == "float64"
    assert len(steps) == 3 + 3 + 2 + 2
    assert steps.time.isna().sum() == 2 and steps.lr.notna().sum() == 2


def test_build_frames_equals_the_single_frames():
    records = _mixed_records()
    frames = build_frames(records, ["x.json: broken"])
    _assert_same(frames.runs, runs_frame(records))
    _assert_same(frames.steps, steps_frame(records))
    _assert_same(frames.evals, evals_frame(records))
    _assert_same(frames.stats, stats_frame(records))
    assert frames.problems == ["x.json: broken"] and not frames.cached


def test_step_log_columns_of_unequal_length_are_an_error():
    rec = _record("bad", step_log={"step": [1, 2], "loss": [1.0]})
    with pytest.raises(ValueError, match="bad"):
        steps_frame([rec])


def _store(tmp_path: Path, records: list[RunRecord] | None = None) -> ResultStore:
    store = ResultStore(tmp_path / "results")
    for rec in records if records is not None else _mixed_records():
        store.write(rec)
    return store


def _cache_files(store: ResultStore) -> list[str]:
    cache = store.root / CACHE_DIR
    return sorted(p.name for p in cache.iterdir()) if cache.is_dir() else []


def _assert_frames_equal(a: fr.Frames, b: fr.Frames) -> None:
    for name in FRAME_NAMES:
        _assert_same(getattr(a, name), getattr(b, name))
    assert a.problems == b.problems


def test_cached_frames_equal_uncached(tmp_path):
    store = _store(tmp_path)
    (store.root / "broken.json").write_text("{not json")
    plain = load_frames(store.root, cache=False)
    assert _cache_files(store) == []
    first = load_frames(store.root)
    second = load_frames(store.root)
    assert not first.cached and second.cached
    assert len(_cache_files(store)) == len(FRAME_NAMES)
    _assert_frames_equal(plain, first)
    _assert_frames_equal(plain, second)
    assert len(second.problems) == 1 and "broken.json" in second.problems[0]
    assert second.runs.batch_size.tolist()[:3] == [None, 64, "full"]
    assert second.runs.gpu.isna().tolist()[:2] == [True, False] and second.runs.gpu[1] == "H200"


@pytest.mark.parametrize("records", [[], _mixed_records()[2:3]], ids=["empty", "no-steps"])
def test_cache_of_empty_frames(tmp_path, records):
    store = _store(tmp_path, records)
    plain = load_frames(store.root, cache=False)
    load_frames(store.root)
    hit = load_frames(store.root)
    assert hit.cached
    _assert_frames_equal(plain, hit)


def test_cache_is_invalidated_when_a_record_changes(tmp_path):
    store = _store(tmp_path)
    load_frames(store.root)
    old_files = _cache_files(store)
    key = cache_key(store.root)
    rec = store.load("a1")
    rec.step_log["loss"][0] = 123.0
    store.write(rec)  # atomic rewrite: new inode, maybe the same size and second
    assert cache_key(store.root) != key
    frames = load_frames(store.root)
    assert not frames.cached
    assert frames.steps.loss.iloc[0] == 123.0
    assert set(_cache_files(store)).isdisjoint(old_files)  # the stale cache is removed
    assert load_frames(store.root).cached


def test_cache_is_invalidated_when_records_are_added_or_removed(tmp_path):
    store = _store(tmp_path)
    assert len(load_frames(store.root).runs) == 5
    store.write(_record("a6", seed=6))
    assert len(load_frames(store.root).runs) == 6
    store.path("a6").unlink()
    frames = load_frames(store.root)
    assert len(frames.runs) == 5 and not frames.cached


def test_cache_key_covers_the_code(tmp_path, monkeypatch):
    store = _store(tmp_path)
    key = cache_key(store.root)
    monkeypatch.setattr(fr, "_code_digest", lambda: "another benchsuite")
    assert cache_key(store.root) != key


@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing", "foreign"])
def test_a_broken_cache_is_ignored_and_rebuilt(tmp_path, caplog, damage):
    store = _store(tmp_path)
    plain = load_frames(store.root, cache=False)
    load_frames(store.root)
    cache = store.root / CACHE_DIR
    steps = next(cache.glob("frames-*.steps.parquet"))
    if damage == "garbage":
        steps.write_bytes(b"not parquet at all")
    elif damage == "truncated":
        steps.write_bytes(steps.read_bytes()[: steps.stat().st_size // 2])
    elif damage == "missing":
        steps.unlink()
    else:  # another key's file renamed over this one
        runs = next(cache.glob("frames-*.runs.parquet"))
        steps.write_bytes(runs.read_bytes())
    with caplog.at_level(logging.WARNING, logger="benchsuite.report.frames"):
        frames = load_frames(store.root)
    assert not frames.cached
    _assert_frames_equal(plain, frames)
    if damage != "missing":
        assert "Ignoring the unreadable frames cache" in caplog.text
    assert load_frames(store.root).cached


def test_cache_is_written_atomically_and_group_readable(tmp_path, monkeypatch):
    store = _store(tmp_path)
    old = os.umask(0o022)
    try:
        load_frames(store.root)
    finally:
        os.umask(old)
    for path in (store.root / CACHE_DIR).iterdir():
        assert path.suffix == ".parquet", path  # no temporary files left behind
        assert path.stat().st_mode & stat.S_IRGRP
    # a write that fails half way leaves no cache file (and the frames are still returned)
    real = fr._write_frame

    def fail_on_steps(path, frame, meta):
        if ".steps." in path.name:
            raise OSError("disk full")
        real(path, frame, meta)

    store.write(_record("a7", seed=7))
    monkeypatch.setattr(fr, "_write_frame", fail_on_steps)
    frames = load_frames(store.root)
    assert len(frames.runs) == 6
    key = cache_key(store.root)
    assert not any(key in name for name in _cache_files(store))
    assert not any(name.endswith(".tmp") for name in _cache_files(store))


def test_an_unwritable_cache_does_not_stop_the_frames(tmp_path, caplog):
    store = _store(tmp_path)
    (store.root / CACHE_DIR).write_text("a file where the cache folder would be")
    with caplog.at_level(logging.WARNING, logger="benchsuite.report.frames"):
        frames = load_frames(store.root)
    assert len(frames.runs) == 5 and "Could not write the frames cache" in caplog.text
    # the store still reads only the records
    assert sorted(store.run_ids()) == ["a1", "a2", "a3", "a4", "a5"]
    assert len(store.records()[0]) == 5
