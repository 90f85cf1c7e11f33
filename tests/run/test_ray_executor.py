"""The Ray executor: the sequential records from Ray tasks, crashes and Ctrl-C contained, one shared loop.

The tests marked by the ``ray_cluster`` fixture need Ray (``pip install "benchsuite[ray]"``)
and share one local Ray with 2 CPUs; the others run everywhere.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Hashable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from benchsuite.cli import main
from benchsuite.config.spec import Budget, RunSpec
from benchsuite.config.suite import load_suite, parse_suite
from benchsuite.errors import ConfigError
from benchsuite.records.record import RunRecord, Status
from benchsuite.records.store import ResultStore
from benchsuite.run.executor import DIED, Backend, run_specs
from benchsuite.run.ray_executor import RAY_INSTALL, check_gpus_per_run, plan, run_ray
from benchsuite.run.runner import run
from benchsuite.run.suite_run import run_suite

SUITE_TOML = """\
tasks = ["digits_mlp"]
activations = ["relu"]
optimizers = ["sgd", "kfgn"]
seeds = [0]
size = "tiny"
eval_every = 2
[budget]
steps = 4
[tuning]
optimizers = ["sgd"]
trials = 2
seed = 1
"""


def _spec(seed: int) -> RunSpec:
    return RunSpec(task="digits_mlp", activation="relu", optimizer="sgd", seed=seed, size="tiny",
                   budget=Budget(steps=2), eval_every=2)


def _comparable(rec: RunRecord) -> tuple:
    return (rec.run_id, rec.status, rec.steps, rec.step_log["loss"],
            [{k: v for k, v in e.items() if k != "time"} for e in rec.evals])


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    """One light local Ray with 2 CPUs for this module's Ray tests."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024**2, configure_logging=False,
             log_to_driver=False)
    print(f"ray.init: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    yield ray
    ray.shutdown()


# --------------------------------------------------------------------------------------
# Without Ray


def test_without_ray_the_error_says_how_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    suite = parse_suite("mine", {"tasks": ["digits_mlp"], "activations": ["relu"], "optimizers": ["sgd"],
                                 "size": "tiny", "budget": {"steps": 2}})
    with pytest.raises(ConfigError, match='pip install "benchsuite\\[ray\\]"'):
        run_suite(suite, tmp_path / "lib", executor="ray")
    assert not (tmp_path / "lib").exists()  # nothing ran, nothing was created
    code = main(["run", "--suite", "smoke", "--tasks", "digits_mlp", "--executor", "ray", "--results",
                 str(tmp_path / "cli"), "--no-report"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and RAY_INSTALL in err and "Traceback" not in err
    assert not list((tmp_path / "cli").glob("*.json"))


def test_executor_and_its_settings_are_validated(tmp_path):
    suite = parse_suite("mine", {"tasks": ["digits_mlp"], "activations": ["relu"], "optimizers": ["sgd"],
                                 "size": "tiny", "budget": {"steps": 2}})
    with pytest.raises(ConfigError, match="Unknown executor 'dask'. Valid choices: local, ray"):
        run_suite(suite, tmp_path, executor="dask")
    with pytest.raises(ConfigError, match="for executor ray"):
        run_suite(suite, tmp_path, address="ray://head:10001")
    with pytest.raises(ConfigError, match="Invalid gpus_per_run in suite 'mine': 1.5"):
        parse_suite("mine", {"tasks": ["digits_mlp"], "gpus_per_run": 1.5})
    assert parse_suite("mine", {"tasks": ["digits_mlp"], "gpus_per_run": 0.25}).gpus_per_run == 0.25
    for bad in (0, -1, 2.5, True, "half", float("nan")):
        with pytest.raises(ConfigError, match="Invalid GPUs per run"):
            check_gpus_per_run(bad, "GPUs per run")
    assert check_gpus_per_run(2) == 2.0 and check_gpus_per_run(None) is None


def test_plan_reserves_cpus_and_gpus_and_fills_the_cluster():
    cpus = {"CPU": 16.0}
    assert plan("cpu", gpus_per_run=None, threads=None, workers=None, resources=cpus) == (
        plan("cpu", gpus_per_run=None, threads=1, workers=None, resources=cpus))
    p = plan("cpu", gpus_per_run=None, threads=4, workers=None, resources=cpus)
    assert (p.num_cpus, p.num_gpus, p.gpu_shared, p.slots) == (4, 0.0, None, 4)
    assert plan("cpu", gpus_per_run=None, threads=None, workers=3, resources=cpus).slots == 3  # --workers caps
    gpus = {"CPU": 16.0, "GPU": 2.0}
    p = plan("cuda", gpus_per_run=0.25, threads=None, workers=None, resources=gpus)
    assert (p.num_gpus, p.gpu_shared, p.slots) == (0.25, True, 8)  # 4 runs on each of 2 GPUs
    p = plan("cuda", gpus_per_run=None, threads=None, workers=None, resources=gpus)
    assert (p.num_gpus, p.gpu_shared, p.slots) == (1.0, False, 2)
    assert plan("cuda", gpus_per_run=0.1, threads=4, workers=None, resources=gpus).slots == 4  # CPUs bind first
    with pytest.raises(ConfigError, match="Device cuda:1 cannot be used with the ray executor"):
        plan("cuda:1", gpus_per_run=None, threads=None, workers=None, resources=gpus)
    with pytest.raises(ConfigError, match="gpus_per_run 0.5 given for runs on device cpu"):
        plan("cpu", gpus_per_run=0.5, threads=None, workers=None, resources=gpus)
    with pytest.raises(ConfigError, match="The Ray cluster has 0 GPU"):
        plan("cuda", gpus_per_run=None, threads=None, workers=None, resources=cpus)
    with pytest.raises(ConfigError, match="The Ray cluster has 2 CPU"):
        plan("cpu", gpus_per_run=None, threads=4, workers=None, resources={"CPU": 2.0})


def test_a_ray_task_notes_a_shared_gpu_and_the_pool_for_the_record(monkeypatch):
    """The body of the remote function, run here: what provenance.capture reads is set per task."""
    import torch

    from benchsuite.run.provenance import GPU_SHARED_ENV, WORKERS_ENV
    from benchsuite.run.ray_executor import _task

    def target(spec, **kwargs):
        record = RunRecord(run_id=spec.run_id, spec=spec, status=Status.FAILED, reason="probe")
        record.provenance = {"shared": os.environ.get(GPU_SHARED_ENV), "workers": os.environ.get(WORKERS_ENV),
                             "threads": torch.get_num_threads(), "kwargs": kwargs}
        return record

    for name in (GPU_SHARED_ENV, WORKERS_ENV):  # _task sets them: restored (absent) after the test
        monkeypatch.setenv(name, "before")
        monkeypatch.delenv(name)
    prov = _task(target, _spec(0), {"checkpoint_dir": "ck"}, 2, 8, True).provenance
    assert prov == {"shared": "1", "workers": "8", "threads": 2, "kwargs": {"checkpoint_dir": "ck"}}
    assert _task(target, _spec(0), {}, None, 8, False).provenance["shared"] == "0"
    assert _task(target, _spec(0), {}, None, 8, None).provenance["shared"] is None  # a CPU run: no GPU to share


class _Scripted(Backend):
    """Runs specs in this process when submitted; ``wait`` hands out one record, then raises a Ctrl-C."""

    name = "scripted"
    slots = 3

    def __init__(self) -> None:
        self.records: dict[Hashable, RunRecord] = {}
        self.waits = 0
        self.cancelled: list[Hashable] = []
        self.closed = False

    def submit(self, spec: RunSpec, checkpoints: Path | None) -> Hashable:
        handle = len(self.records)
        self.records[handle] = run(spec) if spec.seed != 2 else None  # seed 2: still running
        return handle

    def wait(self, handles: Sequence[Hashable], timeout: float | None) -> list[Hashable]:
        self.waits += 1
        if self.waits == 2:
            raise KeyboardInterrupt
        finished = [h for h in handles if self.records[h] is not None]
        return finished if timeout == 0 else finished[:1]

    def collect(self, handle: Hashable, spec: RunSpec) -> RunRecord:
        return self.records[handle]

    def cancel(self, handles: Sequence[Hashable]) -> None:
        self.cancelled += handles

    def close(self) -> None:
        self.closed = True


def test_ctrl_c_keeps_finished_records_and_cancels_the_rest(tmp_path):
    """The shared loop: a record collected, one finished but not collected at the Ctrl-C, one cancelled."""
    store, backend, ended = ResultStore(tmp_path), _Scripted(), []
    specs = [_spec(0), _spec(1), _spec(2)]
    with pytest.raises(KeyboardInterrupt):
        run_specs(specs, store, lambda: backend, on_run_end=lambda spec, rec: ended.append(spec.seed))
    assert ended == [0, 1]  # seed 1 finished before the Ctrl-C: written too
    assert store.is_finished(specs[0].run_id) and store.is_finished(specs[1].run_id)
    assert store.load(specs[1].run_id).provenance["executor"] == "scripted"
    assert not store.is_finished(specs[2].run_id)
    assert backend.cancelled == [2] and backend.closed
    for spec in specs:  # every claim was released
        claim = store.claim(spec.run_id)
        assert claim is not None
        claim.release()


# --------------------------------------------------------------------------------------
# With Ray


def test_ray_gives_the_sequential_records_tuning_included(ray_cluster, tmp_path, capsys, monkeypatch):
    from benchsuite.run.provenance import WORKERS_ENV

    monkeypatch.delenv(WORKERS_ENV, raising=False)  # left by a test of the pool's worker set-up, if any
    path = tmp_path / "raysmoke.toml"
    path.write_text(SUITE_TOML)
    suite = load_suite(str(path))
    seq = run_suite(suite, tmp_path / "seq")
    assert seq.tuning.ran == 2 and seq.runs.ran == 2
    t0 = time.perf_counter()
    code = main(["run", "--suite", str(path), "--executor", "ray", "--workers", "2", "--results",
                 str(tmp_path / "ray"), "--no-report"])
    print(f"ray executor, 4 runs: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    assert code == 0, capsys.readouterr().err
    one, two = ResultStore(tmp_path / "seq"), ResultStore(tmp_path / "ray")
    ids = sorted(s.run_id for s in seq.trials + seq.finals)
    assert sorted(r.run_id for r in two.records()[0]) == ids  # same trials, same winners, same finals
    for run_id in ids:
        a, b = one.load(run_id), two.load(run_id)
        assert _comparable(a) == _comparable(b)
        assert a.provenance["executor"] == "local" and not a.provenance["worker_pool"]
        assert b.provenance["executor"] == "ray" and b.provenance["worker_pool"] and b.provenance["ray_node"]
        assert "gpu_shared" not in b.provenance  # a CPU run shares no GPU
    again = run_suite(suite, tmp_path / "ray", executor="ray")
    assert again.tuning.ran == again.runs.ran == 0 and again.runs.skipped == 2


def test_a_crashed_ray_worker_fails_only_its_run(ray_cluster, tmp_path):
    def crash_seed_1(spec, **kwargs):
        if spec.seed == 1:
            os._exit(3)  # a segfault, the OOM killer
        return run(spec, **kwargs)

    store = ResultStore(tmp_path)
    specs = [_spec(0), _spec(1)]
    summary = run_ray(specs, store, target=crash_seed_1)
    assert summary.statuses == {Status.COMPLETED: 1, Status.FAILED: 1}
    failed = store.load(specs[1].run_id)
    assert failed.status is Status.FAILED and failed.reason.startswith(f"{DIED}: Ray ")
    assert failed.provenance["executor"] == "ray"
    assert store.load(specs[0].run_id).status is Status.COMPLETED
    retry = run_ray(specs, store)  # the failed run is retried, the completed one skipped
    assert retry.ran == 1 and retry.skipped == 1 and store.load(specs[1].run_id).status is Status.COMPLETED


def test_an_error_run_raises_before_training_is_raised_in_the_driver(ray_cluster, tmp_path):
    """As in-process: a bad spec or a broken task stops the suite with its own one-line error, not a Ray trace."""

    def bad_spec(spec, **kwargs):
        raise ConfigError("Invalid lr for sgd: -1 (need > 0)")

    store = ResultStore(tmp_path)
    with pytest.raises(ConfigError) as info:
        run_ray([_spec(0)], store, target=bad_spec)
    assert str(info.value) == "Invalid lr for sgd: -1 (need > 0)" and type(info.value) is ConfigError
    assert not list(tmp_path.glob("*.json"))
    claim = store.claim(_spec(0).run_id)
    assert claim is not None
    claim.release()


def test_ctrl_c_cancels_ray_tasks(ray_cluster, tmp_path):
    pid_file = tmp_path / "slow.pid"

    def slow_seed_1(spec, **kwargs):
        if spec.seed == 1:
            pid_file.write_text(str(os.getpid()))
            time.sleep(600)
        return run(spec, **kwargs)

    def interrupt(spec, record):
        deadline = time.monotonic() + 60
        while not pid_file.exists() and time.monotonic() < deadline:  # the slow run is under way
            time.sleep(0.1)
        raise KeyboardInterrupt

    store = ResultStore(tmp_path / "res")
    specs = [_spec(0), _spec(1)]
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        run_ray(specs, store, target=slow_seed_1, on_run_end=interrupt)
    assert time.perf_counter() - t0 < 120
    assert store.is_finished(specs[0].run_id) and not (store.root / f"{specs[1].run_id}.json").exists()
    claim = store.claim(specs[1].run_id)  # released
    assert claim is not None
    claim.release()
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(pid), "the cancelled task's worker still runs"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (killed, not yet reaped) counts as dead
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
