"""The curvature engine depends only on torch (and numpy/scipy): no other benchsuite module loads."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import benchsuite

ENGINE = Path(benchsuite.__file__).parent / "curvature"
MODULES = ["benchsuite.curvature"] + sorted(
    f"benchsuite.curvature.{m.name}" for m in pkgutil.iter_modules([str(ENGINE)])
)

# In a fresh interpreter, import each module in turn and record the benchsuite modules
# loaded so far: a module outside the engine is blamed on the import that brought it in.
_SCRIPT = """
import importlib, json, sys
seen = {}
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
    seen[name] = sorted(m for m in sys.modules if m.split('.')[0] == 'benchsuite')
print(json.dumps(seen))
"""


def test_engine_imports_nothing_else_from_benchsuite():
    assert {"benchsuite.curvature.model", "benchsuite.curvature.linalg", "benchsuite.curvature.errors"} <= set(MODULES)
    out = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(MODULES)], capture_output=True, text=True,
                         check=True, timeout=300)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert list(seen) == MODULES
    for name, loaded in seen.items():
        assert name in loaded
        outside = [m for m in loaded if m != "benchsuite" and not m.startswith("benchsuite.curvature")]
        assert outside == [], f"importing {name} loaded {outside}"


def test_the_check_can_fail():
    """The same script sees a module outside the engine when one is imported."""
    out = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(["benchsuite.curvature", "benchsuite.errors"])],
                         capture_output=True, text=True, check=True, timeout=300)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert "benchsuite.errors" not in seen["benchsuite.curvature"] and "benchsuite.errors" in seen["benchsuite.errors"]
