"""Loss-surface slices through one layer and across two, with a check of "no differentiable local maxima".

A slice is the full-batch training loss on a 2-D plane through the weights ``W``,

    L(α, β) = L(W + α A + β B),   (α, β) ∈ [−span, span]²,

with ``A`` and ``B`` random Gaussian directions, filter-normalised as in Li et al.
(2018), "Visualizing the Loss Landscape of Neural Nets", NeurIPS (each row of a
direction scaled to the norm of the same row of ``W``; biases get a zero direction:
:mod:`benchsuite.analysis.directions`). Two slices are drawn per network:

* ``within``: ``A`` and ``B`` both in the weight of one Linear layer ``i`` (default: a
  hidden layer in the middle of the stack);
* ``across``: ``A`` in layer ``i`` (the same ``A``) and ``B`` in another layer ``j``
  (default: the next one).

**The check.** Botev, Ritter & Barber (2017), "Practical Gauss-Newton Optimisation for
Deep Learning", ICML, §2–3: for a piecewise-linear activation ``f'' = 0`` away from
its kinks, so the pre-activation Hessian recursion
``ℋ_l = B_l W̃ᵀ_{l+1} ℋ_{l+1} W̃_{l+1} B_l + D_l`` loses ``D_l = diag(f''(h_l) ⊙ ∂E/∂a_l)``
and each layer's own Hessian block ``H_l = Σ_n (ā ā^T) ⊗ ℋ_{l,n}`` equals its
Gauss-Newton block, PSD for a convex loss: the loss has no differentiable local
maximum in the weights of one layer. Restricted to the within-layer plane the slice
Hessian ``∇²_{(α,β)} L = [A B]ᵀ H_l [A B]`` (2×2) is then PSD wherever ``L`` is twice
differentiable. For a smooth activation (tanh) ``D_l ≠ 0`` and it need not be; across
two layers the network is bilinear in ``(W_i, W_j)`` and the slice Hessian of a
piecewise-linear net can be indefinite too (the claim is about one layer).

At ``points`` random ``(α, β)`` of a slice the check computes the 2×2 Hessian exactly
(``torch.func.hessian`` of the scalar function of ``(α, β)``, float64), skips points
where the function is not smooth (a pre-activation that moves with ``(α, β)`` within
``kink_eps`` of a kink: ``|h| < ε`` for elementwise piecewise-linear activations, whose
kinks are at 0; a gap below ``ε`` between the two largest pieces of a maxout unit),
and records the smallest eigenvalue at each smooth point. A point has negative
curvature when ``λ_min < −rtol · max|λ|`` there; the slice is PSD when no smooth point
has.

Outputs (:func:`write_surface`), in one directory per network:
``check.json`` (the settings, the source, and per slice the points sampled, smooth
points, the smallest eigenvalue, the share of points with negative curvature, the
verdict and each sampled point), ``surface.npz`` (the grids), and per slice a contour
plot and a 3-D surface, PNG and SVG (:mod:`benchsuite.analysis.figures`).
:func:`surface_section` turns the directories under ``<results>/surface/`` into
markdown for a report.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from benchsuite.analysis.directions import layer_direction, linear_layers
from benchsuite.analysis.sources import Loaded, Source, load
from benchsuite.config.spec import RunSpec
from benchsuite.contracts.activation import ACTIVATIONS, Activation
from benchsuite.curvature.modules import Maxout
from benchsuite.errors import ConfigError

__all__ = [
    "SLICES",
    "SliceResult",
    "Surface",
    "SurfaceConfig",
    "check_slice",
    "compute_surface",
    "default_layers",
    "grid_loss",
    "kink_margin",
    "make_surface",
    "slice_function",
    "slice_hessians",
    "surface_section",
    "verdict_line",
    "write_surface",
]
log = logging.getLogger(__name__)

SLICES = ("within", "across")
CLAIM = "Botev, Ritter & Barber (2017): piecewise-linear net, one layer's weights: PSD (no differentiable local maxima)"


@dataclass(frozen=True)
class SurfaceConfig:
    """How to slice and check.

    Attributes:
        resolution: Grid points per axis (the grid is ``resolution²`` evaluations).
        span: The grid covers ``[−span, span]²`` (in units of the filter-normalised directions:
            ``span = 1`` moves every row of the layer by its own norm).
        points: Random ``(α, β)`` per slice at which the slice Hessian is checked.
        examples: Training examples of the loss (the first ones, as the runner's
            ``eval_train_examples``; None: the whole training split).
        layer: Linear layer ``i`` of both slices (0 = first; None: a middle hidden layer).
        layer2: Linear layer ``j`` of the across slice (None: ``i + 1``, or ``i − 1`` for the last).
        kink_eps: Points with a moving pre-activation within this of a kink are not smooth.
        rtol: Negative curvature means ``λ_min < −rtol · max|λ|`` at a point.
        direction_seed: Seeds the directions and the sampled points.
        chunk_elements: Bound on ``points × examples × units`` per vmapped chunk of the grid.
    """

    resolution: int = 41
    span: float = 1.0
    points: int = 50
    examples: int | None = 1000
    layer: int | None = None
    layer2: int | None = None
    kink_eps: float = 1e-6
    rtol: float = 1e-6
    direction_seed: int = 0
    chunk_elements: int = 20_000_000

    def __post_init__(self) -> None:
        if not isinstance(self.resolution, int) or self.resolution < 3:
            raise ConfigError(f"Invalid resolution: {self.resolution!r} (need an integer >= 3)")
        if not (isinstance(self.span, (int, float)) and math.isfinite(self.span) and self.span > 0):
            raise ConfigError(f"Invalid span: {self.span!r} (need a positive number)")
        if not isinstance(self.points, int) or self.points < 1:
            raise ConfigError(f"Invalid points: {self.points!r} (need a positive integer)")
        if self.examples is not None and (not isinstance(self.examples, int) or self.examples < 1):
            raise ConfigError(f"Invalid examples: {self.examples!r} (need a positive integer, or None for all)")
        for name in ("layer", "layer2"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ConfigError(f"Invalid {name}: {value!r} (need a Linear layer index >= 0)")
        if not (self.kink_eps >= 0 and self.rtol >= 0):
            raise ConfigError(f"Invalid kink_eps/rtol: {self.kink_eps}, {self.rtol} (need numbers >= 0)")


@dataclass
class SliceResult:
    """One slice: its grid and its check.

    Attributes:
        name: ``within`` or ``across``.
        layers: Linear layers of the directions ``A`` and ``B``.
        alphas: Grid of α, (R,).
        betas: Grid of β, (R,).
        loss: ``loss[i, j] = L(α_j, β_i)``, (R, R) (rows: β, as ``contour(α, β, loss)`` expects).
        check: The check's result (see :func:`check_slice`).
    """

    name: str
    layers: tuple[int, int]
    alphas: np.ndarray
    betas: np.ndarray
    loss: np.ndarray
    check: dict[str, Any]


@dataclass
class Surface:
    """The slices of one network and the facts about it (``meta``, written to ``check.json``)."""

    meta: dict[str, Any]
    slices: list[SliceResult]
    files: list[Path] = field(default_factory=list)


# --------------------------------------------------------------------------------------
# The function of (α, β)
# --------------------------------------------------------------------------------------


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Leaf modules in execution order (an ``nn.Sequential`` runs its children in this order)."""
    return [(name, m) for name, m in model.named_modules() if not list(m.children())]


def _perturbed(base: Mapping[str, Tensor], ab: Tensor, dir_a: Mapping[str, Tensor],
               dir_b: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``W + α A + β B`` as a parameter dict (``ab = (α, β)``)."""
    params = dict(base)
    for name, d in dir_a.items():
        params[name] = params[name] + ab[0] * d
    for name, d in dir_b.items():
        params[name] = params[name] + ab[1] * d
    return params


def slice_function(model: nn.Module, loss_fn: nn.Module, x: Tensor, y: Tensor, dir_a: Mapping[str, Tensor],
                   dir_b: Mapping[str, Tensor]) -> Callable[[Tensor], Tensor]:
    """``(α, β) ↦ L(W + αA + βB)`` as a pure function for ``torch.func`` (vmap, hessian).

    Args:
        model: The network at ``W`` (its parameters are read, never changed).
        loss_fn: The task's loss module (reduction: mean, as the runner's evaluations).
        x: Inputs, (N, D_in).
        y: Targets, (N,) or (N, D_out).
        dir_a: Direction ``A`` by parameter name (parameters not named: zero).
        dir_b: Direction ``B`` likewise.

    Returns:
        ``f(ab)`` with ``ab`` of shape (2,), returning the scalar loss ().
    """
    base = {name: p.detach() for name, p in model.named_parameters()}

    def f(ab: Tensor) -> Tensor:  # (2,) -> ()
        return loss_fn(torch.func.functional_call(model, _perturbed(base, ab, dir_a, dir_b), (x,)), y)

    return f


def grid_loss(f: Callable[[Tensor], Tensor], alphas: Tensor, betas: Tensor, chunk: int = 256) -> Tensor:
    """``L(α_j, β_i)`` on the grid, (R_β, R_α), by ``torch.func.vmap`` over chunks of grid points."""
    bb, aa = torch.meshgrid(betas, alphas, indexing="ij")  # (R_β, R_α) each
    points = torch.stack([aa.reshape(-1), bb.reshape(-1)], dim=1)  # (R_β·R_α, 2)
    with torch.no_grad():
        try:
            values = torch.func.vmap(f, chunk_size=max(1, chunk))(points)  # (R_β·R_α,)
        except RuntimeError as exc:  # a module whose forward does not batch under vmap
            log.debug("vmapped grid failed (%s); one point at a time", exc)
            values = torch.stack([f(p) for p in points])  # (R_β·R_α,)
    return values.reshape(aa.shape)


def slice_hessians(f: Callable[[Tensor], Tensor], points: Tensor) -> Tensor:
    """The exact 2×2 slice Hessians ``∂²L/∂(α, β)²`` at ``points`` (K, 2): (K, 2, 2).

    ``torch.func.hessian`` (forward-over-reverse) of the scalar ``f``, vmapped over the
    points (one point at a time where a module's derivative formulas do not batch under
    vmap, as PReLU's forward-mode gradient in torch 2.13); symmetrised (it is symmetric
    up to rounding).
    """
    try:
        h = torch.func.vmap(torch.func.hessian(f))(points)  # (K, 2, 2)
    except RuntimeError as exc:
        log.debug("vmapped hessian failed (%s); one point at a time", exc)
        h = torch.stack([torch.func.hessian(f)(p) for p in points])  # (K, 2, 2)
    return 0.5 * (h + h.transpose(-1, -2))


# --------------------------------------------------------------------------------------
# Smoothness: distance to the nearest kink
# --------------------------------------------------------------------------------------


def kink_margin(module: nn.Module, h: Tensor, activation: Activation) -> float:
    """How far the input ``h`` (N, d) of an activation module is from a kink (``inf``: smooth).

    Elementwise piecewise-linear activations (relu, leaky_relu, prelu, abs) have their
    kink at 0: the margin is ``min |h|``. Maxout's kinks are ties between pieces: the
    margin is the smallest gap between the largest and the second largest piece of a
    unit. Smooth activations have none.
    """
    if not activation.piecewise_linear:
        return math.inf
    if isinstance(module, Maxout) or not activation.elementwise:
        pieces = int(getattr(module, "pieces", 2))
        grouped = h.reshape(*h.shape[:-1], h.shape[-1] // pieces, pieces)  # (N, d, k)
        top = grouped.topk(2, dim=-1).values  # (N, d, 2)
        return float((top[..., 0] - top[..., 1]).min()) if top.numel() else math.inf
    return float(h.abs().min()) if h.numel() else math.inf


@torch.no_grad()
def _margin_at(model: nn.Module, params: Mapping[str, Tensor], x: Tensor, first_moving: int,
               activation: Activation) -> float:
    """The smallest kink margin of the activations after leaf module ``first_moving`` at ``params``.

    Pre-activations before the first perturbed layer do not move with ``(α, β)``: a unit
    at its kink there keeps one piece over the whole slice, so it is no kink *of the slice*.
    """
    margin, a = math.inf, x
    for k, (name, m) in enumerate(_leaves(model)):
        own = {pname: params[f"{name}.{pname}" if name else pname] for pname, _ in m.named_parameters()}
        if k > first_moving and not isinstance(m, nn.Linear):
            margin = min(margin, kink_margin(m, a, activation))
        a = torch.func.functional_call(m, own, (a,))
    return margin


# --------------------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------------------


def check_slice(model: nn.Module, loss_fn: nn.Module, x: Tensor, y: Tensor, dir_a: Mapping[str, Tensor],
                dir_b: Mapping[str, Tensor], points: Tensor, activation: Activation, *,
                within: bool, kink_eps: float = 1e-6, rtol: float = 1e-6) -> dict[str, Any]:
    """Check the slice Hessian for negative curvature at ``points`` (K, 2).

    Args:
        model: The network at ``W`` (float64 for an exact check).
        loss_fn, x, y: The loss and the examples of the slice.
        dir_a, dir_b: The slice's directions.
        points: The sampled ``(α, β)``, (K, 2).
        activation: The network's activation entry (its facts decide where kinks are).
        within: Whether both directions lie in one layer (the claim's setting).
        kink_eps: Points with a moving pre-activation within this of a kink are skipped.
        rtol: Negative curvature at a point: ``λ_min < −rtol · max|λ|``.

    Returns:
        A JSON-ready dict: ``points``, ``smooth_points``, ``min_eig`` (smallest eigenvalue
        over smooth points), ``min_relative_eig`` (smallest ``λ_min / max|λ|``),
        ``max_abs_eig``, ``negative_points``, ``negative_share`` (of smooth points),
        ``psd`` (True/False; None without smooth points), ``claim`` (what the background
        predicts), ``consistent_with_claim`` and ``samples`` (per point: α, β, loss,
        kink margin, smooth, both eigenvalues).
    """
    f = slice_function(model, loss_fn, x, y, dir_a, dir_b)
    moving = {name.rsplit(".", 1)[0] for name in (*dir_a, *dir_b)}
    first_moving = min(k for k, (name, _) in enumerate(_leaves(model)) if name in moving)
    base = {name: p.detach() for name, p in model.named_parameters()}
    hessians = slice_hessians(f, points)  # (K, 2, 2)
    eigs = torch.linalg.eigvalsh(hessians)  # (K, 2), ascending
    with torch.no_grad():
        losses = torch.stack([f(p) for p in points])  # (K,)
    samples, smooth_eigs = [], []
    for k in range(points.shape[0]):
        params = _perturbed(base, points[k], dir_a, dir_b)
        margin = _margin_at(model, params, x, first_moving, activation)
        lo, hi = float(eigs[k, 0]), float(eigs[k, 1])
        smooth = margin > kink_eps
        scale = max(abs(lo), abs(hi))
        negative = smooth and lo < -rtol * scale
        samples.append({"alpha": float(points[k, 0]), "beta": float(points[k, 1]), "loss": float(losses[k]),
                        "kink_margin": margin if math.isfinite(margin) else None, "smooth": smooth,
                        "eig_min": lo, "eig_max": hi, "negative": negative})
        if smooth:
            smooth_eigs.append((lo, hi, lo / scale if scale > 0 else 0.0, negative))
    n_smooth = len(smooth_eigs)
    n_negative = sum(1 for *_, neg in smooth_eigs if neg)
    pl = activation.piecewise_linear
    if pl and within:
        claim = "PSD"
    elif within:
        claim = "none (smooth activation: f'' != 0, negative curvature possible)"
    else:
        claim = "none (across two layers the net is bilinear: negative curvature possible)"
    psd = None if n_smooth == 0 else n_negative == 0
    return {
        "points": int(points.shape[0]),
        "smooth_points": n_smooth,
        "kink_eps": kink_eps,
        "rtol": rtol,
        "min_eig": min((e[0] for e in smooth_eigs), default=None),
        "min_relative_eig": min((e[2] for e in smooth_eigs), default=None),
        "max_abs_eig": max((max(abs(e[0]), abs(e[1])) for e in smooth_eigs), default=None),
        "negative_points": n_negative,
        "negative_share": n_negative / n_smooth if n_smooth else None,
        "psd": psd,
        "claim": claim,
        "consistent_with_claim": (psd if claim == "PSD" else True) if psd is not None else None,
        "samples": samples,
    }


def verdict_line(check: Mapping[str, Any], name: str, layers: tuple[int, int]) -> str:
    """One line for the CLI: the slice, the verdict, the numbers, and what the background predicts."""
    where = f"within layer {layers[0]}" if name == "within" else f"across layers {layers[0]} and {layers[1]}"
    n, s, neg = check["points"], check["smooth_points"], check["negative_points"]
    if check["psd"] is None:
        return f"{where}: no smooth point among {n} sampled (all within {check['kink_eps']:g} of a kink): no verdict"
    skipped = f"; {n - s} near a kink skipped" if s < n else ""
    if check["psd"]:
        head = f"PSD at all {s}/{n} smooth points (min eig {check['min_eig']:.3g}{skipped})"
    else:
        head = (f"NOT PSD: negative curvature at {neg}/{s} smooth points ({100 * check['negative_share']:.0f}%, "
                f"min eig {check['min_eig']:.3g}, min eig/max|eig| {check['min_relative_eig']:.3g}{skipped})")
    if check["claim"] == "PSD":
        tail = "as Botev et al. (2017) predict" if check["psd"] else "CONTRADICTS the within-layer PSD claim"
    else:
        tail = "no PSD claim here (" + check["claim"].split("(", 1)[-1].rstrip(")") + ")"
    return f"{where}: {head} - {tail}"


# --------------------------------------------------------------------------------------
# A network's surfaces
# --------------------------------------------------------------------------------------


def default_layers(model: nn.Module, layer: int | None = None, layer2: int | None = None) -> tuple[int, int | None]:
    """Layers ``(i, j)`` of the slices: ``i`` a hidden layer in the middle, ``j`` its neighbour.

    With ``n`` Linear layers, hidden ones are ``0 … n−2`` (the last maps to the logits);
    the default ``i = (n − 1) // 2`` (digits 64-32-32-10: layer 1, the 32×32 one) and
    ``j = i + 1`` (``i − 1`` when ``i`` is the last). ``j`` is None for a one-layer model.

    Raises:
        ConfigError: an index out of range, or ``j == i`` (names the valid indices).
    """
    n = len(linear_layers(model))
    valid = ", ".join(map(str, range(n)))
    i = (n - 1) // 2 if layer is None else layer
    if not 0 <= i < n:
        raise ConfigError(f"Invalid layer: {i}. Valid choices: {valid} (the model's {n} Linear layers, 0 = first)")
    if layer2 is None:
        j = i + 1 if i + 1 < n else (i - 1 if i > 0 else None)
    else:
        j = layer2
        if not 0 <= j < n or j == i:
            raise ConfigError(f"Invalid layer2: {j}. Valid choices: {', '.join(str(k) for k in range(n) if k != i)} "
                              f"(another of the model's {n} Linear layers than layer {i})")
    return i, j


def compute_surface(loaded: Loaded, config: SurfaceConfig = SurfaceConfig()) -> Surface:
    """The within-layer and across-layer slices of ``loaded``'s network, with their checks.

    Directions (A, B of ``within``, then B of ``across``; ``across`` reuses ``within``'s A)
    come from a CPU generator seeded with ``config.direction_seed``; the sampled check
    points from one seeded with ``direction_seed + 1``. Everything is float64.
    """
    t0 = time.perf_counter()
    model, spec = loaded.model, loaded.spec
    activation = ACTIVATIONS.get(spec.activation)
    train = loaded.train
    n = len(train) if config.examples is None else min(config.examples, len(train))
    x, y = train.inputs[:n], train.targets[:n]  # (n, D_in), (n,) or (n, D_out)
    loss_fn = loaded.task.loss_fn()
    i, j = default_layers(model, config.layer, config.layer2)
    gen = torch.Generator().manual_seed(config.direction_seed)
    a_i = layer_direction(model, i, gen)
    b_i = layer_direction(model, i, gen)
    planes: list[tuple[str, tuple[int, int], dict[str, Tensor], dict[str, Tensor]]] = [("within", (i, i), a_i, b_i)]
    if j is not None:
        planes.append(("across", (i, j), a_i, layer_direction(model, j, gen)))
    else:
        log.warning("the model has one Linear layer: no across-layer slice")
    sampler = torch.Generator().manual_seed(config.direction_seed + 1)
    points = (torch.rand((config.points, 2), generator=sampler, dtype=torch.float64) * 2 - 1) * config.span  # (K, 2)
    axis = torch.linspace(-config.span, config.span, config.resolution, dtype=torch.float64)  # (R,)
    units = sum(m.weight.shape[0] for _, m in linear_layers(model))
    chunk = max(1, config.chunk_elements // max(1, n * units))
    slices = []
    for name, layers, dir_a, dir_b in planes:
        f = slice_function(model, loss_fn, x, y, dir_a, dir_b)
        loss = grid_loss(f, axis, axis, chunk)  # (R, R)
        check = check_slice(model, loss_fn, x, y, dir_a, dir_b, points, activation, within=name == "within",
                            kink_eps=config.kink_eps, rtol=config.rtol)
        check["layers"] = list(layers)
        slices.append(SliceResult(name, layers, axis.numpy(), axis.numpy(), loss.numpy(), check))
        log.info("slice %s %s: %s", name, layers, verdict_line(check, name, layers))
    with torch.no_grad():
        centre = float(loss_fn(model(x), y))
    layer_shapes = [list(m.weight.shape) for _, m in linear_layers(model)]
    meta = {
        "task": spec.task, "activation": spec.activation, "size": spec.size, "seed": spec.seed,
        "data_seed": spec.data_seed, "task_options": dict(spec.task_options),
        "activation_options": dict(spec.activation_options), "piecewise_linear": activation.piecewise_linear,
        "source": loaded.label, "source_note": loaded.note, "source_details": loaded.details,
        "layer_shapes": layer_shapes, "examples": n, "loss_at_centre": centre,
        "loss": f"{loaded.task.loss_kind.value} (mean over the first {n} training examples; no weight cost)",
        "directions": ("Gaussian, filter-normalised per row of the layer's weight (Li et al. 2018); biases and "
                       "every other parameter: zero direction; across reuses within's A"),
        "config": asdict(config), "dtype": "float64", "claim": CLAIM,
        "seconds": time.perf_counter() - t0,
    }
    return Surface(meta, slices)


def _json_ready(value: Any) -> Any:
    """``value`` with non-finite floats as strings, so ``check.json`` is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_surface(surface: Surface, out_dir: Path) -> list[Path]:
    """Write ``check.json``, ``surface.npz`` and the figures of every slice into ``out_dir``."""
    from benchsuite.analysis.figures import plot_slice

    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for s in surface.slices:
        files += plot_slice(s, surface.meta, out_dir)
    grids = {f"{s.name}_loss": s.loss for s in surface.slices}
    np.savez_compressed(out_dir / "surface.npz", alphas=surface.slices[0].alphas, betas=surface.slices[0].betas,
                        **grids)
    files.append(out_dir / "surface.npz")
    doc = {"meta": surface.meta, "slices": {s.name: s.check for s in surface.slices}}
    (out_dir / "check.json").write_text(json.dumps(_json_ready(doc), indent=1, allow_nan=False) + "\n",
                                        encoding="utf-8")
    files.insert(0, out_dir / "check.json")
    surface.files = files
    return files


def make_surface(source: Source, spec: RunSpec | None, config: SurfaceConfig = SurfaceConfig(),
                 out: Path | None = None, results: Path | None = None,
                 expect: Mapping[str, Any] | None = None) -> tuple[Surface, Path]:
    """Load the weights, compute the slices and write them: what ``benchsuite surface`` does.

    Args:
        source: Where the weights come from.
        spec: The network (kinds ``init``, ``checkpoint``); None for ``run`` (the record's).
        config: Slicing and checking settings.
        out: Output directory (default: ``<results or results>/surface/<task>-<activation>-<source>``).
        results: The results directory (the root of the default ``out``).
        expect: Kind ``run``: values the record's spec must have (see :func:`~benchsuite.analysis.sources.load`).

    Returns:
        The surface and the directory it was written to.
    """
    loaded = load(source, spec, expect)
    surface = compute_surface(loaded, config)
    if out is None:
        out = Path(results or "results") / "surface" / f"{loaded.spec.task}-{loaded.spec.activation}-{loaded.label}"
    write_surface(surface, out)
    return surface, out


# --------------------------------------------------------------------------------------
# Report section
# --------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def surface_section(results_dir: Path, out_dir: Path) -> tuple[list[str], list[Path]]:
    """Markdown lines and copied figures for every surface under ``<results_dir>/surface/``.

    Each directory with a ``check.json`` gives a sub-section: the source, a table of its
    slices' checks (smooth points, smallest eigenvalue, share with negative curvature,
    PSD verdict, what the background claims), and its contour plots, copied into
    ``out_dir`` as ``surface-<dir>-<slice>-contour.png`` and linked as images.
    Nothing under ``results_dir`` is modified.

    Returns:
        ``(lines, files)``: no lines and no files when there is no surface.
    """
    root = Path(results_dir) / "surface"
    found = sorted(root.glob("*/check.json")) if root.is_dir() else []
    if not found:
        return [], []
    lines = ["", "## Loss surfaces (2-D slices) and the within-layer PSD check", "",
             ("Full-batch training loss on planes `W + αA + βB` through the weights, A and B random directions "
             "filter-normalised as in Li et al. (2018); at random smooth points of each plane the exact 2×2 "
             "Hessian in (α, β) is checked for negative curvature. Botev et al. (2017): for piecewise-linear "
             "activations the Hessian of one layer's weights equals its Gauss-Newton block, so the `within` "
             "slice is PSD (no differentiable local maxima); the smooth controls and the `across` slices carry "
             "no such claim.")]
    files: list[Path] = []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in found:
        name = path.parent.name
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            meta, checks = doc["meta"], doc["slices"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            lines += ["", f"### {name}", "", f"Skipped: unreadable `{path}` ({type(exc).__name__})."]
            continue
        note = (f"{meta.get('source_note', '')}; loss at W {_fmt(meta.get('loss_at_centre'))} on "
                f"{meta.get('examples')} training examples.")
        header = ("| slice | layers | smooth / sampled | min eig | min eig / max abs eig | negative share | PSD "
                  "| claim | consistent |")
        lines += ["", f"### {meta.get('task')} · {meta.get('activation')} · {meta.get('source')}", "",
                  note, "", header,
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        images = []
        for slice_name, c in checks.items():
            layers = " & ".join(map(str, c.get("layers", [])))
            lines.append(f"| {slice_name} | {layers} | {c.get('smooth_points')} / {c.get('points')} | "
                         f"{_fmt(c.get('min_eig'))} | {_fmt(c.get('min_relative_eig'))} | "
                         f"{_fmt(c.get('negative_share'))} | {_fmt(c.get('psd'))} | {c.get('claim')} | "
                         f"{_fmt(c.get('consistent_with_claim'))} |")
            png = path.parent / f"{slice_name}-contour.png"
            if png.is_file():
                target = out_dir / f"surface-{name}-{slice_name}-contour.png"
                shutil.copyfile(png, target)
                files.append(target)
                images.append(f"![{meta.get('task')} {meta.get('activation')} {meta.get('source')}: "
                              f"{slice_name} slice, layers {layers}]({target.name})")
        lines += ["", *images] if images else []
    return lines, files
