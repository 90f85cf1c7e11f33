"""The seeds' facts (Botev et al. 2017) on tiny nets, with dense float64 blocks."""

from __future__ import annotations

import pytest
import torch

from benchsuite.curvature import (
    SequentialModel,
    dense_hessian,
    layer_ggn_block,
    layer_hessian_block,
)
from tests.curvature.conftest import (
    LOSS_KINDS,
    PIECEWISE_LINEAR,
    REDUCTIONS,
    SMOOTH,
    case_id,
    make_case,
)

PL_CASES = [pytest.param(a, k, r, id=case_id(a, k, r)) for a in PIECEWISE_LINEAR for k in LOSS_KINDS for r in REDUCTIONS]
SMOOTH_CASES = [pytest.param(a, k, id=case_id(a, k, "mean")) for a in SMOOTH for k in LOSS_KINDS]


@pytest.mark.parametrize("act,kind,reduction", PL_CASES)
def test_piecewise_linear_blocks_equal_gn_and_are_psd(act, kind, reduction):
    case = make_case(act, kind, reduction)
    net = SequentialModel(case.model)
    for block in net.blocks:  # Linear (W, b) blocks and PReLU slope blocks
        h = layer_hessian_block(net, case.loss_fn, case.x, case.y, block.name)
        g = layer_ggn_block(net, case.loss_fn, case.x, case.y, block.name)
        scale = g.abs().max()
        assert scale > 0
        assert (h - g).abs().max() <= 1e-10 * scale, block.name
        assert torch.linalg.eigvalsh(h)[0] >= -1e-10 * scale, block.name
    h = dense_hessian(case.model, case.loss_fn, case.x, case.y)
    assert h.trace() >= -1e-12 * h.abs().max()


@pytest.mark.parametrize("act,kind", SMOOTH_CASES)
def test_smooth_hidden_blocks_differ_from_gn(act, kind):
    case = make_case(act, kind, "mean")
    for name in ("layer0", "layer1"):
        h = layer_hessian_block(case.model, case.loss_fn, case.x, case.y, name)
        g = layer_ggn_block(case.model, case.loss_fn, case.x, case.y, name)
        assert (h - g).abs().max() > 1e-4 * g.abs().max(), name
    # the top layer is linear in its parameters: its blocks agree for any activation
    h = layer_hessian_block(case.model, case.loss_fn, case.x, case.y, "layer2")
    g = layer_ggn_block(case.model, case.loss_fn, case.x, case.y, "layer2")
    assert (h - g).abs().max() <= 1e-10 * g.abs().max()
