"""The asv configuration builds the commit under test with pinned threads, and the asv
benchmarks cover every optimizer column, count optimizer-state bytes and track deterministic losses."""

from __future__ import annotations

import importlib
import math
import os
import pkgutil
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
asv_util = pytest.importorskip("asv.util")


@pytest.fixture
def bench_modules():
    """Import the benchmark modules (they pin threads to one) and restore this process's settings after."""
    threads = torch.get_num_threads()
    env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    try:
        helpers = importlib.import_module("benchmarks.helpers")
        asv_bench = importlib.import_module("benchmarks.asv_bench")
        yield helpers, asv_bench
    finally:
        torch.set_num_threads(threads)
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_asv_builds_and_installs_the_commit_under_test():
    conf = asv_util.load_json(str(ROOT / "asv.conf.json"), js_comments=True)
    assert conf["environment_type"] == "virtualenv"  # not "existing": that measures the editable install
    assert any("pip wheel" in c and "{build_dir}" in c for c in conf["build_command"])
    assert any("{wheel_file}" in c and "--force-reinstall" in c and "--no-deps" in c for c in conf["install_command"])
    assert conf["matrix"]["env_nobuild"] == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    assert "torch" in conf["matrix"]["req"]
    # only the asv suite is imported by asv (the pytest-benchmark files may use newer APIs)
    assert conf["benchmark_dir"] == "benchmarks/asv_suite" and conf["results_dir"].startswith(".asv")


def test_every_optimizer_column_is_benchmarked(bench_modules):
    helpers, asv_bench = bench_modules
    assert list(helpers.COLUMNS) == ["sgd", "adam", "rmsprop", "kfgn-kfra", "kfgn-kflr", "kfgn-kfac", "hf",
                                     "diag_gn", "diag_gn-exact"]
    for cls in (asv_bench.OptimizerStep, asv_bench.Convergence):
        assert cls.params == (helpers.TASKS_TINY, list(helpers.COLUMNS))
    assert asv_bench.Gradient.params == helpers.TASKS_TINY  # a gradient does not depend on the optimizer
    assert asv_bench.Convergence.unit == "loss"
    assert not any(name.startswith("peakmem_") for cls in (asv_bench.OptimizerStep, asv_bench.Gradient,
                                                           asv_bench.Convergence) for name in vars(cls))


def test_the_diag_gn_columns_differ_in_their_estimator(bench_modules):
    helpers, _ = bench_modules
    from benchsuite.optimizers.diag_gn import DiagGNConfig

    assert DiagGNConfig().estimator == "mc"  # the registry default: a "diag_gn-mc" column would repeat diag_gn
    assert helpers.COLUMNS["diag_gn"] == ("diag_gn", {})
    assert helpers.COLUMNS["diag_gn-exact"] == ("diag_gn", {"estimator": "exact"})


def test_step_benchmark_pins_threads_and_counts_state_bytes(bench_modules):
    helpers, asv_bench = bench_modules
    bench = asv_bench.OptimizerStep()
    data = {"digits_mlp": helpers.make_data("digits_mlp")}
    sizes = {}
    for column in ("sgd", "adam", "kfgn-kfac"):
        torch.set_num_threads(2)
        bench.setup(data, "digits_mlp", column)
        assert torch.get_num_threads() == 1
        bench.time_step(data, "digits_mlp", column)
        sizes[column] = bench.track_state_bytes(data, "digits_mlp", column)
    n_params = sum(p.numel() for p in bench.bench.model.parameters())
    assert sizes["sgd"] == 4 * n_params  # one momentum buffer, float32
    assert sizes["adam"] >= 2 * 4 * n_params  # two moments (and per-parameter step counters)
    assert sizes["kfgn-kfac"] > sizes["adam"]  # Kronecker factors


def test_state_bytes_counts_shared_tensors_once(bench_modules):
    helpers, _ = bench_modules
    t = torch.zeros(10)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    opt.state["a"] = {"x": t, "y": [t, torch.zeros(2, dtype=torch.float64)]}
    assert helpers.state_bytes(opt) == 40 + 16


def test_convergence_track_is_deterministic(bench_modules):
    helpers, _ = bench_modules
    name, hparams = helpers.COLUMNS["adam"]
    a = helpers.loss_after("digits_mlp", name, 5, hparams=hparams)
    b = helpers.loss_after("digits_mlp", name, 5, hparams=hparams)
    assert a == b and not math.isnan(a)


def test_asv_discovers_only_the_asv_suite(bench_modules, monkeypatch):
    discovery = pytest.importorskip("asv_runner.discovery")
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # as asv's importer finds the suite's package
    names = sorted(b.name for b in discovery.disc_benchmarks(str(ROOT / "benchmarks" / "asv_suite")))
    assert names == ["optimizers.Convergence.track_train_loss", "optimizers.Gradient.time_gradient",
                     "optimizers.OptimizerStep.time_step", "optimizers.OptimizerStep.track_state_bytes"]
    # asv imports the modules of this folder only, never the pytest-benchmark files beside it
    assert [m.name for m in pkgutil.iter_modules([str(ROOT / "benchmarks" / "asv_suite")])] == ["optimizers"]
