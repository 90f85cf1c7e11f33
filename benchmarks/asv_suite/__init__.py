"""The asv suite (``benchmark_dir`` of ``asv.conf.json``): only the asv benchmarks.

asv imports every module of its benchmark folder, from the working tree, against the
commit it installed. The pytest-benchmark files of ``benchmarks/`` may use APIs newer than
an older commit (or need pytest and peers), so they live outside this package and an
``asv run`` of an older commit never imports them.

The repository root is *appended* to ``sys.path`` so that ``benchmarks.helpers`` (shared
with pytest-benchmark) imports, while ``benchsuite`` still resolves to the installed commit
under test in asv's virtualenv (site-packages come first).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.append(_ROOT)

import benchsuite

logging.getLogger(__name__).info("asv suite: benchmarking benchsuite from %s", Path(benchsuite.__file__).parent)
