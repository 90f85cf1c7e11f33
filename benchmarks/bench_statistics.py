"""pytest-benchmark: curvature statistics (top Hessian eigenvalue, Hutchinson trace) vs PyHessian.

Run with::

    pytest benchmarks/bench_statistics.py --benchmark-enable --benchmark-json=stats.json
    python benchmarks/report_statistics.py stats.json

or, for ratios timed side by side in one process (ours and PyHessian alternate, round
after round; medians)::

    python benchmarks/bench_statistics.py --rounds 9

Networks (one benchmark group per network and operation, so ``ours`` and
``pyhessian`` read side by side):

* ``mlp_ce``: 784-256-128-10 ReLU, ``CrossEntropyLoss``, N = 512 random inputs and labels;
* ``ae_mse``: 784-400-200-30-200-400-784 ReLU, ``MSELoss``, N = 256 random inputs in [0, 1].

Operations, each timed from the parameters to the number (the forward pass and the
gradient graph are built inside the timing for both implementations):

* ``top_eigenvalue``: ours is block Lanczos (:func:`benchsuite.curvature.linalg.top_eigenvalues`)
  on :class:`~benchsuite.curvature.products.HessianOperator` (one forward pass and
  gradient graph, batched double-backward products) to the relative residual
  an error bound (``r²/gap`` or ``r``, ``r = ‖H y − θ y‖``) of 10⁻² |θ| (``ours``: about
  the error PyHessian reaches) and of 10⁻³ |θ| (``ours_tight``), started from the
  gradient (free with the graph); PyHessian is
  ``hessian(model, criterion, data=(x, y), cuda=False).eigenvalues(top_n=1, maxIter=100, tol=1e-3)``
  (power iteration, stopped when the Rayleigh quotient changes by less than 10⁻³).
  Each round's relative error against a float64 reference is kept in ``extra_info``.
* ``trace``: a 10-vector Hutchinson trace; ours is
  :func:`~benchsuite.curvature.linalg.hutchinson_estimates` (one batched product of the
  10 Rademacher vectors); ``ours_taylor`` is
  :class:`~benchsuite.curvature.taylor.TaylorQuadraticForms` (second-order Taylor mode:
  ``zᵀ H z`` for the 10 vectors in one tangent sweep, no double backward; its probes
  from :func:`~benchsuite.curvature.taylor.rademacher_probes`); PyHessian is
  ``trace(maxIter=10, tol=-inf)`` (its tolerance test can never stop it early, so it
  always uses 10 vectors).

Both run in float32 on the CPU with the thread count of ``benchmarks/conftest.py``.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import logging
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
from torch import Tensor, nn

from benchsuite.curvature.linalg import (
    flat_product,
    hutchinson_estimates,
    rademacher,
    start_block,
    top_eigenvalues,
)
from benchsuite.curvature.products import HessianOperator
from benchsuite.curvature.taylor import TaylorQuadraticForms, rademacher_probes

log = logging.getLogger(__name__)

ROUNDS = 7
EIG_TOL = 1e-3  # PyHessian's tolerance (relative change of its Rayleigh quotient)
OUR_EIG_TOL = 1e-2  # ours: relative error bound (r²/gap or r) / |θ|, about PyHessian's achieved error
TIGHT_EIG_TOL = 1e-3  # ours_tight: PyHessian's nominal tolerance as our error bound (far more accurate)
EIG_BLOCK = 1  # block Lanczos block size: on one CPU thread a batch costs as much as its vectors
MAX_PRODUCTS = 200
TRACE_SAMPLES = 10


@dataclass
class Net:
    """A float32 ReLU network, its loss and one batch, with a float64 reference top eigenvalue."""

    name: str
    model: nn.Sequential
    loss_fn: nn.Module
    x: Tensor
    y: Tensor
    reference: float = float("nan")
    seeds: dict[str, int] = field(default_factory=dict)

    @property
    def params(self) -> list[Tensor]:
        return list(self.model.parameters())


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def _reference_top_eigenvalue(net: Net) -> float:
    """The top Hessian eigenvalue of a float64 copy, to a relative residual of 1e-9."""
    model = copy.deepcopy(net.model).double()
    x = net.x.double()
    y = net.y.double() if net.y.is_floating_point() else net.y
    op = HessianOperator(model, net.loss_fn, x, y)
    params = list(model.parameters())
    n = sum(p.numel() for p in params)
    gen = torch.Generator().manual_seed(12345)
    start = start_block(n, 8, gen, torch.float64, torch.device("cpu"))
    vals = top_eigenvalues(flat_product(op.matmat, params, list(range(len(params)))), start, 1,
                           tol=1e-9, max_products=400)
    return float(vals[0])


def make_net(name: str) -> Net:
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if name == "mlp_ce":
        model = _mlp([784, 256, 128, 10])
        x = torch.randn(512, 784, generator=gen)
        net = Net(name, model, nn.CrossEntropyLoss(), x, torch.randint(0, 10, (512,), generator=gen))
    elif name == "ae_mse":
        model = _mlp([784, 400, 200, 30, 200, 400, 784])
        x = torch.rand(256, 784, generator=gen)
        net = Net(name, model, nn.MSELoss(), x, x)
    else:
        raise ValueError(f"unknown network {name!r}")
    net.model.eval()
    net.reference = _reference_top_eigenvalue(net)
    return net


NETS = ["mlp_ce", "ae_mse"]
OPS = ["top_eigenvalue", "trace"]
_CACHE: dict[str, Net] = {}


def net_for(name: str) -> Net:
    if name not in _CACHE:
        _CACHE[name] = make_net(name)
    return _CACHE[name]


def _next_seed(net: Net, key: str) -> int:
    net.seeds[key] = net.seeds.get(key, 0) + 1
    return net.seeds[key]


# ----------------------------------------------------------------------------- ours


def ours_top_eigenvalue(net: Net, seed: int, tol: float | None = None) -> float:
    op = HessianOperator(net.model, net.loss_fn, net.x, net.y)
    params = net.params
    n = sum(p.numel() for p in params)
    gen = torch.Generator().manual_seed(seed)
    grad = torch.cat([g.reshape(-1) for g in op.gradient])  # (P,): free with the graph
    start = start_block(n, EIG_BLOCK, gen, params[0].dtype, params[0].device, grad)
    vals = top_eigenvalues(flat_product(op.matmat, params, list(range(len(params)))), start, 1,
                           tol=OUR_EIG_TOL if tol is None else tol, max_products=MAX_PRODUCTS)
    return float(vals[0])


def ours_trace(net: Net, seed: int) -> float:
    op = HessianOperator(net.model, net.loss_fn, net.x, net.y)
    z = rademacher(net.params, TRACE_SAMPLES, torch.Generator().manual_seed(seed))
    return float(hutchinson_estimates(op.matmat, z, [list(range(len(z)))]).mean())


def ours_taylor_trace(net: Net, seed: int) -> float:
    forms = TaylorQuadraticForms(net.model, net.loss_fn, net.x, net.y)
    z = rademacher_probes(net.params, TRACE_SAMPLES, torch.Generator().manual_seed(seed))
    return float(forms(z).mean())


# ----------------------------------------------------------------------------- PyHessian


def _pyhessian(net: Net, seed: int):
    from pyhessian import hessian

    torch.manual_seed(seed)
    net.model.zero_grad(set_to_none=True)  # its constructor accumulates into .grad
    return hessian(net.model, net.loss_fn, data=(net.x, net.y), cuda=False)


def pyhessian_top_eigenvalue(net: Net, seed: int) -> float:
    try:
        vals, _ = _pyhessian(net, seed).eigenvalues(top_n=1, maxIter=100, tol=EIG_TOL)
        return float(vals[0])
    finally:
        net.model.zero_grad(set_to_none=True)  # frees the graph it kept in .grad


def pyhessian_trace(net: Net, seed: int) -> float:
    try:
        vhv = _pyhessian(net, seed).trace(maxIter=TRACE_SAMPLES, tol=float("-inf"))
        assert len(vhv) == TRACE_SAMPLES
        return float(sum(vhv) / len(vhv))
    finally:
        net.model.zero_grad(set_to_none=True)


FUNCTIONS: dict[tuple[str, str], Callable[[Net, int], float]] = {
    ("top_eigenvalue", "ours"): ours_top_eigenvalue,
    ("top_eigenvalue", "ours_tight"): lambda net, seed: ours_top_eigenvalue(net, seed, TIGHT_EIG_TOL),
    ("top_eigenvalue", "pyhessian"): pyhessian_top_eigenvalue,
    ("trace", "ours"): ours_trace,
    ("trace", "ours_taylor"): ours_taylor_trace,
    ("trace", "pyhessian"): pyhessian_trace,
}


# ----------------------------------------------------------------------------- pytest-benchmark


CASES = [(op, impl) for (op, impl) in FUNCTIONS]


@pytest.mark.parametrize("op,impl", CASES, ids=[f"{op}-{impl}" for op, impl in CASES])
@pytest.mark.parametrize("net_name", NETS)
def test_statistics_cost(benchmark, net_name: str, op: str, impl: str) -> None:
    pytest.importorskip("pyhessian")  # the peer, and the groups read as ratios against it
    net = net_for(net_name)
    fn = FUNCTIONS[op, impl]
    values: list[float] = []

    def run() -> None:
        values.append(fn(net, _next_seed(net, f"{op}/{impl}")))

    benchmark.group = f"statistics-{net_name}-{op}"
    benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    info = {"net": net_name, "op": op, "impl": impl, "values": values,
            "tol": {"ours": OUR_EIG_TOL, "ours_tight": TIGHT_EIG_TOL, "pyhessian": EIG_TOL}[impl]
            if op == "top_eigenvalue" else None}
    if op == "top_eigenvalue":
        info["reference"] = net.reference
        info["rel_errors"] = [abs(v - net.reference) / abs(net.reference) for v in values]
    benchmark.extra_info.update(info)


# ----------------------------------------------------------------------------- interleaved


def interleaved(rounds: int, nets: list[str], ops: list[str]) -> list[dict]:
    """Time ours and PyHessian alternately (same seed per round), ``rounds`` times; medians and ratios."""
    rows = []
    for name in nets:
        net = net_for(name)
        for op in ops:
            impls = [i for (o, i) in FUNCTIONS if o == op]
            times: dict[str, list[float]] = {i: [] for i in impls}
            values: dict[str, list[float]] = {i: [] for i in impls}
            for r in range(rounds + 1):  # round 0 warms up
                for impl in impls if r % 2 == 0 else impls[::-1]:
                    t0 = time.perf_counter()
                    v = FUNCTIONS[op, impl](net, 1000 + r)
                    dt = time.perf_counter() - t0
                    if r:
                        times[impl].append(dt)
                        values[impl].append(v)
            for impl in impls:
                if impl == "pyhessian":
                    continue
                row = {"net": name, "op": op, "impl": impl, "reference": net.reference,
                       "ours": statistics.median(times[impl]), "pyhessian": statistics.median(times["pyhessian"]),
                       "ours_values": values[impl], "pyhessian_values": values["pyhessian"],
                       "ratio": statistics.median(a / b for a, b in zip(times[impl], times["pyhessian"]))}
                rows.append(row)
                log.info("%s %s %s: %.3fs, PyHessian %.3fs, median per-round ratio %.2f",
                         name, op, impl, row["ours"], row["pyhessian"], row["ratio"])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Interleaved ours-vs-PyHessian timing of the statistics")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--nets", default=",".join(NETS))
    parser.add_argument("--ops", default=",".join(OPS))
    parser.add_argument("--eig-tol", type=float, default=OUR_EIG_TOL)
    args = parser.parse_args(argv)
    globals()["OUR_EIG_TOL"] = args.eig_tol
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    rows = interleaved(args.rounds, args.nets.split(","), args.ops.split(","))
    from benchmarks.report_statistics import interleaved_table

    sys.stdout.write(interleaved_table(rows) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
