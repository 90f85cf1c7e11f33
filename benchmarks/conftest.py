"""pytest-benchmark set-up: one CPU thread for every benchmark in this folder.

``pytest benchmarks/...`` loads this file before the benchmark modules, so the OpenMP/MKL
variables are set before torch's thread pools start, and torch's intra-op threads are
pinned again before each benchmark (a test or plugin may have changed them). Unpinned, on
a shared 2-core machine, an SGD step once "cost" 61 gradients: the timings measured the
other processes. ``BENCHSUITE_BENCH_THREADS`` sets another count (e.g. a whole idle box).

asv imports every module of ``benchmarks/`` too, so its environments install pytest
(``asv.conf.json``).
"""

from __future__ import annotations

import logging
import os

THREADS = int(os.environ.get("BENCHSUITE_BENCH_THREADS", "1"))
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(THREADS)

import pytest
import torch

log = logging.getLogger(__name__)


def pytest_configure(config: object) -> None:
    """Pin torch's CPU threads once the session starts."""
    torch.set_num_threads(THREADS)
    log.info("benchmarks: torch uses %d CPU thread(s)", torch.get_num_threads())


def pytest_runtest_setup(item: object) -> None:
    """Pin the threads again before each benchmark."""
    torch.set_num_threads(THREADS)


def pytest_report_header(config: object) -> list[str]:
    """Show the thread count in the session header, so saved runs say how they were timed."""
    threads, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    return [f"benchsuite benchmarks: torch.get_num_threads() = {threads} (OMP_NUM_THREADS={omp})"]


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config: object, machine_info: dict) -> None:
    """Record the thread count in pytest-benchmark's JSON (``machine_info.torch_threads``)."""
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
