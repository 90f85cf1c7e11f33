"""The built-in plugins install under ``benchsuite.`` and nowhere else.

``tasks/`` and ``optimizers/`` are top-level folders of the repository, but generic
top-level module names would collide with a user's own ``tasks.py`` or
``optimizers/`` package: the built-ins must be found from such a directory, and no
module may be importable under two names.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def user_project(tmp_path: Path) -> Path:
    """A directory like an Invoke/Celery project: its own ``tasks.py`` and ``optimizers/``."""
    (tmp_path / "tasks.py").write_text("from invoke import task  # a user's own module\n")
    (tmp_path / "optimizers").mkdir()
    (tmp_path / "optimizers" / "__init__.py").write_text("USER_OPTIMIZERS = True\n")
    return tmp_path


def test_cli_finds_builtins_from_a_directory_with_its_own_tasks_and_optimizers(user_project):
    code = textwrap.dedent("""
        import sys
        from benchsuite.cli import main
        sys.exit(main(["list"]))
    """)
    out = _python(code, user_project)
    assert out.returncode == 0, out.stderr
    for name in ("digits_mlp", "curves_autoencoder", "kfgn", "hf", "diag_gn", "adam"):
        assert name in out.stdout
    assert "tasks" not in out.stderr.lower()


def test_dry_run_of_a_builtin_suite_from_a_user_project(user_project):
    code = "import sys; from benchsuite.cli import main; sys.exit(main(['run', '--suite', 'smoke', '--dry-run']))"
    out = _python(code, user_project)
    assert out.returncode == 0, out.stderr
    assert "digits_mlp" in out.stdout


@pytest.mark.parametrize("cwd", ["repo", "elsewhere"])
@pytest.mark.parametrize("name", ["tasks", "optimizers", "tasks.digits", "optimizers.kfgn"])
def test_builtin_folders_are_not_top_level_packages(name, cwd, tmp_path):
    out = _python(f"import {name}", REPO if cwd == "repo" else tmp_path)
    assert out.returncode != 0
    assert "ModuleNotFoundError" in out.stderr or "benchsuite." in out.stderr, out.stderr


def test_builtins_import_under_benchsuite(tmp_path):
    code = textwrap.dedent("""
        import sys
        import benchsuite.tasks.digits, benchsuite.optimizers.kfgn
        dup = [m for m in sys.modules if m.split('.')[0] in ('tasks', 'optimizers')]
        assert not dup, dup
        print(benchsuite.tasks.digits.DigitsMLP.__module__)
    """)
    out = _python(code, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "benchsuite.tasks.digits"
