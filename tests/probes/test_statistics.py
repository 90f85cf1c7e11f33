"""Curvature probes: right values on tiny nets, presets, state, and no side effects."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from benchsuite.curvature import (
    LossKind,
    SequentialModel,
    dense_ggn,
    dense_hessian,
    layer_ggn_block,
    layer_hessian_block,
)
from benchsuite.errors import ConfigError, UnknownNameError
from benchsuite.probes import PRESETS, STATISTICS, CurvatureProbe, ProbeOptions
from tests.curvature.conftest import make_case


def _block_slices(case):
    net = SequentialModel(case.model)
    sizes = [p.numel() for p in case.params]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return {b.name: [j for i in b.param_indices for j in range(starts[i], starts[i] + sizes[i])] for b in net.blocks}


def test_presets_and_unknown_preset():
    assert set(PRESETS) == {"none", "cheap", "full"}
    assert all(name in STATISTICS for names in PRESETS.values() for name in names)
    case = make_case("relu", LossKind.MSE)
    with pytest.raises(UnknownNameError, match="cheap, full, none"):
        CurvatureProbe("fancy", case.model, case.loss_fn, (case.x, case.y))
    with pytest.raises(ConfigError, match="hutchinson_samples"):
        CurvatureProbe("full", case.model, case.loss_fn, (case.x, case.y), options={"hutchinson_sample": 3})
    assert CurvatureProbe("none", case.model, case.loss_fn, (case.x, case.y))(0) == {}


def test_cheap_probe_values():
    case = make_case("prelu", LossKind.SOFTMAX_CROSS_ENTROPY, n=6)
    out = CurvatureProbe("cheap", case.model, case.loss_fn, (case.x, case.y))(3)
    assert out["loss"] == pytest.approx(float(case.loss_fn(case.model(case.x), case.y)), rel=1e-12)
    grads = torch.autograd.grad(case.loss_fn(case.model(case.x), case.y), case.params)
    assert out["grad_norm"] == pytest.approx(float(torch.sqrt(sum((g**2).sum() for g in grads))), rel=1e-12)
    assert {"dead_frac/layer0", "dead_frac/layer1", "dead_flips/layer0", "dead_flips/layer1"} <= set(out)
    assert out["dead_frac/layer0"] == 0.0  # PReLU with a positive slope is never dead


def test_dead_units_by_hand_and_flips():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).double()
    x = torch.randn(8, 2, dtype=torch.float64)
    y = torch.randint(0, 2, (8,))
    with torch.no_grad():
        model[0].bias.copy_(torch.tensor([-100.0, 100.0, -100.0, 100.0]))  # units 0, 2 dead; 1, 3 alive
        model[2].weight.zero_()
        model[2].bias.copy_(torch.tensor([1.0, -1.0, 1.0]))  # unit 1 dead
    probe = CurvatureProbe("cheap", model, nn.CrossEntropyLoss(), (x, y))
    out = probe(0)
    assert out["dead_frac/layer0"] == 0.5 and out["dead_frac/layer1"] == pytest.approx(1 / 3)
    assert out["dead_flips/layer0"] == 0.0 and "dead_frac/layer2" not in out
    with torch.no_grad():
        model[0].bias[0] = 100.0  # revive unit 0
        model[0].bias[1] = -100.0  # kill unit 1
    out = probe(1)
    assert out["dead_frac/layer0"] == 0.5 and out["dead_flips/layer0"] == 2.0 and out["dead_flips/layer1"] == 0.0


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_hutchinson_traces_in_expectation(act):
    """Estimates within 5 standard deviations of the exact trace. One Rademacher sample
    of block l, z_lᵀ(Az)_l, has variance 2 Σ_{i≠j∈l} A_ij² + Σ_{i∈l, j∉l} A_ij²: the
    tolerance follows from it."""
    case = make_case(act, LossKind.SOFTMAX_CROSS_ENTROPY, n=6)
    samples = 400
    out = CurvatureProbe("full", case.model, case.loss_fn, (case.x, case.y), seed=2,
                         options={"hutchinson_samples": samples})(0)
    slices = _block_slices(case)
    for label, dense in (("G", dense_ggn), ("H", dense_hessian)):
        a = dense(case.model, case.loss_fn, case.x, case.y)
        for key, idx in [("", list(range(a.shape[0])))] + [(f"/{k}", v) for k, v in slices.items()]:
            sub = a[idx][:, idx]
            cross = (a[idx] ** 2).sum() - (sub**2).sum()  # a block trace uses the full z
            var = 2 * ((sub**2).sum() - (sub.diagonal() ** 2).sum()) + cross
            tol = 5 * math.sqrt(float(var) / samples) + 1e-12
            assert abs(out[f"trace_{label}{key}"] - float(sub.trace())) <= tol, (label, key)
    assert out["trace_H_sign"] == math.copysign(1.0, out["trace_H"])


@pytest.mark.parametrize("act", ["relu", "softplus"])
def test_top_eigenvalues_match_dense(act):
    case = make_case(act, LossKind.MSE, n=5)
    out = CurvatureProbe("full", case.model, case.loss_fn, (case.x, case.y),
                         options={"top_k": 3, "eig_tol": 1e-10})(0)
    for label, dense in (("H", dense_hessian), ("G", dense_ggn)):
        ref = torch.linalg.eigvalsh(dense(case.model, case.loss_fn, case.x, case.y)).flip(0)[:3]
        got = torch.tensor([out[f"eig_{label}/{j}"] for j in range(3)], dtype=torch.float64)
        assert torch.allclose(got, ref, rtol=1e-7, atol=1e-10), label


@pytest.mark.parametrize("dense_block_max", [10_000, 1], ids=["dense", "products"])
@pytest.mark.parametrize("act", ["relu", "prelu", "tanh"])
def test_block_checks(act, dense_block_max):
    """Exact keys for small blocks, estimate keys (never the exact ones) for large blocks.
    On these tiny blocks the Ritz value's Krylov space is the whole block, so it is exact."""
    case = make_case(act, LossKind.SOFTMAX_CROSS_ENTROPY, n=6)
    out = CurvatureProbe("full", case.model, case.loss_fn, (case.x, case.y),
                         options={"dense_block_max": dense_block_max, "eig_tol": 1e-10})(0)
    net = SequentialModel(case.model)
    exact = dense_block_max > 1
    rel_key, eig_key = ("block_rel_diff", "block_min_eig") if exact else ("block_rel_diff_est", "block_min_eig_ritz")
    other = ("block_rel_diff_est", "block_min_eig_ritz") if exact else ("block_rel_diff", "block_min_eig")
    assert not any(k.split("/")[0] in other for k in out)
    for b in net.blocks:
        h = layer_hessian_block(net, case.loss_fn, case.x, case.y, b.name)
        g = layer_ggn_block(net, case.loss_fn, case.x, case.y, b.name)
        assert out[f"{eig_key}/{b.name}"] == pytest.approx(float(torch.linalg.eigvalsh(h)[0]), abs=1e-8)
        if exact:
            assert out[f"{rel_key}/{b.name}"] == pytest.approx(float((h - g).abs().max() / g.abs().max()),
                                                              rel=1e-8, abs=1e-14)
        hidden = b.name in ("layer0", "layer1", "prelu0", "prelu1")
        if act == "tanh" and hidden:
            assert out[f"{rel_key}/{b.name}"] > 1e-3, b.name
        else:
            assert out[f"{rel_key}/{b.name}"] < 1e-10, b.name
            assert out[f"{eig_key}/{b.name}"] > -1e-10, b.name


def test_block_min_eig_ritz_is_an_upper_bound():
    """With fewer Lanczos vectors than the block size the Ritz value bounds λ_min(H_l) from above."""
    case = make_case("tanh", LossKind.SOFTMAX_CROSS_ENTROPY, n=6)
    out = CurvatureProbe("full", case.model, case.loss_fn, (case.x, case.y),
                         options={"dense_block_max": 1, "lanczos_steps": 3})(0)
    net = SequentialModel(case.model)
    for b in net.blocks:
        h = layer_hessian_block(net, case.loss_fn, case.x, case.y, b.name)
        assert out[f"block_min_eig_ritz/{b.name}"] >= float(torch.linalg.eigvalsh(h)[0]) - 1e-12, b.name


def test_probe_restores_training_mode_and_leaves_no_grad():
    case = make_case("maxout", LossKind.SIGMOID_CROSS_ENTROPY)
    case.model.train()
    before = [p.detach().clone() for p in case.params]
    out = CurvatureProbe("full", case.model, case.loss_fn, (case.x, case.y), options=ProbeOptions(hutchinson_samples=2))(5)
    assert case.model.training
    assert all(p.grad is None for p in case.params)
    assert all(torch.equal(a, p) for a, p in zip(before, case.params))
    assert all(math.isfinite(v) for v in out.values())
    case.model.eval()
    CurvatureProbe("cheap", case.model, case.loss_fn, (case.x, case.y))(0)
    assert not case.model.training


def test_probe_is_deterministic_per_seed_and_step():
    case = make_case("relu", LossKind.MSE)
    run = lambda seed, step: CurvatureProbe("full", case.model, case.loss_fn, (case.x, case.y), seed=seed,
                                            options={"hutchinson_samples": 3})(step)
    assert run(1, 4) == run(1, 4)
    assert run(1, 4)["trace_H"] != run(2, 4)["trace_H"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_probe_on_cuda():
    case = make_case("relu", LossKind.SOFTMAX_CROSS_ENTROPY)
    model = case.model.cuda()
    out = CurvatureProbe("full", model, case.loss_fn, (case.x.cuda(), case.y.cuda()))(0)
    assert out["block_rel_diff/layer0"] < 1e-10
