"""KFGN with an ℓ2 weight cost read from the closure (``weight_cost`` c, ``l2_params``).

The objective is ``F = f + (c/2) Σ_{W ∈ l2_params} ‖W‖²`` (c in the loss module's
units); its GN is ``G + c·M`` with ``M`` the diagonal mask of the penalised weights.
KFGN folds ``c`` into the factored damping (``sγ + c``, Martens & Grosse 2015, §6.3)
and adds ``c‖Δ_W‖²`` exactly to the rescaling's model and to the LM ratio. The
expectations use a dense float64 GN from torch.func (:mod:`optim_oracles`).
"""

from __future__ import annotations

import pytest
import torch
from benchsuite.optimizers.kfgn import KFGN, KFGNConfig
from optim_oracles import dense_ggn_oracle, flat_params
from torch import Tensor, nn

from benchsuite.contracts.activation import ACTIVATIONS
from benchsuite.contracts.task import mlp
from benchsuite.curvature import per_example_scale
from benchsuite.errors import ConfigError


class L2Closure:
    """A closure with the runner's weight-cost interface (independent of StepClosure's version).

    ``expose=False`` hides ``weight_cost``/``l2_params`` while keeping the ℓ2 term in the
    objective, so the optimizer sees the same gradient but no weight cost.
    """

    def __init__(self, model: nn.Module, loss_fn: nn.Module, x: Tensor, y: Tensor, c: float,
                 l2_params: tuple[Tensor, ...], *, expose: bool = True):
        self.model, self.loss_fn, self.inputs, self.targets = model, loss_fn, x, y
        self._c, self._l2 = c, l2_params
        if expose:
            self.weight_cost, self.l2_params = c, l2_params

    def objective(self) -> Tensor:
        return self.loss_fn(self.model(self.inputs), self.targets) + 0.5 * self._c * sum(
            w.square().sum() for w in self._l2)

    @torch.enable_grad()
    def __call__(self) -> Tensor:
        for p in self.model.parameters():
            p.grad = None
        loss = self.objective()
        loss.backward()
        return loss.detach()


def problem(act: str = "relu", seed: int = 0, n: int = 12, loss: str = "mse"):
    torch.manual_seed(seed)
    model = mlp([4, 6, 5, 3], ACTIVATIONS.get(act)).double()
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(n, 4, generator=g, dtype=torch.float64)  # (N, 4)
    if loss == "mse":
        return model, nn.MSELoss(), x, torch.randn(n, 3, generator=g, dtype=torch.float64)
    return model, nn.BCEWithLogitsLoss(), x, torch.rand(n, 3, generator=g, dtype=torch.float64)


def weights(model: nn.Module, biases: bool = False) -> tuple[Tensor, ...]:
    """The Linear weights in layer order (with ``biases``: weight, bias of each layer)."""
    return tuple(p for m in model if isinstance(m, nn.Linear) for p in ((m.weight, m.bias) if biases else (m.weight,)))


def scale(loss_fn: nn.Module, x: Tensor) -> float:
    return per_example_scale(loss_fn, x.shape[0], 3)


def one_step(config: KFGNConfig, c: float, which: slice, *, expose: bool = True, damping: float | None = None,
             act: str = "relu", loss: str = "mse", lr: float = 1.0, biases: bool = False):
    """Parameters before/after one step, the optimizer and the closure."""
    model, loss_fn, x, y = problem(act, loss=loss)
    closure = L2Closure(model, loss_fn, x, y, c, weights(model, biases)[which], expose=expose)
    opt = KFGN(model, loss_fn, config.replace(damping=damping or config.damping), lr=lr)
    before = flat_params(model)
    opt.step(closure)
    return before, flat_params(model), opt, closure


PLAIN = KFGNConfig(variant="kflr", damping=0.05, factor_decay=0.0, rescale=False, adapt_damping=False)


@pytest.mark.parametrize("variant", ["kfra", "kflr"])
@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_the_weight_cost_is_folded_into_the_factored_damping(variant, loss):
    # With every Linear weight penalised, the step equals the step of the same objective
    # without the weight-cost attributes and damping γ + c/s (i.e. sγ + c in module units).
    config, c = PLAIN.replace(variant=variant), 0.3
    s = scale(*problem(loss=loss)[1:3])
    _, with_cost, _, _ = one_step(config, c, slice(None), loss=loss)
    _, folded, _, _ = one_step(config, c, slice(None), expose=False, damping=config.damping + c / s, loss=loss)
    _, blind, _, _ = one_step(config, c, slice(None), expose=False, loss=loss)
    torch.testing.assert_close(with_cost, folded, rtol=1e-10, atol=1e-12)
    assert (with_cost - blind).abs().max() > 1e-4  # the cost changes the step


def test_only_the_penalised_layers_get_the_extra_damping():
    config, c = PLAIN, 0.3
    _, first_only, _, _ = one_step(config, c, slice(0, 1))
    _, blind, _, _ = one_step(config, c, slice(0, 1), expose=False)
    model = problem()[0]
    n_first = sum(p.numel() for p in model[0].parameters())  # weight and bias of layer 0
    assert (first_only[:n_first] - blind[:n_first]).abs().max() > 1e-4
    torch.testing.assert_close(first_only[n_first:], blind[n_first:], rtol=0, atol=0)


@pytest.mark.parametrize("act", ["tanh", "abs"])
@pytest.mark.parametrize("biases", [False, True], ids=["weights", "weights-and-biases"])
def test_the_rescaling_model_includes_c_times_the_penalised_step(act, biases):
    # α = min(1, gᵀΔ / (Δᵀ(G + c·M)Δ + sγ‖Δ‖²)) with the dense GN and M the mask of l2_params
    # (settings where α < 1, so the model's terms are visible in α).
    c, gamma, which = 0.05, 1e-3, slice(0, 2 * (1 + biases))
    before, ref_after, _, closure = one_step(PLAIN, c, which, act=act, damping=gamma, biases=biases)
    delta = before - ref_after  # (P,) the unscaled direction, θ ← θ − Δ
    model, loss_fn, x, y = problem(act)
    ggn = dense_ggn_oracle(model, loss_fn, x, y).detach()  # (P, P)
    penalised = weights(model, biases)[which]
    mask = torch.cat([torch.full((p.numel(),), float(any(p is w for w in penalised)),
                                 dtype=torch.float64) for p in model.parameters()])  # (P,)
    closure = L2Closure(model, loss_fn, x, y, c, penalised)
    closure()
    grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()])  # (P,) data + ℓ2 gradient
    curv = float(delta @ ggn @ delta + c * (mask * delta) @ delta)
    alpha = min(1.0, float(grad @ delta) / (curv + scale(loss_fn, x) * gamma * float(delta @ delta)))
    _, after, opt, _ = one_step(PLAIN.replace(rescale=True), c, which, act=act, damping=gamma, biases=biases)
    assert alpha < 0.99 and opt.group_state()["alpha"] == pytest.approx(alpha, rel=1e-9)
    torch.testing.assert_close(before - after, alpha * delta, rtol=1e-9, atol=1e-12)


def test_the_lm_ratio_uses_the_objective_with_its_weight_cost():
    c, which = 0.2, slice(None)
    config = PLAIN.replace(rescale=True, adapt_damping=True, damping=1.0)
    before, after, opt, closure = one_step(config, c, which, lr=0.5)
    st = opt.group_state()
    assert st.get("rejected", 0) == 0
    model, loss_fn, x, y = problem()
    ggn = dense_ggn_oracle(model, loss_fn, x, y).detach()  # (P, P)
    mask = torch.cat([torch.full((p.numel(),), float(p.dim() == 2), dtype=torch.float64)
                      for p in model.parameters()])  # (P,) every Linear weight
    ref = L2Closure(model, loss_fn, x, y, c, weights(model))
    f0 = float(ref())
    grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()])  # (P,)
    u = after - before  # (P,)
    predicted = float(grad @ u + 0.5 * (u @ ggn @ u + c * (mask * u) @ u))
    actual = float(closure.objective()) - f0
    assert actual < 0 and st["rho"] == pytest.approx(actual / predicted, rel=1e-8)


def test_no_weight_cost_attributes_is_zero_cost():
    _, a, _, _ = one_step(PLAIN, 0.0, slice(None))
    _, b, _, _ = one_step(PLAIN, 0.0, slice(None), expose=False)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_negative_weight_cost_is_refused():
    with pytest.raises(ConfigError, match="weight_cost"):
        one_step(PLAIN, -0.1, slice(None))


def test_a_penalised_prelu_slope_adds_c_to_its_diagonal():
    # Slope step Δ = g / (d + sγ + c), g the objective's gradient (ℓ2 term included); rescale off.
    c, gamma = 0.4, 0.05
    model, loss_fn, x, y = problem("prelu")
    slopes = tuple(p for m in model if isinstance(m, nn.PReLU) for p in m.parameters())
    assert slopes
    closure = L2Closure(model, loss_fn, x, y, c, slopes)
    grads = torch.autograd.grad(closure.objective(), slopes)
    before = [p.detach().clone() for p in slopes]
    opt = KFGN(model, loss_fn, PLAIN.replace(damping=gamma))
    opt.step(closure)
    for p, b, g in zip(slopes, before, grads):
        expected = g / (opt.state[p]["diag"] + scale(loss_fn, x) * gamma + c)
        torch.testing.assert_close(b - p.detach(), expected, rtol=1e-10, atol=1e-13)
