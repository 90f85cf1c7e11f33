"""Registry: decorator registration, lookup errors that list the valid names, entry-point plugins."""

from __future__ import annotations

import logging
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchsuite.contracts.activation import ACTIVATIONS
from benchsuite.contracts.optimizer import OPTIMIZERS
from benchsuite.contracts.registry import Registry
from benchsuite.contracts.task import TASKS
from benchsuite.errors import BenchsuiteError, UnknownNameError


@pytest.fixture
def reg() -> Registry[object]:
    r: Registry[object] = Registry("widget")  # no entry-point group: nothing to load
    return r


def test_register_by_decorator_returns_object_and_get_finds_it(reg):
    @reg.register("alpha", description="the first widget")
    class Alpha:
        pass

    assert Alpha.__name__ == "Alpha"  # decorator returned the class unchanged
    assert reg.get("alpha") is Alpha
    assert reg.entry("alpha").description == "the first widget"
    assert "alpha" in reg and "beta" not in reg


def test_description_defaults_to_first_docstring_line(reg):
    @reg.register("doc")
    def documented():
        """First line.

        More text.
        """

    assert reg.entry("doc").description == "First line."


def test_names_are_sorted_and_len_iter_agree(reg):
    for name in ("zeta", "alpha", "mu"):
        reg.add(name, object())
    assert reg.names() == ["alpha", "mu", "zeta"]
    assert list(reg) == reg.names()
    assert len(reg) == 3
    assert [e.name for e in reg.entries()] == reg.names()


def test_duplicate_name_rejected(reg):
    reg.add("same", object())
    with pytest.raises(BenchsuiteError, match="Duplicate widget name 'same'"):
        reg.add("same", object())


def test_same_object_twice_is_idempotent(reg):
    obj = object()
    reg.add("once", obj)
    reg.add("once", obj)  # a module imported twice (plugin + direct import) must not fail
    assert reg.names() == ["once"]


@pytest.mark.parametrize("bad", ["", None, 3], ids=["empty", "None", "int"])
def test_invalid_name_rejected(reg, bad):
    with pytest.raises(BenchsuiteError, match="Invalid widget name"):
        reg.add(bad, object())


def test_unknown_name_lists_every_known_name(reg):
    for name in ("red", "green", "blue"):
        reg.add(name, object())
    with pytest.raises(UnknownNameError) as info:
        reg.get("purple")
    msg = str(info.value)
    assert msg == "Unknown widget 'purple'. Valid choices: blue, green, red"
    assert info.value.known == ["blue", "green", "red"]
    assert isinstance(info.value, KeyError) and isinstance(info.value, BenchsuiteError)


def test_unknown_name_in_empty_registry(reg):
    with pytest.raises(UnknownNameError, match=r"Valid choices: \(none registered\)"):
        reg.get("anything")


def test_unregister_removes_entry(reg):
    reg.add("gone", object())
    reg.unregister("gone")
    assert "gone" not in reg
    reg.unregister("never-there")  # no error


@pytest.mark.parametrize(
    "registry, builtins",
    [
        pytest.param(TASKS, {"digits_mlp", "curves_autoencoder"}, id="tasks"),
        pytest.param(ACTIVATIONS, {"relu", "leaky_relu", "prelu", "abs", "maxout", "tanh", "sigmoid", "softplus", "gelu"},
                     id="activations"),
        pytest.param(OPTIMIZERS, {"sgd", "adam", "rmsprop"}, id="optimizers"),
    ],
)
def test_builtin_registries_hold_builtins(registry, builtins):
    assert builtins <= set(registry.names())
    for name in builtins:
        assert registry.entry(name).description, f"{name} has no description for `benchsuite list`"


@pytest.mark.parametrize("registry", [TASKS, ACTIVATIONS, OPTIMIZERS], ids=lambda r: r.kind)
def test_builtin_unknown_name_lists_builtins(registry):
    with pytest.raises(UnknownNameError) as info:
        registry.get("no_such_thing")
    for name in registry.names():
        assert name in str(info.value)


# --------------------------------------------------------------------------------------
# Entry-point plugins from a package outside the repository
# --------------------------------------------------------------------------------------

PLUGIN_INIT = '''
"""A third-party benchsuite plugin that registers one of each kind by decorator."""
from torch import nn

from benchsuite.contracts.activation import ACTIVATIONS, Activation
from benchsuite.contracts.optimizer import register_optimizer
from benchsuite.contracts.task import TASKS
from benchsuite.optimizers.first_order import SGDConfig, sgd
from benchsuite.tasks.digits import DigitsMLP


@TASKS.register("demo_task")
class DemoTask(DigitsMLP):
    """Demo plugin task."""


@register_optimizer("demo_opt", SGDConfig)
def demo_opt(model, loss_fn, config):
    """Demo plugin optimizer."""
    return sgd(model, loss_fn, config)


DEMO_ACT = ACTIVATIONS.register("demo_act")(
    Activation("demo_act", "Demo plugin activation", lambda width: nn.ReLU(), piecewise_linear=True))
'''

PLUGIN_PLAIN = '''
"""An object that an entry point names but that does not register itself."""
from benchsuite.tasks.digits import DigitsMLP


class PlainTask(DigitsMLP):
    """Plain plugin task (registered under its entry-point name)."""
'''

PLUGIN_ENTRY_POINTS = """
[benchsuite.tasks]
demo = bs_plugin_demo
demo_alias = bs_plugin_demo:DemoTask
demo_plain = bs_plugin_demo.plain:PlainTask
broken = bs_plugin_demo_broken

[benchsuite.optimizers]
demo = bs_plugin_demo

[benchsuite.activations]
demo = bs_plugin_demo
"""

PLUGIN_MODULES = ("bs_plugin_demo", "bs_plugin_demo.plain", "bs_plugin_demo_broken", "bs_plugin_collide")
PLUGIN_NAMES = {TASKS: ("demo_task", "demo_plain", "demo_alias", "broken"), OPTIMIZERS: ("demo_opt",),
                ACTIVATIONS: ("demo_act", "relu_twin")}


def _write_dist(root: Path, name: str, entry_points: str) -> None:
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.fixture
def plugin_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A site directory with the demo plugin distribution, prepended to sys.path; cleaned up after."""
    pkg = tmp_path / "bs_plugin_demo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(PLUGIN_INIT)
    (pkg / "plain.py").write_text(PLUGIN_PLAIN)
    broken = tmp_path / "bs_plugin_demo_broken"
    broken.mkdir()
    (broken / "__init__.py").write_text('raise ImportError("demo plugin is broken on purpose")\n')
    _write_dist(tmp_path, "bs_plugin_demo", PLUGIN_ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        yield tmp_path
    finally:
        for registry, names in PLUGIN_NAMES.items():
            for name in names:
                registry.unregister(name)
        for mod in PLUGIN_MODULES:
            sys.modules.pop(mod, None)


def _reload_all() -> None:
    for registry in (TASKS, OPTIMIZERS, ACTIVATIONS):
        registry.load_plugins(force=True)


def test_plugin_entries_found_through_entry_points(plugin_path, caplog):
    with caplog.at_level(logging.WARNING, logger="benchsuite.contracts.registry"):
        _reload_all()
    assert "demo_task" in TASKS.names()
    assert "demo_opt" in OPTIMIZERS.names()
    assert "demo_act" in ACTIVATIONS.names()
    demo = sys.modules["bs_plugin_demo"]
    assert TASKS.get("demo_task") is demo.DemoTask
    assert OPTIMIZERS.get("demo_opt").description == "Demo plugin optimizer."
    assert ACTIVATIONS.get("demo_act") is demo.DEMO_ACT


def test_plugin_object_that_did_not_self_register_is_added_under_entry_point_name(plugin_path):
    _reload_all()
    assert TASKS.get("demo_plain") is sys.modules["bs_plugin_demo.plain"].PlainTask


def test_plugin_object_already_registered_is_not_added_again_under_alias(plugin_path):
    _reload_all()
    assert "demo_alias" not in TASKS.names()  # DemoTask registered itself as demo_task


def test_broken_plugin_is_logged_and_does_not_hide_the_others(plugin_path, caplog):
    with caplog.at_level(logging.WARNING, logger="benchsuite.contracts.registry"):
        _reload_all()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("broken" in w and "demo plugin is broken on purpose" in w for w in warnings), warnings
    assert "broken" not in TASKS.names()
    assert {"demo_task", "demo_plain", "digits_mlp", "curves_autoencoder"} <= set(TASKS.names())


def test_plugin_loading_twice_is_harmless(plugin_path):
    _reload_all()
    before = {r.kind: r.names() for r in (TASKS, OPTIMIZERS, ACTIVATIONS)}
    _reload_all()
    assert {r.kind: r.names() for r in (TASKS, OPTIMIZERS, ACTIVATIONS)} == before


def test_plugin_entry_point_name_colliding_with_builtin_is_logged_not_fatal(plugin_path, caplog):
    """A third-party entry point called 'relu' (an object that did not self-register) must not
    break the registry: it is reported and skipped, and the other plugins still load."""
    (plugin_path / "bs_plugin_collide.py").write_text(textwrap.dedent('''
        from torch import nn
        from benchsuite.contracts.activation import Activation
        RELU_TWIN = Activation("relu_twin", "a second relu", lambda width: nn.ReLU(), piecewise_linear=True)
    '''))
    _write_dist(plugin_path, "bs_plugin_collide", """
        [benchsuite.activations]
        relu = bs_plugin_collide:RELU_TWIN
    """)
    with caplog.at_level(logging.WARNING, logger="benchsuite.contracts.registry"):
        ACTIVATIONS.load_plugins(force=True)  # must not raise
    assert ACTIVATIONS.get("relu").description.startswith("ReLU")  # the built-in is kept
    assert "demo_act" in ACTIVATIONS.names()
    assert any("relu" in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
