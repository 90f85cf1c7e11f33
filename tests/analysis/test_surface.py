"""Loss-surface slices and the within-layer PSD check (benchsuite.analysis).

The slice Hessian is checked against central finite differences and against the
dense Hessian of the layers' weights projected on the directions; the check's
verdicts against the background's facts on toy networks (relu within one layer:
PSD at every smooth point; tanh: negative curvature); the CLI end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from benchsuite.analysis.directions import filter_normalise, layer_direction, linear_layers
from benchsuite.analysis.sources import Source, load
from benchsuite.analysis.surface import (
    SurfaceConfig,
    check_slice,
    default_layers,
    grid_loss,
    kink_margin,
    slice_function,
    slice_hessians,
    surface_section,
)
from benchsuite.cli import main
from benchsuite.config.spec import Budget, RunSpec
from benchsuite.contracts.activation import ACTIVATIONS
from benchsuite.errors import ConfigError
from benchsuite.records.store import ResultStore
from benchsuite.run.runner import run


def _toy(act: type[nn.Module], seed: int = 0) -> tuple[nn.Sequential, torch.Tensor, torch.Tensor]:
    """A 4-6-5-3 classifier on 40 random examples, float64."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 6), act(), nn.Linear(6, 5), act(), nn.Linear(5, 3)).double()
    x = torch.randn(40, 4, dtype=torch.float64)  # (40, 4)
    y = torch.randint(0, 3, (40,))  # (40,)
    return model, x, y


def _planes(model: nn.Module, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    a, b, c = layer_direction(model, 1, g), layer_direction(model, 1, g), layer_direction(model, 2, g)
    points = (torch.rand(30, 2, generator=g, dtype=torch.float64) * 2 - 1)  # (30, 2)
    return a, b, c, points


# ---------------------------------------------------------------------------- directions


def test_filter_normalisation_gives_each_row_the_norm_of_the_weights_row():
    torch.manual_seed(1)
    w = torch.randn(7, 5, dtype=torch.float64)
    w[3] = 0.0  # a zero row gets a zero direction row
    d = filter_normalise(torch.randn(7, 5, dtype=torch.float64), w)
    torch.testing.assert_close(d.norm(dim=1), w.norm(dim=1))
    assert torch.count_nonzero(d[3]) == 0


def test_a_layer_direction_lives_only_in_that_layers_weight():
    model, _, _ = _toy(nn.ReLU)
    d = layer_direction(model, 1, torch.Generator().manual_seed(0))
    (name, value), = d.items()  # biases and every other parameter: zero direction
    assert name == "2.weight" and value.shape == (5, 6)
    torch.testing.assert_close(value.norm(dim=1), model[2].weight.norm(dim=1))
    with pytest.raises(ConfigError, match=r"Invalid layer: 3\. Valid choices: 0, 1, 2"):
        layer_direction(model, 3, torch.Generator())


def test_default_layers_pick_a_middle_hidden_layer_and_its_neighbour():
    model, _, _ = _toy(nn.ReLU)
    assert [n for n, _ in linear_layers(model)] == ["0", "2", "4"]
    assert default_layers(model) == (1, 2)
    assert default_layers(model, 2) == (2, 1)
    with pytest.raises(ConfigError, match="Invalid layer2: 1. Valid choices: 0, 2"):
        default_layers(model, 1, 1)


# ---------------------------------------------------------------------------- the slice Hessian


@pytest.mark.parametrize("across", [False, True])
def test_slice_hessian_equals_finite_differences_and_the_projected_dense_hessian(across):
    model, x, y = _toy(nn.Tanh)
    loss_fn = nn.CrossEntropyLoss()
    a, b, c, points = _planes(model)
    dir_b = c if across else b
    f = slice_function(model, loss_fn, x, y, a, dir_b)
    pts = points[:4]
    h = slice_hessians(f, pts)  # (4, 2, 2)

    eps = 1e-4  # central differences: O(eps²) ≈ 1e-8 truncation error
    e = torch.eye(2, dtype=torch.float64) * eps
    def second(p: torch.Tensor, i: int, j: int) -> torch.Tensor:
        return (f(p + e[i] + e[j]) - f(p + e[i] - e[j]) - f(p - e[i] + e[j]) + f(p - e[i] - e[j])) / (4 * eps**2)

    with torch.no_grad():
        fd = torch.stack([torch.stack([torch.stack([second(p, i, j) for j in range(2)]) for i in range(2)])
                          for p in pts])  # (4, 2, 2)
    torch.testing.assert_close(h, fd, rtol=1e-5, atol=1e-7)

    # Dense reference: the Hessian of L in the (flattened) weights the directions touch, projected.
    names = sorted({*a, *dir_b})
    params = dict(model.named_parameters())
    shapes = [params[n].shape for n in names]
    sizes = [params[n].numel() for n in names]

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        parts = dict(zip(names, (t.reshape(s) for t, s in zip(flat.split(sizes), shapes))))
        return loss_fn(torch.func.functional_call(model, {**{k: v.detach() for k, v in params.items()}, **parts},
                                                  (x,)), y)

    def flat_dir(d):
        return torch.cat([d.get(n, torch.zeros(s, dtype=torch.float64)).reshape(-1) for n, s in zip(names, shapes)])

    basis = torch.stack([flat_dir(a), flat_dir(dir_b)], dim=1)  # (P, 2)
    w0 = torch.cat([params[n].detach().reshape(-1) for n in names])  # (P,)
    for p, hk in zip(pts, h):
        dense = torch.func.hessian(loss_of)(w0 + basis @ p)  # (P, P)
        torch.testing.assert_close(hk, basis.T @ dense @ basis, rtol=1e-9, atol=1e-12)


def test_grid_loss_matches_pointwise_evaluation_with_beta_along_rows():
    model, x, y = _toy(nn.ReLU)
    a, b, _, _ = _planes(model)
    f = slice_function(model, nn.CrossEntropyLoss(), x, y, a, b)
    alphas = torch.tensor([-1.0, 0.0, 0.5], dtype=torch.float64)
    betas = torch.tensor([-0.5, 1.0], dtype=torch.float64)
    grid = grid_loss(f, alphas, betas, chunk=2)  # (2, 3)
    with torch.no_grad():
        ref = torch.stack([torch.stack([f(torch.stack([al, be])) for al in alphas]) for be in betas])
    torch.testing.assert_close(grid, ref)
    torch.testing.assert_close(grid[0, 1], f(torch.tensor([0.0, -0.5], dtype=torch.float64)).detach())


# ---------------------------------------------------------------------------- the check


@pytest.mark.parametrize(("name", "module"), [("relu", nn.ReLU), ("leaky_relu", nn.LeakyReLU), ("prelu", nn.PReLU)])
def test_piecewise_linear_within_one_layer_is_psd_at_every_smooth_point_but_not_across_layers(name, module):
    model, x, y = _toy(module)
    a, b, c, points = _planes(model)
    relu = ACTIVATIONS.get(name)  # PReLU: the slice Hessian falls back to one point at a time
    within = check_slice(model, nn.CrossEntropyLoss(), x, y, a, b, points, relu, within=True)
    assert within["smooth_points"] == 30 and within["psd"] is True and within["negative_points"] == 0
    assert within["min_eig"] >= 0 and within["claim"] == "PSD" and within["consistent_with_claim"] is True
    across = check_slice(model, nn.CrossEntropyLoss(), x, y, a, c, points, relu, within=False)
    assert across["psd"] is False and across["min_relative_eig"] < -0.1  # bilinear across layers: indefinite
    assert across["claim"].startswith("none") and across["consistent_with_claim"] is True


def test_smooth_control_tanh_has_negative_curvature_within_one_layer():
    model, x, y = _toy(nn.Tanh)
    a, b, _, points = _planes(model)
    check = check_slice(model, nn.CrossEntropyLoss(), x, y, a, b, points, ACTIVATIONS.get("tanh"), within=True)
    assert check["smooth_points"] == 30  # no kinks
    assert check["psd"] is False and check["min_eig"] < 0 and check["negative_share"] > 0.3
    assert check["claim"].startswith("none (smooth")


def test_points_next_to_a_kink_are_skipped():
    relu, maxout = ACTIVATIONS.get("relu"), ACTIVATIONS.get("maxout")
    h = torch.tensor([[0.5, -1e-9], [2.0, -3.0]], dtype=torch.float64)
    assert kink_margin(nn.ReLU(), h, relu) == pytest.approx(1e-9)
    assert kink_margin(nn.Tanh(), h, ACTIVATIONS.get("tanh")) == float("inf")
    pieces = torch.tensor([[1.0, 1.0 + 1e-8, 3.0, -2.0]], dtype=torch.float64)  # 2 units × 2 pieces
    assert kink_margin(maxout.build(2), pieces, maxout) == pytest.approx(1e-8)
    model, x, y = _toy(nn.ReLU)
    a, b, _, points = _planes(model)
    check = check_slice(model, nn.CrossEntropyLoss(), x, y, a, b, points, relu, within=True, kink_eps=1e9)
    assert check["smooth_points"] == 0 and check["psd"] is None and not any(p["smooth"] for p in check["samples"])


# ---------------------------------------------------------------------------- sources


def _spec(**kw) -> RunSpec:
    base = {"task": "digits_mlp", "activation": "relu", "optimizer": "sgd", "size": "tiny"}
    return RunSpec(**{**base, **kw})


def test_init_source_builds_the_runners_initial_network(tmp_path: Path):
    """The weights of ``init`` equal the runner's: its checkpoint after one SGD step, minus that step."""
    spec = _spec(seed=3, budget=Budget(steps=1), checkpoint_every=1, hparams={"lr": 1e-12})
    run(spec, checkpoint_dir=tmp_path)
    stepped = torch.load(tmp_path / f"{spec.run_id}.pt", weights_only=True)["model"]
    loaded = load(Source(), spec)
    for name, p in loaded.model.state_dict().items():
        torch.testing.assert_close(p, stepped[name].double(), rtol=0, atol=1e-9)
    assert loaded.label == "init-tiny-seed3" and loaded.model[0].weight.dtype == torch.float64


def test_checkpoint_source_reads_weights_only_and_refuses_a_mismatch(tmp_path: Path):
    spec = _spec()
    init = load(Source(), spec).model
    state = {k: v.float() * 2 for k, v in init.state_dict().items()}
    torch.save({"version": 1, "model": state}, tmp_path / "c.pt")
    loaded = load(Source("checkpoint", path=tmp_path / "c.pt"), spec)
    torch.testing.assert_close(loaded.model[0].weight, init[0].weight * 2)
    with pytest.raises(ConfigError, match="does not fit task 'digits_mlp' x activation 'maxout'"):
        load(Source("checkpoint", path=tmp_path / "c.pt"), _spec(activation="maxout"))
    with pytest.raises(ConfigError, match="Checkpoint not found"):
        load(Source("checkpoint", path=tmp_path / "missing.pt"), spec)


def test_run_source_replays_the_record_to_its_final_weights(tmp_path: Path):
    spec = _spec(budget=Budget(steps=4), eval_every=2)
    store = ResultStore(tmp_path)
    store.write(run(spec))
    loaded = load(Source("run", run_id=spec.run_id, results=tmp_path))
    assert loaded.details["replay_relative_gap"] <= 1e-5 and "equals the record's" in loaded.note
    assert not torch.equal(loaded.model[0].weight, load(Source(), spec).model[0].weight)
    with pytest.raises(ConfigError, match="has activation 'relu', not 'tanh'"):
        load(Source("run", run_id=spec.run_id, results=tmp_path), expect={"activation": "tanh"})


# ---------------------------------------------------------------------------- CLI and report


def test_cli_writes_figures_and_check_and_prints_one_verdict_per_slice(tmp_path: Path, capsys):
    out = tmp_path / "results" / "surface" / "mine"
    rc = main(["surface", "--task", "digits_mlp", "--activation", "relu", "--resolution", "5", "--points", "6",
               "--examples", "64", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "within layer 1: PSD at all" in printed and "across layers 1 and 2:" in printed
    for name in ("within", "across"):
        for kind in ("contour", "surface"):
            for ext in ("png", "svg"):
                assert (out / f"{name}-{kind}.{ext}").stat().st_size > 0
    doc = json.loads((out / "check.json").read_text())
    within = doc["slices"]["within"]
    assert within["points"] == 6 and within["psd"] is True and within["layers"] == [1, 1]
    assert doc["meta"]["examples"] == 64 and doc["meta"]["source"] == "init-tiny-seed0"

    lines, files = surface_section(tmp_path / "results", tmp_path / "report")
    assert any(line.startswith("![digits_mlp relu init-tiny-seed0: within slice") for line in lines)
    assert [f.name for f in files] == ["surface-mine-within-contour.png", "surface-mine-across-contour.png"]
    assert all(f.is_file() for f in files)
    assert surface_section(tmp_path / "nothing", tmp_path / "report") == ([], [])

    # the report of that results directory shows the check and embeds the contour plots
    from benchsuite.config.spec import Budget, RunSpec
    from benchsuite.records.store import ResultStore
    from benchsuite.report.build import build_report
    from benchsuite.run.runner import run

    ResultStore(tmp_path / "results").write(run(RunSpec(task="digits_mlp", activation="relu", optimizer="sgd",
                                                        size="tiny", budget=Budget(steps=2), eval_every=2)))
    report = build_report(tmp_path / "results", tmp_path / "report", plots=False)
    assert "## Loss surfaces (2-D slices) and the within-layer PSD check" in report.markdown
    assert "(surface-mine-within-contour.png)" in report.markdown
    page = (tmp_path / "report" / "report.html").read_text()
    assert "within-layer PSD check" in page and page.count("data:image/png;base64,") >= 2


@pytest.mark.parametrize(("argv", "message"), [
    (["--task", "digit", "--activation", "relu"], "Unknown task 'digit'. Valid choices: "),
    (["--task", "digits_mlp", "--activation", "rleu"], "Unknown activation 'rleu'. Valid choices: "),
    (["--task", "digits_mlp", "--activation", "relu", "--from", "best"], "Unknown source 'best'. Valid choices: "),
    (["--task", "digits_mlp", "--activation", "relu", "--layer", "7"], "Invalid layer: 7. Valid choices: 0, 1, 2"),
    (["--from", "run", "abc"], "Source 'run' needs a run id and a results directory"),
    (["--activation", "relu"], "needs --task and --activation"),
])
def test_cli_bad_names_are_one_line_errors_listing_the_valid_choices(argv, message, capsys):
    assert main(["surface", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("benchsuite: error: ") and message in err and "\n" not in err
    if message.startswith("Unknown task"):
        assert "digits_mlp" in err
    if message.startswith("Unknown activation"):
        assert "relu" in err and "tanh" in err


def test_surface_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="Invalid resolution"):
        SurfaceConfig(resolution=1)
    with pytest.raises(ConfigError, match="Invalid span"):
        SurfaceConfig(span=0.0)
