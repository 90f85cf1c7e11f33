"""Deep autoencoder on synthetic CURVES-like images.

The CURVES set of Hinton & Salakhutdinov (2006) holds 28×28 grey-level images of
smooth curves drawn through random points. We generate a set in that spirit
locally: each image shows a parametric quadratic through three random points in
the unit square, rendered with a soft (Gaussian) stroke into pixel intensities in
[0, 1]. The autoencoder is the paper's encoder 784-400-200-100-50-25-6 (linear code
units) with a mirrored decoder and sigmoid cross-entropy on the logits.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from benchsuite.tasks._autoencoder import AutoencoderTask

from benchsuite.contracts.task import TASKS, Split, Target, TaskData


@functools.lru_cache(maxsize=8)
def render_curves(n: int, image_size: int, seed: int, stroke: float = 0.6) -> np.ndarray:
    """``n`` images (n, image_size²) of smooth curves, a deterministic function of ``seed``.

    Each curve is the quadratic ``c(t) = Σ_j ℓ_j(t) p_j`` that passes through three
    random points ``p_0, p_1, p_2`` at ``t = 0, ½, 1`` (Lagrange basis ``ℓ_j``); pixel
    intensity is ``max_t exp(−d(pixel, c(t))² / (2 s²))`` with ``s = stroke`` pixels,
    evaluated on the pixels within 3 s of each of the curve's sample points.
    """
    rng = np.random.default_rng(seed)
    pts = torch.from_numpy(rng.uniform(0.1, 0.9, size=(n, 3, 2)) * (image_size - 1))  # (n, 3, 2)
    t = torch.linspace(0.0, 1.0, 4 * image_size, dtype=torch.float64)  # (T,)
    basis = torch.stack([2 * (t - 0.5) * (t - 1), -4 * t * (t - 1), 2 * t * (t - 0.5)], dim=1)  # (T, 3)
    radius = int(np.ceil(3 * stroke))
    offs = torch.arange(-radius, radius + 1, dtype=torch.float64)
    offs = torch.stack(torch.meshgrid(offs, offs, indexing="ij"), -1).reshape(-1, 2)  # (K, 2)
    out = torch.zeros(n, image_size * image_size, dtype=torch.float64)
    for start in range(0, n, 1024):
        curve = torch.einsum("tj,njd->ntd", basis, pts[start : start + 1024])  # (b, T, 2)
        pix = curve.round()[:, :, None, :] + offs  # (b, T, K, 2) neighbouring pixel centres
        d2 = ((pix - curve[:, :, None, :]) ** 2).sum(-1)  # (b, T, K)
        inside = ((pix >= 0) & (pix <= image_size - 1)).all(-1)  # (b, T, K)
        val = torch.exp(-d2 / (2 * stroke**2)) * inside  # (b, T, K)
        idx = (pix[..., 0] * image_size + pix[..., 1]).clamp(0, image_size**2 - 1).long()  # (b, T, K)
        block = out[start : start + 1024]
        block.scatter_reduce_(1, idx.flatten(1), val.flatten(1), reduce="amax")
    return out.to(torch.float32).numpy()


@TASKS.register("curves_autoencoder")
class CurvesAutoencoder(AutoencoderTask):
    """Deep autoencoder on synthetic CURVES-like images (784-400-200-100-50-25-6, mirrored)."""

    batch_size = 200
    sizes = {
        # width/depth/code give the encoder width, width/2, ..., width/2^(depth-1), code.
        "default": {"image_size": 28, "width": 400, "depth": 5, "code": 6,
                    "n_train": 20000, "n_valid": 2000, "n_test": 10000},
        "tiny": {"image_size": 14, "width": 64, "depth": 3, "code": 4,
                 "n_train": 512, "n_valid": 128, "n_test": 128},
    }

    def make_data(self, seed: int) -> TaskData:
        o = self.options
        counts = [o["n_train"], o["n_valid"], o["n_test"]]
        images = torch.from_numpy(render_curves(sum(counts), o["image_size"], seed).copy())  # (N, D), unshared
        parts = torch.split(images, counts)
        return TaskData(*(Split(p, p) for p in parts))

    @property
    def target(self) -> Target:
        # Predicting the mean image gives about 9.0 per image at tiny (14×14); the target asks for
        # real codes (HF reaches it within 100 steps, Adam and KFGN at their defaults do not).
        return Target("train_sq_error", 7.4 if self.size == "tiny" else 3.0)
