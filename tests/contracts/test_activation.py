"""Activations: every registered one builds; the engine's derivatives agree with torch autograd (float64)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from benchsuite.contracts.activation import ACTIVATIONS, Maxout
from benchsuite.curvature import UnsupportedModelError, derivatives_for, handler_for
from benchsuite.errors import ConfigError

WIDTH = 6
ELEMENTWISE = [n for n in ACTIVATIONS.names() if ACTIVATIONS.get(n).elementwise]
SMOOTH = [n for n in ELEMENTWISE if not ACTIVATIONS.get(n).piecewise_linear]
PIECEWISE_LINEAR = [n for n in ELEMENTWISE if ACTIVATIONS.get(n).piecewise_linear]

# Options that change the function, so the hooks are checked away from the defaults too.
OPTION_CASES = [
    pytest.param("leaky_relu", {"slope": 0.2}, id="act=leaky_relu-slope=0.2"),
    pytest.param("prelu", {"shared": True, "init": -0.3}, id="act=prelu-shared"),
    pytest.param("softplus", {"beta": 2.5}, id="act=softplus-beta=2.5"),
]


def _module(name: str, **options) -> nn.Module:
    module = ACTIVATIONS.get(name).build(WIDTH, **options).double()
    if isinstance(module, nn.PReLU):  # distinct slopes per unit, so a broadcasting mistake shows
        with torch.no_grad():
            module.weight.copy_(torch.linspace(-0.7, 0.9, module.weight.numel(), dtype=torch.float64))
    return module


def _inputs() -> torch.Tensor:
    """Random pre-activations away from the kink at 0, plus both tails (softplus's threshold)."""
    gen = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(64, WIDTH, generator=gen, dtype=torch.float64)  # (N, W)
    x[0] = torch.tensor([-30.0, -25.0, 25.0, 30.0, -1e-2, 1e-2], dtype=torch.float64)  # tails, near 0
    x = torch.where(x.abs() < 1e-3, x + 1e-2, x)
    return x.requires_grad_(True)


def _autograd_df_d2f(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    (df,) = torch.autograd.grad(module(x).sum(), x, create_graph=True)
    if not df.requires_grad:
        return df.detach(), None
    (d2f,) = torch.autograd.grad(df.sum(), x, allow_unused=True)
    return df.detach(), d2f


def _cases():
    for name in ELEMENTWISE:
        yield pytest.param(name, {}, id=f"act={name}")
    yield from OPTION_CASES


@pytest.mark.parametrize("name", ACTIVATIONS.names())
def test_every_activation_builds_with_width_outputs(name):
    act = ACTIVATIONS.get(name)
    fan_in = act.fan_in(WIDTH)
    module = act.build(WIDTH)
    assert isinstance(module, nn.Module)
    handler_for(module)  # the engine can differentiate it
    out = module(torch.randn(5, fan_in))
    assert out.shape == (5, WIDTH)


@pytest.mark.parametrize("name, options", list(_cases()))
def test_df_matches_autograd_away_from_kinks(name, options):
    module = _module(name, **options)
    x = _inputs()
    expected, _ = _autograd_df_d2f(module, x)
    got = derivatives_for(module).df(module, x.detach())
    assert got.dtype == torch.float64 and got.shape == x.shape
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name, options", list(_cases()))
def test_df_at_exact_zero_is_torch_one_sided_value(name, options):
    module = _module(name, **options)
    x = torch.zeros(3, WIDTH, dtype=torch.float64, requires_grad=True)
    expected, _ = _autograd_df_d2f(module, x)
    got = derivatives_for(module).df(module, x.detach())
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name, options", [p for p in _cases() if p.values[0] in SMOOTH])
def test_d2f_matches_autograd_for_smooth(name, options):
    module = _module(name, **options)
    x = _inputs()
    _, expected = _autograd_df_d2f(module, x)
    derivs = derivatives_for(module)
    assert not derivs.piecewise_linear
    got = derivs.d2f(module, x.detach())
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name, options", [p for p in _cases() if p.values[0] in PIECEWISE_LINEAR])
def test_piecewise_linear_has_no_d2f_and_autograd_agrees(name, options):
    module = _module(name, **options)
    derivs = derivatives_for(module)
    assert derivs.piecewise_linear
    x = _inputs()
    assert torch.count_nonzero(derivs.d2f(module, x.detach())) == 0
    _, d2f = _autograd_df_d2f(module, x)
    assert d2f is None or torch.count_nonzero(d2f) == 0


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_registry_facts_match_derivative_hooks(name):
    act = ACTIVATIONS.get(name)
    module = act.build(WIDTH)
    assert act.piecewise_linear == derivatives_for(module).piecewise_linear
    assert act.has_params == any(True for _ in module.parameters())
    assert act.fan_in(WIDTH) == WIDTH


def test_prelu_has_parameters_per_unit_or_shared():
    act = ACTIVATIONS.get("prelu")
    assert act.has_params
    assert sum(p.numel() for p in act.build(WIDTH).parameters()) == WIDTH
    assert sum(p.numel() for p in act.build(WIDTH, shared=True).parameters()) == 1
    assert act.build(WIDTH, init=0.1).weight.detach().eq(0.1).all()


# --------------------------------------------------------------------------------------
# Maxout: not elementwise (k·d inputs → d outputs), a selection Jacobian
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("pieces", [2, 3, 5], ids=lambda k: f"pieces={k}")
def test_maxout_widens_preceding_layer(pieces):
    act = ACTIVATIONS.get("maxout")
    assert not act.elementwise and act.piecewise_linear
    assert act.fan_in(WIDTH, pieces=pieces) == pieces * WIDTH
    module = act.build(WIDTH, pieces=pieces)
    assert isinstance(module, Maxout) and module.pieces == pieces
    assert module(torch.randn(4, pieces * WIDTH)).shape == (4, WIDTH)


@pytest.mark.parametrize("pieces", [2, 3], ids=lambda k: f"pieces={k}")
def test_maxout_selection_reproduces_forward_and_gradient(pieces):
    module = ACTIVATIONS.get("maxout").build(WIDTH, pieces=pieces)
    h = torch.randn(7, pieces * WIDTH, dtype=torch.float64, generator=torch.Generator().manual_seed(1),
                    requires_grad=True)
    idx, values = module.argmax_and_max(h.detach())
    assert idx.shape == (7, WIDTH)
    # Each selected index lies in its own unit's group of k inputs.
    assert torch.equal(idx // pieces, torch.arange(WIDTH).expand(7, -1))
    out = module(h)
    torch.testing.assert_close(values, out.detach(), rtol=0, atol=0)
    torch.testing.assert_close(h.detach().gather(-1, idx), out.detach(), rtol=0, atol=0)
    # The Jacobian is the selection S: the gradient lands exactly on the chosen inputs.
    w = torch.randn(7, WIDTH, dtype=torch.float64)
    (grad,) = torch.autograd.grad((out * w).sum(), h)
    expected = torch.zeros_like(h.detach()).scatter(-1, idx, w)
    torch.testing.assert_close(grad, expected, rtol=0, atol=0)


def test_maxout_is_not_elementwise_for_derivatives():
    assert handler_for(Maxout(2)).d2f(Maxout(2), torch.zeros(1, 2)) is None  # piecewise linear
    with pytest.raises(UnsupportedModelError, match="No elementwise derivatives for Maxout"):
        derivatives_for(Maxout(2))


def test_maxout_rejects_width_not_multiple_of_pieces():
    with pytest.raises(ValueError, match="multiple of pieces=3"):
        Maxout(3)(torch.randn(2, 7))


# --------------------------------------------------------------------------------------
# Bad options
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, options, match",
    [
        pytest.param("relu", {"slope": 0.1}, r"Unknown option\(s\) \['slope'\] for activation 'relu'. Valid: \(none\)",
                     id="relu-slope"),
        pytest.param("leaky_relu", {"pieces": 2}, r"Unknown option\(s\) \['pieces'\].*Valid: slope",
                     id="leaky_relu-pieces"),
        pytest.param("prelu", {"slopes": 2}, r"Valid: init, shared", id="prelu-typo"),
        pytest.param("maxout", {"pieces": 1}, r"Invalid maxout pieces: 1", id="maxout-pieces=1"),
        pytest.param("maxout", {"pieces": 0}, r"Invalid maxout pieces: 0", id="maxout-pieces=0"),
        pytest.param("leaky_relu", {"slope": math.nan}, r"Invalid leaky_relu slope", id="leaky_relu-nan"),
    ],
)
def test_bad_options_raise_config_error(name, options, match):
    with pytest.raises(ConfigError, match=match):
        ACTIVATIONS.get(name).build(WIDTH, **options)


def test_unknown_module_type_lists_supported_ones():
    with pytest.raises(UnsupportedModelError) as info:
        handler_for(nn.Hardtanh())
    for known in ("ReLU", "Tanh", "GELU", "Maxout"):
        assert known in str(info.value)


def test_approximate_gelu_is_refused():
    with pytest.raises(UnsupportedModelError, match="exact GELU"):
        derivatives_for(nn.GELU(approximate="tanh"))
