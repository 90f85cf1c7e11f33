"""GPU readiness in one command: run it whenever a CUDA machine is at hand, paste its summary.

    python benchmarks/gpu_check.py --out gpu_check.md

Four checks, each a section of one markdown summary (written even when a check fails,
so a short loan of a GPU is never wasted):

1. **CUDA tests**: ``pytest -m gpu`` (the tests that skip on a CPU), pass/fail counts.
2. **CUDA vs CPU agreement, every optimizer column**: the same spec (digits MLP, tiny,
   ReLU, float64, deterministic GPU mode) run on the CPU and on the GPU; the largest
   relative difference of the mini-batch loss series. In float64 the two devices should
   agree to about 1e-10 over a few steps; a large gap means a device-specific bug (a
   tensor left on the CPU, a dtype cast, a non-deterministic kernel).
3. **``gpu-quick`` with one worker per GPU**: ``benchsuite run --suite gpu-quick
   --workers <GPUs>``; outcome counts and wall time.
4. **Step-time ratios at batch 1000 on the CURVES autoencoder** (default size, ReLU):
   each optimizer step divided by an Adam step, and each curvature operation divided by
   one gradient, measured interleaved in this one process (median of ``--rounds``
   rounds after a warm-up), with the peak CUDA memory of each.

``--allow-cpu`` runs the same script on a CPU (checks 1 and 3 are skipped, sizes
shrink), which is how the tests keep the script working on machines without a GPU.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: import the checkout's benchmarks package
    sys.path.insert(0, str(ROOT))

from benchmarks.helpers import COLUMNS as HELPER_COLUMNS  # noqa: E402
from benchmarks.helpers import state_bytes, step_bench  # noqa: E402
from benchsuite import curvature as cv  # noqa: E402
from benchsuite.config.spec import Budget, RunSpec  # noqa: E402
from benchsuite.run.runner import run  # noqa: E402
from benchsuite.run.timing import synchronize  # noqa: E402

log = logging.getLogger("gpu_check")

# (label, registry name, hyperparameters): every labelled optimizer column, as the asv benchmarks have them.
COLUMNS: list[tuple[str, str, dict]] = [(label, name, dict(hp)) for label, (name, hp) in HELPER_COLUMNS.items()]
CURVATURE_OPS = ["ggn_vector_product", "hessian_vector_product", "diag_ggn_exact", "diag_ggn_mc", "kflr", "kfra",
                 "kfac"]


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def cuda_tests() -> list[str]:
    """Check 1: the ``gpu``-marked tests."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"],
                          cwd=ROOT, capture_output=True, text=True)
    tail = [line for line in proc.stdout.strip().splitlines() if line.strip()][-15:]
    return ["## 1. CUDA tests (`pytest -m gpu`)", "",
            f"exit status {proc.returncode} in {time.perf_counter() - t0:.0f} s", "", "```", *tail, "```"]


def agreement(device: str, steps: int) -> list[str]:
    """Check 2: each column's loss series on ``device`` against the CPU's, float64."""
    rows = []
    for label, name, hp in COLUMNS:
        spec = RunSpec(task="digits_mlp", activation="relu", optimizer=name, hparams=hp, size="tiny",
                       dtype="float64", budget=Budget(steps=steps), eval_every=steps, deterministic=True,
                       optimizer_label=label)
        cpu = run(spec)
        dev = run(RunSpec(**{**spec.__dict__, "device": device}))
        a, b = cpu.step_log["loss"], dev.step_log["loss"]
        if cpu.status != "completed" or dev.status != "completed" or len(a) != len(b):
            rows.append([label, cpu.status, dev.status, "–", "✗"])
            continue
        rel = max((abs(x - y) / max(abs(x), 1e-300) for x, y in zip(a, b)), default=0.0)
        rows.append([label, cpu.status, dev.status, f"{rel:.1e}", "✓" if rel < 1e-8 else "✗"])
    return [f"## 2. {device} vs CPU, float64, {steps} steps, deterministic mode", "",
            "Largest relative difference of the mini-batch loss series (digits MLP, tiny, ReLU).", "",
            *_table(["column", "CPU", device, "max rel. diff", "< 1e-8"], rows)]


def gpu_quick(n_gpus: int, results: Path) -> list[str]:
    """Check 3: ``gpu-quick`` with one worker per GPU."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "benchsuite", "run", "--suite", "gpu-quick", "--workers", str(n_gpus),
                           "--results", str(results), "--no-report"], cwd=ROOT, capture_output=True, text=True)
    tail = [line for line in (proc.stdout + proc.stderr).strip().splitlines() if line.strip()][-8:]
    return [f"## 3. `gpu-quick` with `--workers {n_gpus}`", "",
            f"exit status {proc.returncode} in {time.perf_counter() - t0:.0f} s (results: `{results}`)", "",
            "```", *tail, "```"]


def _timed(fns: dict[str, Callable[[], object]], device: torch.device, rounds: int) -> dict[str, tuple[float, int]]:
    """Median seconds and peak CUDA bytes of each function, rounds interleaved so load drifts hit all alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    peaks: dict[str, int] = {}
    for fn in fns.values():  # warm-up: allocator, library handles, first factors
        fn()
    synchronize(device)
    for _ in range(rounds):
        for key, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            synchronize(device)
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            times[key].append(time.perf_counter() - t0)
            if device.type == "cuda":
                peaks[key] = max(peaks.get(key, 0), int(torch.cuda.max_memory_allocated(device)))
    return {k: (statistics.median(v), peaks.get(k, 0)) for k, v in times.items()}


def step_ratios(device: str, batch: int, size: str, rounds: int) -> list[str]:
    """Check 4: optimizer steps / Adam step and curvature operations / gradient, one process."""
    dev = torch.device(device)
    # HF at its published defaults on a GPU (the asv columns carry CPU-sized CG settings)
    benches = {label: step_bench("curves_autoencoder", name, hparams={} if name == "hf" and dev.type == "cuda" else hp,
                                 batch_size=batch, size=size, device=device)
               for label, name, hp in COLUMNS}
    steps = _timed({label: b.step for label, b in benches.items()}, dev, rounds)
    adam = steps["adam"][0]
    rows = [[label, f"{t * 1e3:.2f}", f"{t / adam:.2f}", f"{state_bytes(benches[label].optimizer) / 2**20:.1f}",
             f"{peak / 2**20:.0f}" if peak else "–"] for label, (t, peak) in steps.items()]
    out = [f"## 4. Step time at batch {batch}, CURVES autoencoder ({size}, ReLU), {device}", "",
           f"Median of {rounds} interleaved rounds after a warm-up.", "",
           *_table(["column", "ms/step", "× Adam step", "optimizer state (MiB)", "peak CUDA (MiB)"], rows)]
    b = benches["sgd"]
    model, loss_fn, (x, y) = b.model, b.closure.loss_fn, (b.closure.inputs, b.closure.targets)
    params = [p for p in model.parameters()]
    v = [torch.randn_like(p) for p in params]
    gen = torch.Generator(device=dev).manual_seed(0)
    args = (model, loss_fn, x, y)
    ops: dict[str, Callable[[], object]] = {
        "gradient": lambda: torch.autograd.grad(loss_fn(model(x), y), params),
        "ggn_vector_product": lambda: cv.ggn_vector_product(*args, v),
        "hessian_vector_product": lambda: cv.hessian_vector_product(*args, v),
        "diag_ggn_exact": lambda: cv.diag_ggn_exact(*args),
        "diag_ggn_mc": lambda: cv.diag_ggn_mc(*args, generator=gen),
        "kflr": lambda: cv.kflr(*args), "kfra": lambda: cv.kfra(*args),
        "kfac": lambda: cv.kfac(*args, generator=gen),
    }
    timed = _timed(ops, dev, rounds)
    grad = timed["gradient"][0]
    rows = [[k, f"{t * 1e3:.2f}", f"{t / grad:.2f}", f"{peak / 2**20:.0f}" if peak else "–"]
            for k, (t, peak) in timed.items()]
    return out + ["", "Curvature operations on the same batch:", "",
                  *_table(["operation", "ms", "× gradient", "peak CUDA (MiB)"], rows)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check.md"), help="markdown summary to write")
    parser.add_argument("--allow-cpu", action="store_true", help="run on the CPU when no GPU is visible (tests)")
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds per operation")
    parser.add_argument("--agreement-steps", type=int, default=5, help="steps of the CUDA-vs-CPU agreement runs")
    parser.add_argument("--results", type=Path, help="results directory of gpu-quick (default: a temporary one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    n_gpus = torch.cuda.device_count()
    if n_gpus == 0 and not args.allow_cpu:
        print("gpu_check: no CUDA device visible (use --allow-cpu to exercise the script on a CPU)", file=sys.stderr)
        return 2
    device = "cuda" if n_gpus else "cpu"
    gpu = torch.cuda.get_device_name(0) if n_gpus else "none"
    parts = ["# GPU check", "",
             f"{n_gpus} GPU(s): {gpu}; torch {torch.__version__}, CUDA {torch.version.cuda}, "
             f"cuDNN {torch.backends.cudnn.version() if n_gpus else '–'}; "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", ""]
    sections: list[tuple[str, Callable[[], list[str]]]] = [
        ("agreement", lambda: agreement(device, args.agreement_steps)),
        ("step ratios", lambda: step_ratios(device, 1000 if n_gpus else 64, "default" if n_gpus else "tiny",
                                            args.rounds)),
    ]
    if n_gpus:
        with tempfile.TemporaryDirectory() as tmp:
            results = args.results or Path(tmp) / "gpu-quick"
            sections = [("CUDA tests", cuda_tests), *sections, ("gpu-quick", lambda: gpu_quick(n_gpus, results))]
            return _write(parts, sections, args.out)
    return _write(parts, sections, args.out)


def _write(parts: list[str], sections: list[tuple[str, Callable[[], list[str]]]], out: Path) -> int:
    failed = 0
    for name, section in sections:
        log.info("gpu_check: %s …", name)
        try:
            parts += section() + [""]
        except Exception as exc:  # a failing check is reported, and the others still run
            failed += 1
            parts += [f"## {name}: FAILED", "", f"`{type(exc).__name__}: {exc}`", ""]
        out.write_text("\n".join(parts) + "\n", encoding="utf-8")  # after every section: nothing lost
    log.info("gpu_check: wrote %s", out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
