"""Filter-normalised random directions in one ``nn.Linear`` layer (Li et al., NeurIPS 2018).

Li, Xu, Taylor, Studer & Goldstein (2018), "Visualizing the Loss Landscape of Neural
Nets", §4: a random Gaussian direction ``d`` is rescaled *filter by filter* to the
norm of the corresponding filter of the weights, so that a slice
``L(W + αA + βB)`` moves every unit by a comparable relative amount whatever the
scale of its weights (which ReLU networks leave free: scaling a unit's incoming
weights by ``c > 0`` and its outgoing ones by ``1/c`` does not change the function).
For a fully connected layer a filter is one *row* of ``W`` (out, in): the incoming
weights of one unit, so for every row ``i``

    d_i ← d_i / ‖d_i‖ · ‖W_i‖.

Biases: Li et al.'s code zeroes the direction's bias (and batch-norm) entries
(``ignore='biasbn'``); so does this module, and a direction here is nonzero only in
the *weight* of the one Linear layer it names (every other parameter, PReLU slopes
included, gets a zero direction). A row of ``W`` that is all zero gets a zero row.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from benchsuite.errors import ConfigError

__all__ = ["filter_normalise", "layer_direction", "linear_layers"]


def linear_layers(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The ``nn.Linear`` layers of ``model`` in module order, with their qualified names.

    Layer ``i`` of this list is the engine's block ``layer{i}``
    (:class:`benchsuite.curvature.model.ParamBlock`): index 0 is the first Linear layer.
    """
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]


def filter_normalise(direction: Tensor, weight: Tensor, eps: float = 1e-12) -> Tensor:
    """``direction`` with each row rescaled to the norm of the same row of ``weight``.

    ``d_i ← d_i · ‖W_i‖ / ‖d_i‖`` (Li et al. 2018, §4, for a Linear layer's filters).

    Args:
        direction: A random direction, (out, in).
        weight: The layer's weight, (out, in).
        eps: Rows of ``direction`` with a norm below this are set to zero (as are rows of
            ``weight`` that are zero).

    Returns:
        The filter-normalised direction, (out, in).
    """
    if direction.shape != weight.shape:
        raise ConfigError(f"Direction of shape {tuple(direction.shape)} does not match weight {tuple(weight.shape)}")
    d_norm = direction.norm(dim=1, keepdim=True)  # (out, 1)
    w_norm = weight.norm(dim=1, keepdim=True)  # (out, 1)
    scale = torch.where(d_norm > eps, w_norm / d_norm.clamp_min(eps), torch.zeros_like(d_norm))  # (out, 1)
    return direction * scale  # (out, in)


def layer_direction(model: nn.Module, layer: int, generator: torch.Generator) -> dict[str, Tensor]:
    """A filter-normalised Gaussian direction in the weight of Linear layer ``layer``.

    Args:
        model: The network (its current weights set the row norms).
        layer: Index into :func:`linear_layers` (0: the first Linear layer).
        generator: CPU random source of the Gaussian draw (same draws on every device).

    Returns:
        ``{parameter name: direction}`` with only that layer's weight, (out, in), in the
        weight's dtype and device; every other parameter's direction is zero (omitted).

    Raises:
        ConfigError: ``layer`` is out of range (the message names the valid indices).
    """
    layers = linear_layers(model)
    if not 0 <= layer < len(layers):
        raise ConfigError(f"Invalid layer: {layer}. Valid choices: {', '.join(map(str, range(len(layers))))} "
                          f"(the model's {len(layers)} Linear layers, 0 = first)")
    name, linear = layers[layer]
    w = linear.weight.detach()  # (out, in)
    d = torch.randn(w.shape, generator=generator, dtype=torch.float64).to(device=w.device, dtype=w.dtype)
    return {f"{name}.weight" if name else "weight": filter_normalise(d, w)}
