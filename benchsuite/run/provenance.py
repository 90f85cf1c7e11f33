"""Provenance captured into every record: code version, packages, device, host."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

import torch

_PACKAGES = ("benchsuite", "torch", "numpy", "pandas", "scikit-learn")


@functools.lru_cache(maxsize=1)
def git_state() -> dict[str, Any]:
    """Commit and dirty flag of the checkout benchsuite runs from (``unknown`` outside git)."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip() != ""
        return {"git_commit": sha, "git_dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "unknown", "git_dirty": None}


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def capture(device: torch.device) -> dict[str, Any]:
    """A dict of provenance facts for ``device``."""
    info: dict[str, Any] = {
        **git_state(),
        "versions": {p: _version(p) for p in _PACKAGES},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "cuda": torch.version.cuda,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cudnn"] = torch.backends.cudnn.version()
        info["visible_gpus"] = os.environ.get("CUDA_VISIBLE_DEVICES")
        # set by the executor: other runs used this GPU at the same time (per-second comparisons suffer)
        info["gpu_shared"] = os.environ.get(GPU_SHARED_ENV) == "1"
    info["worker_pool"] = os.environ.get(WORKERS_ENV) is not None
    return info


GPU_SHARED_ENV = "BENCHSUITE_GPU_SHARED"
WORKERS_ENV = "BENCHSUITE_WORKERS"
