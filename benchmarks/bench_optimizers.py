"""pytest-benchmark: seconds per optimizer step relative to an Adam step, and optimizer memory.

Run with ``pytest benchmarks/bench_optimizers.py --benchmark-enable --benchmark-json=opt.json``
and turn the JSON into a ratio table with ``python benchmarks/report_optimizers.py opt.json``.

Every optimizer takes steps on the same model and fixed batch (``BATCH`` examples of
the task's training split, ReLU), at default sizes: the digits MLP (64-128-128-10)
and the CURVES autoencoder (784-400-200-100-50-25-6, mirrored). ``extra_info``
records the bytes held in the optimizer's state and, on CUDA, the peak memory of a
step. Timings are taken with ``benchmark.pedantic`` (one warm-up step, then
``ROUNDS`` timed steps); the device is CUDA when available.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.helpers import state_bytes, step_bench

ROUNDS = 5
BATCH = 256
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
HF_CPU = {"max_cg_iters": 50}  # CPU-sized HF; the GPU run uses Martens' 250

CASES = [
    ("sgd", {}), ("adam", {}), ("rmsprop", {}),
    ("kfgn", {"variant": "kfra"}), ("kfgn", {"variant": "kflr"}), ("kfgn", {"variant": "kfac"}),
    ("hf", {} if DEVICE == "cuda" else HF_CPU), ("diag_gn", {}), ("diag_gn", {"estimator": "exact"}),
]


def _id(case) -> str:
    name, hp = case
    return name + "".join(f"-{v}" for k, v in hp.items() if k in ("variant", "estimator"))


@pytest.mark.parametrize("task", ["digits_mlp", "curves_autoencoder"])
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_step(benchmark, task, case):
    name, hp = case
    bench = step_bench(task, name, hparams=hp, batch_size=BATCH, device=DEVICE)
    benchmark.group = task
    bench.step()  # warm-up: allocations, first factors
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()
    benchmark.pedantic(bench.step, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    benchmark.extra_info["state_bytes"] = state_bytes(bench.optimizer)
    benchmark.extra_info["optimizer"] = _id(case)
    if DEVICE == "cuda":
        benchmark.extra_info["peak_cuda_bytes"] = torch.cuda.max_memory_allocated()


@pytest.mark.parametrize("task", ["digits_mlp", "curves_autoencoder"])
def test_gradient(benchmark, task):
    bench = step_bench(task, "sgd", batch_size=BATCH, device=DEVICE)
    benchmark.group = task
    benchmark.extra_info["optimizer"] = "gradient"
    benchmark.pedantic(bench.gradient, rounds=ROUNDS, iterations=1, warmup_rounds=1)
