"""Fuzzing suite files and CLI arguments: every input is accepted or gives one clean line, never a traceback.

Suite files are built from the keys a suite file has (and a few it must not have),
with values drawn from every TOML type, nested tables included; CLI calls combine the
``run``/``report``/``list`` flags with arbitrary values. The property: ``load_suite``
(and the dry run of what it accepts) returns or raises a :class:`BenchsuiteError`;
``benchsuite`` exits 0 or 2 with a one-line error and no traceback.
"""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchsuite.cli import main
from benchsuite.config.suite import _KEYS, load_suite
from benchsuite.curvature.errors import CurvatureError
from benchsuite.errors import BenchsuiteError

NAMES = ["digits_mlp", "sgd", "adam", "kfgn", "hf", "relu", "maxout", "tiny", "default", "all", "sgdd", "cpu",
         "valid_loss", "train_loss", "kfra", "full", ""]
scalars = (st.sampled_from(NAMES) | st.text(string.printable, max_size=6) | st.booleans()
           | st.integers(min_value=-3, max_value=2**64) | st.floats(allow_nan=False, allow_infinity=False, width=32))
toml_values = st.recursive(scalars, lambda c: st.lists(c, max_size=3)
                           | st.dictionaries(st.sampled_from([*NAMES, "name", "label", "hparams", "lr", "steps",
                                                              "pieces", "trials", "optimizers", "batch_size"]),
                                             c, max_size=3), max_leaves=8)
suite_tables = st.dictionaries(st.sampled_from(sorted(_KEYS | {"bogus"})), toml_values, max_size=6)


def _toml(value, key: str | None = None) -> str:
    """A TOML inline value (tomllib reads it back)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, int) else f"{value!r}".replace("inf", "1e308")
    if isinstance(value, str):
        return '"' + value.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{" + ", ".join(f'"{k}" = {_toml(v)}' for k, v in value.items()) + "}"


def _write(tmp_path, table: dict) -> str:
    path = tmp_path / "fuzzed.toml"
    path.write_text("\n".join(f'"{k}" = {_toml(v)}' for k, v in table.items()) + "\n", encoding="utf-8")
    return str(path)


@settings(max_examples=400)
@given(suite_tables)
def test_any_suite_file_loads_or_raises_one_benchsuite_error(tmp_path_factory, table):
    path = _write(tmp_path_factory.mktemp("suite"), {"tasks": ["digits_mlp"], "size": "tiny", **table})
    try:
        suite = load_suite(path)
        if len(suite) <= 200:  # what loads must also expand into valid specs (the dry run)
            suite.specs()
            suite.trial_specs()
    except (BenchsuiteError, CurvatureError) as exc:
        assert str(exc)


FLAGS = ["--tasks", "--activations", "--optimizers", "--seeds", "--data-seed", "--size", "--steps", "--epochs",
         "--seconds", "--device", "--statistics", "--stats-every", "--eval-every", "--threads"]
flag_values = st.sampled_from(["0", "-1", "1", "2.5", "1e9", "nan", "tiny", "digits_mlp", "relu,maxout", "sgd,sgd",
                               "adam,kfgn-kfra", "cuda", "cuda:7", "full", "", ",", "a\nb", "9" * 30])


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(FLAGS), flag_values), max_size=4))
def test_any_run_flags_dry_run_or_exit_2_on_one_line(tmp_path_factory, capsys, flags):
    capsys.readouterr()  # the fixture is shared across examples: start from empty streams
    argv = ["run", "--suite", "smoke", "--dry-run", "--results", str(tmp_path_factory.mktemp("res"))]
    for flag, value in flags:
        argv += [flag, value]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    out, err = capsys.readouterr()
    assert code in (0, 2), (argv, err)
    assert "Traceback" not in out + err
    if code == 2:
        assert err.count("\n") == 1, err


@pytest.mark.slow
@settings(max_examples=5_000)
@given(suite_tables)
def test_many_more_suite_files(tmp_path_factory, table):
    test_any_suite_file_loads_or_raises_one_benchsuite_error.hypothesis.inner_test(tmp_path_factory, table)
