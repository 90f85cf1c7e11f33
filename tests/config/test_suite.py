"""Suites and the local executor: TOML parsing errors, narrowing, the smoke suite's grid, resumable runs."""

from __future__ import annotations

import itertools
import sys
import textwrap
from importlib import resources

import pytest

import benchsuite.run.executor as executor
from benchsuite.config.spec import Budget, RunSpec
from benchsuite.config.suite import OptimizerChoice, builtin_suites, load_suite, parse_suite
from benchsuite.errors import BenchsuiteError, ConfigError, UnknownNameError
from benchsuite.records.store import ResultStore
from benchsuite.run.executor import run_local

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TINY = {"tasks": ["digits_mlp"], "activations": ["relu"], "optimizers": ["sgd"], "seeds": [0], "size": "tiny",
        "eval_every": 2, "budget": {"steps": 2}}


def _write(tmp_path, text: str, name: str = "mine.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# --------------------------------------------------------------------------------------
# Parsing errors name the problem and the valid choices
# --------------------------------------------------------------------------------------

PARSE_ERRORS = [
    pytest.param({"optimiser": ["sgd"]}, ConfigError, ["Unknown key(s) ['optimiser']", "optimizers", "seeds"],
                 id="unknown-key"),
    pytest.param({"seeds": [-1]}, ConfigError, ["Invalid seeds", "-1", "integers in [0, 2**63)"], id="seeds=-1"),
    pytest.param({"seeds": [0.5]}, ConfigError, ["Invalid seeds", "0.5"], id="seeds=float"),
    pytest.param({"seeds": 3}, ConfigError, ["Invalid seeds", "3"], id="seeds=not-a-list"),
    pytest.param({"tasks": ["digits"]}, UnknownNameError, ["Unknown task 'digits'", "curves_autoencoder", "digits_mlp"],
                 id="unknown-task"),
    pytest.param({"activations": ["relu6"]}, UnknownNameError,
                 ["Unknown activation 'relu6'", "leaky_relu", "relu", "tanh"], id="unknown-activation"),
    pytest.param({"optimizers": ["sgdd"]}, UnknownNameError, ["Unknown optimizer 'sgdd'", "adam", "rmsprop", "sgd"],
                 id="unknown-optimizer"),
    pytest.param({"optimizers": [{"name": "nope", "label": "x"}]}, UnknownNameError, ["Unknown optimizer 'nope'"],
                 id="unknown-optimizer-table"),
    pytest.param({"optimizers": [{"name": "sgd", "lr": 0.1}]}, ConfigError,
                 ["Unknown optimizer field(s) ['lr']", "hparams, label, name"], id="optimizer-table-extra-field"),
    pytest.param({"optimizers": [3]}, ConfigError, ["Invalid optimizer entry", "3"], id="optimizer-entry-int"),
    pytest.param({"budget": {"step": 10}}, ConfigError, ["Unknown budget field(s) ['step']", "epochs, seconds, steps"],
                 id="budget-unknown-field"),
    pytest.param({"budget": {"steps": 0}}, ConfigError, ["Invalid budget steps: 0"], id="budget-steps=0"),
    pytest.param({"eval_every": 0}, ConfigError, ["Invalid eval_every: 0"], id="eval_every=0"),
    pytest.param({"dtype": "half"}, ConfigError, ["Invalid dtype: half", "float32, float64"], id="dtype=half"),
    pytest.param({"data_seed": -1}, ConfigError, ["Invalid data_seed: -1", "an integer in [0, 2**63)"], id="data_seed=-1"),
    pytest.param({"data_seed": "one"}, ConfigError, ["Invalid data_seed in suite 'mine'", "an integer"],
                 id="data_seed=str"),
]


@pytest.mark.parametrize("overrides, error, fragments", PARSE_ERRORS)
def test_parse_errors_name_problem_and_choices(overrides, error, fragments):
    with pytest.raises(error) as info:
        parse_suite("mine", {**TINY, **overrides})
    for fragment in fragments:
        assert fragment in str(info.value)


EXPAND_ERRORS = [
    pytest.param({"size": "huge"}, ["Unknown size 'huge'", "default", "tiny"], id="size=huge"),
    pytest.param({"hparams": {"sgd": {"lr": -1.0}}}, ["Invalid learning rate: -1.0"], id="bad-hparam-value"),
    pytest.param({"hparams": {"sgd": {"learning_rate": 0.1}}}, ["['learning_rate']", "lr, momentum"],
                 id="unknown-hparam"),
    pytest.param({"task_options": {"digits_mlp": {"widht": 3}}}, ["['widht']", "width"], id="unknown-task-option"),
    pytest.param({"activation_options": {"slope": 0.3}}, ["['slope']", "activation 'relu'"],
                 id="option-for-wrong-activation"),
]


@pytest.mark.parametrize("overrides, fragments", EXPAND_ERRORS)
def test_values_are_validated_when_expanded_before_running(overrides, fragments):
    suite = parse_suite("mine", {**TINY, **overrides})
    with pytest.raises(ConfigError) as info:
        suite.specs()
    for fragment in fragments:
        assert fragment in str(info.value)


WRONG_TYPES = [
    pytest.param({"tasks": 5}, id="tasks=int"),
    pytest.param({"budget": 5}, id="budget=int"),
    pytest.param({"hparams": 5}, id="hparams=int"),
    pytest.param({"device": 5}, id="device=int"),
]


@pytest.mark.parametrize("overrides", WRONG_TYPES)
def test_wrongly_typed_values_are_config_errors_not_crashes(overrides):
    """A suite file with a value of the wrong type is bad input: a BenchsuiteError the CLI can print
    on one line, not a TypeError/AttributeError traceback."""
    with pytest.raises(BenchsuiteError) as info:
        parse_suite("mine", {**TINY, **overrides}).specs()
    assert next(iter(overrides)) in str(info.value)


def test_suite_file_not_found(tmp_path):
    with pytest.raises(ConfigError, match="Suite file not found"):
        load_suite(str(tmp_path / "missing.toml"))


def test_suite_file_invalid_toml(tmp_path):
    path = _write(tmp_path, "tasks = [unclosed\n")
    with pytest.raises(ConfigError, match="Suite 'mine' is not valid TOML"):
        load_suite(str(path))


def test_unknown_builtin_suite_lists_builtins():
    with pytest.raises(UnknownNameError) as info:
        load_suite("smok")
    assert "Unknown suite 'smok'" in str(info.value)
    for name in builtin_suites():
        assert name in str(info.value)


def test_suite_file_round_trip(tmp_path):
    path = _write(tmp_path, """
        description = "mine"
        tasks = ["digits_mlp"]
        activations = "relu"
        optimizers = ["adam", { name = "sgd", label = "sgd-nesterov", hparams = { nesterov = true } }]
        seeds = [0, 3]
        size = "tiny"
        [budget]
        epochs = 0.5
        [hparams.sgd]
        lr = 0.2
        [hparams.adam]
        lr = 0.01
        [task_options.digits_mlp]
        width = 8
    """)
    suite = load_suite(str(path))
    assert suite.name == "mine" and suite.description == "mine"
    assert suite.optimizers == (OptimizerChoice("adam", "adam", {"lr": 0.01}),
                                OptimizerChoice("sgd", "sgd-nesterov", {"lr": 0.2, "nesterov": True}))
    specs = suite.specs()
    assert len(specs) == len(suite) == 4
    nesterov = [s for s in specs if s.optimizer_label == "sgd-nesterov"]
    assert {s.seed for s in nesterov} == {0, 3}
    assert all(s.hparams == {"lr": 0.2, "nesterov": True} and s.task_options == {"width": 8} for s in nesterov)
    assert all(s.budget == Budget(epochs=0.5) and s.size == "tiny" for s in specs)
    assert len({s.run_id for s in specs}) == 4


# --------------------------------------------------------------------------------------
# Narrowing and overrides
# --------------------------------------------------------------------------------------


def test_narrowing_restricts_every_axis_and_overrides_fields():
    suite = load_suite("smoke").narrow(tasks=["digits_mlp"], activations=["tanh"], optimizers=["adam"], seeds=[7],
                                       budget=Budget(steps=3), eval_every=1, size="tiny")
    specs = suite.specs()
    assert [(s.task, s.activation, s.optimizer, s.seed) for s in specs] == [("digits_mlp", "tanh", "adam", 7)]
    assert specs[0].budget == Budget(steps=3) and specs[0].eval_every == 1
    assert specs[0].hparams == {"lr": 0.003}  # the suite's hyperparameters survive narrowing


def test_narrowing_with_none_keeps_everything():
    smoke = load_suite("smoke")
    assert smoke.narrow(tasks=None, seeds=None, budget=None) == smoke


def test_narrowing_by_label_and_adding_an_optimizer_not_in_the_suite(tmp_path):
    suite = parse_suite("mine", {**TINY, "optimizers": ["sgd", {"name": "sgd", "label": "sgd-nesterov",
                                                                  "hparams": {"nesterov": True}}]})
    assert [c.label for c in suite.narrow(optimizers=["sgd-nesterov"]).optimizers] == ["sgd-nesterov"]
    assert [c.label for c in suite.narrow(optimizers=["sgd"]).optimizers] == ["sgd", "sgd-nesterov"]
    added = suite.narrow(optimizers=["rmsprop"])
    assert added.optimizers == (OptimizerChoice("rmsprop", "rmsprop"),)


@pytest.mark.parametrize(
    "kwargs, kind",
    [pytest.param({"tasks": ["nope"]}, "task", id="tasks"), pytest.param({"activations": ["nope"]}, "activation",
                                                                         id="activations"),
     pytest.param({"optimizers": ["nope"]}, "optimizer", id="optimizers")],
)
def test_narrowing_to_unknown_names_lists_valid_ones(kwargs, kind):
    with pytest.raises(UnknownNameError, match=f"Unknown {kind} 'nope'. Valid choices: "):
        load_suite("smoke").narrow(**kwargs)


def test_narrowing_override_values_are_validated():
    with pytest.raises(ConfigError, match="Invalid eval_every: 0"):
        load_suite("smoke").narrow(eval_every=0)


# --------------------------------------------------------------------------------------
# The built-in smoke suite
# --------------------------------------------------------------------------------------


def _smoke_toml() -> dict:
    return tomllib.loads(resources.files("benchsuite.suites").joinpath("smoke.toml").read_text(encoding="utf-8"))


def _labels(items) -> list[str]:
    return [i if isinstance(i, str) else i.get("label", i["name"]) for i in items]


def test_smoke_suite_is_builtin():
    assert "smoke" in builtin_suites()
    assert builtin_suites()["smoke"]


def test_smoke_suite_expands_to_full_grid():
    data = _smoke_toml()
    suite = load_suite("smoke")
    specs = suite.specs()
    labels = _labels(data["optimizers"])
    assert set(data["tasks"]) == set(suite.tasks)
    assert set(suite.activations) == {"relu", "leaky_relu", "tanh"}
    assert set(data["seeds"]) == {0, 1}
    expected = set(itertools.product(data["tasks"], ["relu", "leaky_relu", "tanh"], labels, [0, 1]))
    got = {(s.task, s.activation, s.display_optimizer, s.seed) for s in specs}
    assert got == expected and len(specs) == len(expected)
    assert len({s.run_id for s in specs}) == len(specs)
    assert all(s.size == "tiny" for s in specs)
    for s in specs:  # per-optimizer hyperparameters from [hparams.<name>] are applied
        if isinstance(data.get("hparams", {}).get(s.optimizer), dict):
            for k, v in data["hparams"][s.optimizer].items():
                assert s.hparams[k] == v, (s.label, k)


# --------------------------------------------------------------------------------------
# Executor: resumable
# --------------------------------------------------------------------------------------


@pytest.fixture
def tiny_specs():
    return parse_suite("mine", {**TINY, "activations": ["relu", "tanh"], "seeds": [0, 1]}).specs()


@pytest.fixture
def count_runs(monkeypatch):
    calls = []
    real = executor.run

    def counting(spec, **kwargs):
        calls.append(spec.run_id)
        return real(spec, **kwargs)

    monkeypatch.setattr(executor, "run", counting)
    return calls


def test_rerun_skips_finished_runs_without_rewriting(tmp_path, tiny_specs, count_runs):
    store = ResultStore(tmp_path)
    first = run_local(tiny_specs, store)
    assert first.ran == 4 and first.skipped == 0 and first.statuses["completed"] == 4
    assert len(count_runs) == 4
    files = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.glob("*.json")}
    assert len(files) == 4
    second = run_local(tiny_specs, store)
    assert second.ran == 0 and second.skipped == 4 and second.total == 4
    assert len(count_runs) == 4  # the runner was not called again
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.glob("*.json")} == files


def test_partial_results_resume_where_they_stopped(tmp_path, tiny_specs, count_runs):
    store = ResultStore(tmp_path)
    run_local(tiny_specs[:1], store)
    summary = run_local(tiny_specs, store)
    assert summary.skipped == 1 and summary.ran == 3
    assert sorted(count_runs) == sorted([tiny_specs[0].run_id] + [s.run_id for s in tiny_specs[1:]])


def test_duplicate_specs_run_once(tmp_path, tiny_specs, count_runs):
    summary = run_local([tiny_specs[0], tiny_specs[0]], ResultStore(tmp_path))
    assert summary.ran == 1 and summary.skipped == 1 and len(count_runs) == 1


def test_failed_run_is_retried_on_resume(tmp_path, make_spec, bad_optimizers, count_runs):
    specs = [make_spec(optimizer=bad_optimizers.flaky, budget=Budget(steps=2)), make_spec(budget=Budget(steps=2))]
    store = ResultStore(tmp_path)
    first = run_local(specs, store)
    assert dict(first.statuses) == {"failed": 1, "completed": 1}
    assert store.load(specs[0].run_id).status == "failed"
    bad_optimizers.switch.fail = False  # the cause of the failure is gone
    second = run_local(specs, store)
    assert second.ran == 1 and second.skipped == 1
    assert count_runs[-1] == specs[0].run_id
    assert store.load(specs[0].run_id).status == "completed"


def test_callbacks_see_every_spec(tmp_path, tiny_specs):
    started, ended = [], []
    store = ResultStore(tmp_path)
    run_local(tiny_specs[:2], store, on_run_start=started.append, on_run_end=lambda s, r: ended.append((s, r)))
    assert started == tiny_specs[:2]
    assert [s for s, _ in ended] == tiny_specs[:2] and all(r is not None for _, r in ended)
    ended.clear()
    run_local(tiny_specs[:2], store, on_run_end=lambda s, r: ended.append((s, r)))
    assert [r for _, r in ended] == [None, None]  # skipped runs report no record


# --------------------------------------------------------------------------------------
# Per-size overrides ([at_size.<size>])

AT_SIZE = """
tasks = ["digits_mlp"]
activations = ["relu"]
optimizers = ["sgd", { name = "kfgn", label = "kfgn-kfra", hparams = { variant = "kfra" } }]
size = "default"
eval_every = 50
[budget]
steps = 500
seconds = 9.0
[hparams.kfgn]
damping = 1e-3
lr = 0.5
[at_size.tiny]
eval_every = 5
budget = { steps = 7 }
[at_size.tiny.hparams.kfgn]
damping = 0.25
"""


def test_at_size_merges_only_for_that_size(tmp_path):
    path = _write(tmp_path, AT_SIZE)
    default, tiny = load_suite(str(path)), load_suite(str(path), size="tiny")
    assert default.base.size == "default" and default.base.eval_every == 50
    assert default.base.budget == Budget(steps=500, seconds=9.0)
    assert tiny.base.size == "tiny" and tiny.base.eval_every == 5
    assert tiny.base.budget == Budget(steps=7, seconds=9.0)  # tables merge key by key
    kfgn = {c.label: c for c in tiny.optimizers}["kfgn-kfra"]
    assert dict(kfgn.hparams) == {"damping": 0.25, "lr": 0.5, "variant": "kfra"}
    assert all(s.size == "tiny" for s in tiny.specs())


def test_at_size_for_another_size_changes_nothing(tmp_path):
    path = _write(tmp_path, AT_SIZE)
    assert load_suite(str(path), size="default") == load_suite(str(path))


def test_bad_at_size_is_named(tmp_path):
    path = _write(tmp_path, 'tasks = ["digits_mlp"]\nat_size = { tiny = 3 }\n')
    with pytest.raises(ConfigError, match="Invalid at_size"):
        load_suite(str(path))


def test_task_activations_restrict_one_task(tmp_path):
    path = _write(tmp_path, 'tasks = ["digits_mlp", "linear_regression"]\nactivations = ["relu", "tanh"]\n'
                            'optimizers = ["sgd"]\nsize = "tiny"\n[task_activations]\nlinear_regression = ["relu"]\n')
    suite = load_suite(str(path))
    got = sorted((s.task, s.activation) for s in suite.specs())
    assert got == [("digits_mlp", "relu"), ("digits_mlp", "tanh"), ("linear_regression", "relu")]
    assert len(suite) == 3


@pytest.mark.parametrize("table, message", [
    ('linear_regression = "relu"', "Invalid task_activations.linear_regression"),
    ('linear_regression = ["relu6"]', "Unknown activation 'relu6'"),
    ('linear_regresion = ["relu"]', "Unknown task 'linear_regresion'"),
], ids=["not-a-list", "unknown-activation", "unknown-task"])
def test_bad_task_activations_are_named(tmp_path, table, message):
    path = _write(tmp_path, f'tasks = ["linear_regression"]\n[task_activations]\n{table}\n')
    with pytest.raises(BenchsuiteError, match=message):
        load_suite(str(path))


# --------------------------------------------------------------------------------------
# The data seed
# --------------------------------------------------------------------------------------


def test_data_seed_is_set_by_the_suite_and_changes_run_ids():
    default, seeded = parse_suite("mine", TINY), parse_suite("mine", {**TINY, "data_seed": 7})
    assert {s.data_seed for s in default.specs()} == {0}
    assert {s.data_seed for s in seeded.specs()} == {7}
    assert {s.seed for s in seeded.specs()} == {s.seed for s in default.specs()}
    assert not {s.run_id for s in seeded.specs()} & {s.run_id for s in default.specs()}


def test_run_ids_of_existing_specs_do_not_move():
    """The completed run of tests/records/data/results_0964f01, spec written out by hand (and by a suite)."""
    spec = RunSpec(task="digits_mlp", activation="relu", optimizer="sgd", size="tiny", budget=Budget(steps=4),
                   eval_every=2, eval_train_examples=64)
    assert spec.run_id == "786d0ff762b20064"
    suite = parse_suite("old", {"tasks": ["digits_mlp"], "activations": ["relu"], "optimizers": ["sgd"],
                                "size": "tiny", "budget": {"steps": 4}, "eval_every": 2, "eval_train_examples": 64})
    assert [s.run_id for s in suite.specs()] == ["786d0ff762b20064"]
    assert parse_suite("old", {**TINY, "data_seed": 0}).specs() == parse_suite("old", TINY).specs()
