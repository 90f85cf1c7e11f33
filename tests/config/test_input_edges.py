"""Every bad input the reliability test found is one line naming the key and the valid choices."""

from __future__ import annotations

import pytest

from benchsuite.cli import main
from benchsuite.config.suite import load_suite

BASE = 'tasks = ["digits_mlp"]\nsize = "tiny"\n'

CASES = [
    ('size = {}\n', "Invalid size in suite 'mine': {}"),
    ('optimizers = [{name = "sgd", label = ["a"]}]\n', "Invalid label of optimizer column 'sgd'"),
    ('optimizers = [{name = "sgd", hparams = 5}]\n', "Invalid hparams of optimizer column 'sgd'"),
    ('optimizers = ["sgd"]\n[hparams.sgdd]\nlr = 1.0\n', "[hparams.sgdd] in suite 'mine' names no optimizer"),
    ('optimizers = [{name = "sgd", label = "a"}, {name = "adam", label = "a"}]\n', "Duplicate optimizer label(s) ['a']"),
    ('optimizers = []\n', "no optimizer column"),
    ('seeds = []\n', "Invalid seeds in suite 'mine': []"),
    ('seeds = [9223372036854775808]\n', "integers in [0, 2**63)"),
    ('seeds = [1, 1]\n', "distinct"),
    ('activations = []\n', "Invalid activations in suite 'mine': []"),
    ('timeout_s = "soon"\n', "Invalid timeout_s: 'soon'"),
    ('timeout_s = -1\n', "Invalid timeout_s: -1"),
    ('stop_at_target = "yes"\n', "Invalid stop_at_target: 'yes' (need true or false)"),
    ('eval_train_examples = -3\n', "Invalid eval_train_examples: -3"),
    ('optimizers = ["sgd"]\n[hparams.sgd]\nlr = true\n', "Invalid lr: True (need a number)"),
    ('optimizers = ["sgd"]\n[hparams.sgd]\nnesterov = "no"\n', "Invalid nesterov: 'no' (need true or false)"),
    ('activations = ["maxout"]\nactivation_options = { pieces = -2 }\n', "Invalid maxout pieces: -2"),
    ('optimizers = ["sgd"]\n[tuning]\noptimizers = ["sgd"]\ntrials = 10000000\n', "Invalid tuning trials: 10000000"),
    ('threads = true\n', "Invalid threads in suite 'mine': True"),
]


@pytest.mark.parametrize(("body", "message"), CASES, ids=[c[0].split("\n")[-2][:30] or c[0][:30] for c in CASES])
def test_bad_suite_values_are_one_line_errors_before_anything_runs(tmp_path, capsys, body, message):
    path = tmp_path / "mine.toml"
    path.write_text(BASE + body if not body.startswith(("size", "tasks")) else body + 'tasks = ["digits_mlp"]\n')
    code = main(["run", "--suite", str(path), "--dry-run", "--results", str(tmp_path / "res")])
    out, err = capsys.readouterr()
    assert code == 2, out
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "res").exists()


def test_a_suite_file_whose_name_would_leave_the_results_folder_is_refused(tmp_path):
    path = tmp_path / "...toml"
    path.write_text(BASE)
    with pytest.raises(Exception, match="Invalid suite file name '...toml'"):
        load_suite(str(path))


@pytest.mark.parametrize("threads", ["0", "-2", "x"])
def test_threads_must_be_positive(capsys, threads):
    with pytest.raises(SystemExit) as info:
        main(["run", "--suite", "smoke", "--dry-run", "--threads", threads])
    assert info.value.code == 2 and "expected a positive integer" in capsys.readouterr().err


def test_report_on_a_file_says_so_and_on_an_empty_directory_warns(tmp_path, capsys, caplog):
    f = tmp_path / "not_a_dir.json"
    f.write_text("{}")
    assert main(["report", str(f)]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty), "--no-plots"]) == 0
    assert "no comparison runs" in caplog.text
