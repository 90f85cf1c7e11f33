"""pytest-benchmark: cost of the curvature engine vs one gradient, BackPACK and curvlinops.

Run with ``pytest benchmarks/bench_curvature.py --benchmark-enable`` (add
``--benchmark-json=out.json`` and turn it into a ratio table with
``python benchmarks/report_curvature.py out.json``). Every benchmark runs
``ROUNDS`` timed rounds after one warm-up round (``benchmark.pedantic``), so the
file takes a few minutes on a CPU.

Models (one benchmark group each, so ratios read across a group):

* ``digits``: ``DigitsMLP('default')`` (64-128-128-10, ReLU), ``CrossEntropyLoss``;
* ``curves``: ``CurvesAutoencoder('default')`` (784-400-…-6-…-400-784, ReLU),
  ``BCEWithLogitsLoss`` (BackPACK supports it for scalar outputs only: no peer);
* ``curves_mse``: the same autoencoder with ``MSELoss`` (BackPACK's peers run).

Each row is (quantity, implementation): ``gradient/torch`` is the unit;
``ours`` is :mod:`benchsuite.curvature`; ``backpack`` (DiagGGNExact, DiagGGNMC,
KFLR, KFRA, KFAC; their backward also computes the gradient) and ``curvlinops``
(GGN and Hessian matvec, operator built outside the timing) are the peers.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from benchsuite import curvature as cv

ROUNDS = 3
BATCH = 256


@dataclass
class Setup:
    model: nn.Sequential
    loss_fn: nn.Module
    x: Tensor
    y: Tensor

    @property
    def params(self) -> list[Tensor]:
        return list(self.model.parameters())


def _setup(name: str) -> Setup:
    from benchsuite.tasks.curves import CurvesAutoencoder
    from benchsuite.tasks.digits import DigitsMLP

    torch.manual_seed(0)
    if name == "digits":
        task = DigitsMLP("default")
        data = task.make_data(0).train
        return Setup(task.build_model("relu"), task.loss_fn(), data.inputs[:BATCH], data.targets[:BATCH])
    task = CurvesAutoencoder("default")
    x = torch.rand(BATCH, 784, generator=torch.Generator().manual_seed(0))  # pixel intensities in [0, 1]
    loss = task.loss_fn() if name == "curves" else nn.MSELoss()
    return Setup(task.build_model("relu"), loss, x, x)


MODELS = ["digits", "curves", "curves_mse"]
_CACHE: dict[str, Setup] = {}


def setup_for(name: str) -> Setup:
    if name not in _CACHE:
        _CACHE[name] = _setup(name)
    return _CACHE[name]


# ----------------------------------------------------------------------------- ours


def _ours(quantity: str, s: Setup) -> Callable[[], object]:
    v = [torch.randn_like(p) for p in s.params]
    gen = torch.Generator().manual_seed(0)
    args = (s.model, s.loss_fn, s.x, s.y)
    return {
        "ggn_vector_product": lambda: cv.ggn_vector_product(*args, v),
        "hessian_vector_product": lambda: cv.hessian_vector_product(*args, v),
        "diag_ggn_exact": lambda: cv.diag_ggn_exact(*args),
        "diag_ggn_mc": lambda: cv.diag_ggn_mc(*args, generator=gen),
        "kflr": lambda: cv.kflr(*args),
        "kfra": lambda: cv.kfra(*args),
        "kfac": lambda: cv.kfac(*args, generator=gen),
    }[quantity]


def _gradient(s: Setup) -> Callable[[], object]:
    params = s.params
    return lambda: torch.autograd.grad(s.loss_fn(s.model(s.x), s.y), params)


# ----------------------------------------------------------------------------- peers

BACKPACK_EXT = {
    "diag_ggn_exact": "DiagGGNExact",
    "diag_ggn_mc": "DiagGGNMC",
    "kflr": "KFLR",
    "kfra": "KFRA",
    "kfac": "KFAC",
}
CURVLINOPS_OP = {"ggn_vector_product": "GGNLinearOperator", "hessian_vector_product": "HessianLinearOperator"}


def _backpack(quantity: str, model_name: str, s: Setup) -> Callable[[], object]:
    backpack = pytest.importorskip("backpack")
    from backpack import extensions

    if isinstance(s.loss_fn, nn.BCEWithLogitsLoss) and s.y.shape[1] > 1:
        pytest.skip("BackPACK supports BCEWithLogitsLoss for scalar outputs only")
    model = backpack.extend(copy.deepcopy(s.model))
    loss_fn = backpack.extend(copy.deepcopy(s.loss_fn))
    ext = getattr(extensions, BACKPACK_EXT[quantity])()

    def run() -> None:
        model.zero_grad(set_to_none=True)
        with backpack.backpack(ext):
            loss_fn(model(s.x), s.y).backward()

    return run


def _curvlinops(quantity: str, s: Setup) -> Callable[[], object]:
    curvlinops = pytest.importorskip("curvlinops")
    op = getattr(curvlinops, CURVLINOPS_OP[quantity])(
        s.model, s.loss_fn, s.params, [(s.x, s.y)], check_deterministic=False
    )
    v = [torch.randn_like(p) for p in s.params]
    return lambda: op @ v


CASES = [("gradient", "torch")]
CASES += [(q, "ours") for q in ("ggn_vector_product", "hessian_vector_product", *BACKPACK_EXT)]
CASES += [(q, "backpack") for q in BACKPACK_EXT]
CASES += [(q, "curvlinops") for q in CURVLINOPS_OP]


@pytest.mark.parametrize("quantity,impl", CASES, ids=[f"{q}-{i}" for q, i in CASES])
@pytest.mark.parametrize("model_name", MODELS)
def test_curvature_cost(benchmark, model_name: str, quantity: str, impl: str) -> None:
    s = setup_for(model_name)
    if impl == "torch":
        fn = _gradient(s)
    elif impl == "ours":
        fn = _ours(quantity, s)
    elif impl == "backpack":
        fn = _backpack(quantity, model_name, s)
    else:
        fn = _curvlinops(quantity, s)
    benchmark.group = f"curvature-{model_name}"
    benchmark.extra_info.update({"model": model_name, "quantity": quantity, "impl": impl, "batch": BATCH})
    benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=1)
