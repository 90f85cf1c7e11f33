"""Checkpoints of a run in progress: save every K steps, resume after a kill.

A checkpoint holds everything the rest of a run depends on: the model's and the
optimizer's ``state_dict``, every RNG state (Python, NumPy, torch CPU and CUDA), the
batch sampler's position and generator, the training-time total, the initial loss the
divergence test compares against, and the record's logs so far. It is written to a
temporary file and renamed (atomic), and read back with ``torch.load(weights_only=True)``
only, so a checkpoint file cannot run code. A resumed run's record equals the
uninterrupted run's except for timings (tested on the CPU). The executor removes the
checkpoint once the record is written.

Not carried over: a curvature probe's own random stream restarts (a run with
``statistics`` other than ``none`` resumes with fresh probe vectors).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchsuite.records.store import atomic_write

__all__ = ["checkpoint_path", "load_checkpoint", "save_checkpoint"]

VERSION = 1


def checkpoint_path(directory: str | os.PathLike[str], run_id: str) -> Path:
    return Path(directory) / f"{run_id}.pt"


def _rng_state() -> dict[str, Any]:
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, pystate, pygauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "gauss": float(gauss)},
        "python": {"version": version, "state": list(pystate), "gauss": pygauss},
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def save_checkpoint(path: Path, *, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    batches: Any, timer_total: float, initial: float, logs: dict[str, Any]) -> None:
    """Write the state after ``step`` atomically to ``path``."""
    state = {
        "version": VERSION, "step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "batches": batches.state_dict(), "timer_total": timer_total, "initial": initial, "logs": logs,
        "rng": _rng_state(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: torch.save(state, fh))


def load_checkpoint(path: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    batches: Any) -> dict[str, Any] | None:
    """Restore model, optimizer, sampler and RNGs from ``path``; the rest of the state, or None if absent.

    A checkpoint that cannot be read (truncated, another version) is ignored: the run
    starts from step 0, which is always correct, only slower.
    """
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("version") != VERSION:
            return None
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        batches.load_state_dict(state["batches"])
        _set_rng_state(state["rng"])
    except Exception:  # noqa: BLE001 - any unreadable checkpoint means: start again
        return None
    return state
