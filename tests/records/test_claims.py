"""Many writers, one store: a run is claimed before it runs, claims die with their holder, nothing runs twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from benchsuite.records.store import ResultStore


def test_a_held_claim_is_refused_and_a_released_one_granted(tmp_path):
    store = ResultStore(tmp_path)
    first = store.claim("abc")
    assert first is not None and (tmp_path / ".abc.claim").exists()
    assert store.claim("abc") is None  # a second open file description cannot lock it
    first.release()
    assert not (tmp_path / ".abc.claim").exists()
    again = store.claim("abc")
    assert again is not None
    again.release()
    again.release()  # idempotent


def test_a_stale_claim_file_left_by_a_killed_process_is_claimed_again(tmp_path):
    store = ResultStore(tmp_path)
    code = "import os,sys; from benchsuite.records.store import ResultStore; " \
           "c = ResultStore(sys.argv[1]).claim('abc'); os.kill(os.getpid(), 9)"
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=False)
    assert proc.returncode == -9
    assert (tmp_path / ".abc.claim").exists()  # the file stays, the lock died with its holder
    claim = store.claim("abc")
    assert claim is not None
    claim.release()


def test_old_temporary_files_are_cleaned_and_fresh_ones_kept(tmp_path):
    store = ResultStore(tmp_path)
    old, fresh = tmp_path / ".abc.x1.tmp", tmp_path / ".abd.x2.tmp"
    old.write_text("{")
    fresh.write_text("{")
    os.utime(old, (0, 0))
    assert store.clean_temporary_files() == 1
    assert not old.exists() and fresh.exists()


def test_three_processes_on_one_directory_run_each_spec_exactly_once(tmp_path):
    results = tmp_path / "res"
    argv = [sys.executable, "-m", "benchsuite.cli", "run", "--suite", "smoke", "--tasks", "digits_mlp",
            "--optimizers", "sgd,adam,kfgn-kfra", "--steps", "3", "--workers", "1", "--no-report",
            "--results", str(results)]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    ran = []
    for out, _ in outs:
        line = next(x for x in out.splitlines() if "runs: ran" in x)
        ran.append(int(line.split("ran ")[1].split()[0]))
    records = list(results.glob("*.json"))
    assert sum(ran) == len(records) == 18  # 3 activations x 3 columns x 2 seeds, each run by one process
    assert len({json.loads(p.read_text())["run_id"] for p in records}) == 18
    assert not [p for p in results.iterdir() if p.name.endswith((".claim", ".tmp"))]
