"""The probe the runner calls: a preset of statistics on a fixed probe batch.

Probes run outside the timed training work (ALGORITHMS.md §5); see
:mod:`benchsuite.probes.registry` for the statistics and presets.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from benchsuite.curvature import CurvatureError, SequentialModel
from benchsuite.errors import ConfigError, UnknownNameError
from benchsuite.probes.context import ProbeContext, ProbeOptions
from benchsuite.probes.registry import PRESETS, STATISTICS

__all__ = ["CurvatureProbe"]

log = logging.getLogger(__name__)


class CurvatureProbe:
    """Computes a preset of statistics on a fixed probe batch; the runner calls it per probe.

    Args:
        preset: ``none``, ``cheap`` or ``full``.
        model: The ``nn.Sequential`` being trained (read, never modified).
        loss_fn: Its torch loss module.
        batch: The fixed probe batch ``(x, y)``.
        seed: Seeds the random vectors (Hutchinson, Lanczos start) with the step.
        options: :class:`ProbeOptions` or a mapping of its fields.

    Raises:
        UnknownNameError: for an unknown preset (the message lists the valid ones).
        ConfigError: for an unsupported model, loss or option.

    Calling the probe restores the model's training mode and leaves ``.grad`` untouched
    (products use ``torch.autograd.grad``, never ``backward``).
    """

    def __init__(
        self,
        preset: str,
        model: nn.Module,
        loss_fn: nn.Module,
        batch: tuple[Tensor, Tensor],
        *,
        seed: int = 0,
        options: Mapping[str, Any] | ProbeOptions | None = None,
    ):
        if preset not in PRESETS:
            raise UnknownNameError("statistics preset", preset, PRESETS)
        self.preset = preset
        self.names = PRESETS[preset]
        for name in self.names:
            STATISTICS.get(name)
        self.options = ProbeOptions.from_mapping(options)
        self.seed = int(seed)
        try:
            self.net = SequentialModel(model) if self.names else None
        except CurvatureError as exc:
            raise ConfigError(str(exc)) from exc
        self.loss_fn = loss_fn
        self.x, self.y = batch
        self.state: dict[str, Any] = {}

    def __call__(self, step: int) -> dict[str, float]:
        """The preset's statistics at training step ``step`` (flat ``key -> float``)."""
        if not self.names:
            return {}
        model = self.net.model
        was_training = model.training
        device = self.x.device
        gen = torch.Generator(device=device)
        gen.manual_seed((self.seed * 1_000_003 + int(step)) % (2**63))
        ctx = ProbeContext(self.net, self.loss_fn, self.x, self.y, self.options, gen, self.state, int(step))
        out: dict[str, float] = {}
        try:
            model.eval()
            for name in self.names:
                try:
                    out.update(STATISTICS.get(name)(ctx))
                except (RuntimeError, ValueError, ArithmeticError) as exc:  # a probe must not end a run
                    log.warning("statistic %s failed at step %d: %s", name, step, exc)
                    out[f"{name}_failed"] = 1.0
        finally:
            ctx.release()
            model.train(was_training)
        return out
