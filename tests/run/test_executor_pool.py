"""Worker processes: the same records as in-process runs, written only by the parent, resumable."""

from __future__ import annotations

import pytest

from benchsuite.config.spec import Budget, RunSpec
from benchsuite.errors import ConfigError
from benchsuite.records.record import Status
from benchsuite.records.store import ResultStore
from benchsuite.run.executor import run_local
from benchsuite.run.suite_run import resolve_workers

SPECS = [RunSpec(task="digits_mlp", activation=act, optimizer=opt, seed=seed, size="tiny", budget=Budget(steps=4),
                 eval_every=2)
         for act, opt, seed in [("relu", "sgd", 0), ("tanh", "kfgn", 0), ("relu", "hf", 1), ("prelu", "adam", 2),
                                ("relu", "sgd", 0)]]  # the last repeats the first: run once


def _comparable(rec):
    return rec.run_id, rec.status, rec.steps, rec.step_log["loss"], [{k: v for k, v in e.items() if k != "time"}
                                                                    for e in rec.evals]


def test_two_workers_give_the_records_one_process_gives(tmp_path):
    one, two = ResultStore(tmp_path / "one"), ResultStore(tmp_path / "two")
    started, ended = [], []
    s1 = run_local(SPECS, one)
    s2 = run_local(SPECS, two, workers=2, threads=1, on_run_start=started.append,
                   on_run_end=lambda spec, rec: ended.append((spec.run_id, rec is None)))
    assert s1.ran == s2.ran == 4 and s2.skipped == 1 and s2.statuses[Status.COMPLETED] == 4
    assert [s.run_id for s in started] == [s.run_id for s in SPECS[:4]]  # started in the specs' order
    assert sorted(ended) == sorted([(s.run_id, False) for s in SPECS[:4]] + [(SPECS[0].run_id, True)])
    for spec in SPECS[:4]:
        assert _comparable(one.load(spec.run_id)) == _comparable(two.load(spec.run_id))
    again = run_local(SPECS, two, workers=2)
    assert again.ran == 0 and again.skipped == 5


def test_workers_are_validated():
    with pytest.raises(ConfigError, match="Invalid workers: 0"):
        run_local(SPECS, ResultStore.__new__(ResultStore), workers=0)
    assert resolve_workers("auto", 1, "cuda") == 1
    assert resolve_workers("auto", 1, "cpu") >= 1
    assert resolve_workers(3, None, "cpu") == 3
    with pytest.raises(ConfigError, match="Invalid workers"):
        resolve_workers("many", None, "cpu")


def test_each_worker_takes_one_gpu_in_turn_and_says_when_it_is_shared(monkeypatch):
    """The initializer's GPU assignment, run here in-process (this machine has no GPU)."""
    import multiprocessing
    import os

    from benchsuite.run import executor
    from benchsuite.run.provenance import GPU_SHARED_ENV, WORKERS_ENV

    monkeypatch.setattr(executor, "_die_with_parent", lambda parent: None)
    queue = multiprocessing.get_context("spawn").Queue()
    for gpu in (0, 1, 0):  # what _in_pool queues for 3 workers on GPUs (0, 1)
        queue.put(gpu)
    seen = []
    for _ in range(3):
        for name in ("CUDA_VISIBLE_DEVICES", GPU_SHARED_ENV, WORKERS_ENV):
            monkeypatch.delenv(name, raising=False)
        executor._init_worker(None, 0, queue, 3, 2)
        seen.append((os.environ["CUDA_VISIBLE_DEVICES"], os.environ[GPU_SHARED_ENV], os.environ[WORKERS_ENV]))
    assert seen == [("0", "1", "3"), ("1", "1", "3"), ("0", "1", "3")]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    queue.put(1)
    executor._init_worker(None, 0, queue, 2, 2)  # as many workers as GPUs: not shared
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1" and os.environ[GPU_SHARED_ENV] == "0"


def test_gpus_for_a_cpu_suite_are_refused():
    from benchsuite.config.suite import load_suite
    from benchsuite.run.suite_run import run_suite

    with pytest.raises(ConfigError, match="run it with --device cuda"):
        run_suite(load_suite("smoke"), "/nonexistent/never-created", gpus=[0, 1])
