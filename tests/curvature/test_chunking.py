"""One chunking keyword: every engine function that splits its work takes ``max_elements``,
and its result does not depend on it."""

from __future__ import annotations

import inspect

import pytest
import torch

import benchsuite.curvature as cv
from benchsuite.curvature import DEFAULT_MAX_ELEMENTS, CurvatureError, LossKind
from tests.curvature.conftest import make_case

CHUNKED = {
    "GGNOperator", "dense_ggn", "dense_hessian", "diag_ggn_exact", "diag_ggn_mc", "ggn_matrix_product",
    "hessian_matrix_product", "kfac", "kflr", "layer_ggn_block", "layer_hessian_block",
}
TINY, HUGE = 1, 2**40


def _vectors(case, k: int = 5) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return [torch.randn(k, *p.shape, generator=gen, dtype=p.dtype) for p in case.params]


def _flat(out) -> torch.Tensor:
    """Any engine result (tensor, list of tensors, list of KroneckerFactors) as one vector."""
    if isinstance(out, torch.Tensor):
        return out.reshape(-1)
    parts = [torch.cat([f.input.reshape(-1), f.output.reshape(-1)]) if isinstance(f, cv.KroneckerFactors)
             else f.reshape(-1) for f in out]
    return torch.cat(parts)


CALLS = {
    "diag_ggn_exact": lambda c, m: cv.diag_ggn_exact(c.model, c.loss_fn, c.x, c.y, max_elements=m),
    "diag_ggn_mc": lambda c, m: cv.diag_ggn_mc(c.model, c.loss_fn, c.x, c.y, mc_samples=7, max_elements=m,
                                               generator=torch.Generator().manual_seed(0)),
    "kflr": lambda c, m: cv.kflr(c.model, c.loss_fn, c.x, c.y, max_elements=m),
    "kfac": lambda c, m: cv.kfac(c.model, c.loss_fn, c.x, c.y, mc_samples=7, max_elements=m,
                                 generator=torch.Generator().manual_seed(0)),
    "ggn_matrix_product": lambda c, m: cv.ggn_matrix_product(c.model, c.loss_fn, c.x, c.y, _vectors(c),
                                                             max_elements=m),
    "GGNOperator": lambda c, m: cv.GGNOperator(c.model, c.loss_fn, c.x, c.y, max_elements=m).matmat(_vectors(c)),
    "hessian_matrix_product": lambda c, m: cv.hessian_matrix_product(c.model, c.loss_fn, c.x, c.y, _vectors(c),
                                                                     max_elements=m),
    "dense_ggn": lambda c, m: cv.dense_ggn(c.model, c.loss_fn, c.x, c.y, max_elements=m),
    "dense_hessian": lambda c, m: cv.dense_hessian(c.model, c.loss_fn, c.x, c.y, max_elements=m),
    "layer_ggn_block": lambda c, m: cv.layer_ggn_block(c.model, c.loss_fn, c.x, c.y, "layer1", max_elements=m),
    "layer_hessian_block": lambda c, m: cv.layer_hessian_block(c.model, c.loss_fn, c.x, c.y, "layer1",
                                                               max_elements=m),
}


def test_every_chunking_function_takes_the_same_keyword_and_default():
    found = set()
    for name in cv.__all__:
        obj = getattr(cv, name)
        if callable(obj) and not isinstance(obj, type) or name == "GGNOperator":
            param = inspect.signature(obj).parameters.get("max_elements")
            if param is not None:
                assert param.kind is inspect.Parameter.KEYWORD_ONLY, name
                assert param.default == DEFAULT_MAX_ELEMENTS, name
                found.add(name)
    assert found == CHUNKED == set(CALLS)


@pytest.mark.parametrize("kind", [LossKind.SOFTMAX_CROSS_ENTROPY, LossKind.MSE], ids=lambda k: f"loss={k.value}")
@pytest.mark.parametrize("act", ["prelu", "maxout"])
@pytest.mark.parametrize("name", sorted(CALLS))
def test_result_does_not_depend_on_max_elements(name, act, kind):
    case = make_case(act, kind, n=5, sizes=[3, 6, 2, 4])  # a narrow layer: the exact columns get compressed
    tiny, huge = _flat(CALLS[name](case, TINY)), _flat(CALLS[name](case, HUGE))
    assert tiny.shape == huge.shape and torch.count_nonzero(huge) > 0
    torch.testing.assert_close(tiny, huge, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True], ids=str)
def test_bad_max_elements_refused(bad):
    case = make_case("relu", LossKind.MSE)
    with pytest.raises(CurvatureError, match="Invalid max_elements.*positive integer"):
        cv.diag_ggn_exact(case.model, case.loss_fn, case.x, case.y, max_elements=bad)
