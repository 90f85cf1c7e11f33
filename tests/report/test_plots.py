"""Figures: mean ± Student-t CI over seeds, task × activation facets, one colour per optimizer, PNG + SVG."""

from __future__ import annotations

import itertools

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection

from benchsuite.report.plots import _smoothed as smoothed
from benchsuite.report.plots import (
    curvature_figures,
    figure_plan,
    interpolate_on_grid,
    loss_figures,
    mean_ci_frame,
    plot_curvature,
    plot_loss,
    plot_tuning,
    smoothing_window,
    tuning_figures,
    use_log_scale,
    write_figures,
)
from benchsuite.report.style import optimizer_palette
from benchsuite.report.uncertainty import mean_ci

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TASKS, ACTS, SEEDS = ["digits_mlp", "curves_autoencoder"], ["relu", "tanh"], [0, 1, 2]
OPTS = ["sgd", "adam", "kfgn-kflr"]


def _frames(steps: int = 40, eval_every: int = 10) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Synthetic evals and steps frames: losses falling over decades on digits, within 3× on curves."""
    rng = np.random.default_rng(0)
    ev, st = [], []
    for k, (task, act, opt, seed) in enumerate(itertools.product(TASKS, ACTS, OPTS, SEEDS)):
        ids = {"run_id": f"r{k}", "task": task, "size": "tiny", "activation": act, "optimizer": opt, "seed": seed}
        rate = 0.1 * (1 + OPTS.index(opt)) * (1.0 if task == "digits_mlp" else 0.01)
        per_step = 0.01 * (1 + 10 * OPTS.index(opt)) * (1 + 0.1 * seed)  # seconds per step: seeds differ
        s = np.arange(1, steps + 1)
        t = np.cumsum(np.full(steps, per_step))
        loss = 2.0 * np.exp(-rate * s) * (1 + 0.1 * rng.standard_normal(steps) ** 2) + 0.05
        st.append(pd.DataFrame({**ids, "step": s, "loss": loss, "time": t}))
        es = np.arange(0, steps + 1, eval_every)
        et = np.r_[0.0, t][es]
        ev.append(pd.DataFrame({**ids, "step": es, "time": et, "train_loss": 2.0 * np.exp(-rate * es) + 0.05}))
    return pd.concat(ev, ignore_index=True), pd.concat(st, ignore_index=True)


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    return _frames()


def _optimizer_colours(fig) -> dict[str, set[str]]:
    """``{optimizer: {colour, ...}}`` over every labelled curve of every panel."""
    out: dict[str, set[str]] = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            if not line.get_label().startswith("_"):
                out.setdefault(line.get_label(), set()).add(mcolors.to_hex(line.get_color()))
    return out


# --------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------


def test_band_frame_equals_mean_ci_per_group():
    data = pd.DataFrame({"g": ["a"] * 4 + ["b"] * 3 + ["c"] * 2 + ["d"],
                         "x": [0, 0, 0, 0, 1, 1, 1, 2, 2, 3],
                         "v": [1.0, 2.0, 4.5, np.nan, -3.0, np.inf, 5.0, 7.0, np.nan, np.nan]})
    bands = mean_ci_frame(data, ["g", "x"], "v").set_index("g")
    assert list(bands.index) == ["a", "b", "c"]  # d: no finite value
    for g in ["a", "b", "c"]:
        ci = mean_ci(data.v[data.g == g])
        assert bands.loc[g, "n"] == ci.n
        assert bands.loc[g, "mean"] == pytest.approx(ci.mean)
        if ci.n >= 2:
            assert bands.loc[g, "low"] == pytest.approx(ci.low) and bands.loc[g, "high"] == pytest.approx(ci.high)
        else:
            assert np.isnan(bands.loc[g, "low"]) and np.isnan(bands.loc[g, "high"])


def test_drawn_band_is_the_mean_ci_of_the_seeds():
    steps = np.arange(5)
    vals = {0: steps * 1.0 - 3, 1: steps * 1.05 - 2.95, 2: steps * 0.95 - 3.05}  # negative: linear axis
    data = pd.concat([pd.DataFrame({"run_id": f"s{s}", "task": "t", "activation": "relu", "optimizer": "adam",
                                    "seed": s, "step": steps, "loss": v, "time": steps + 0.1 * s})
                      for s, v in vals.items()], ignore_index=True)
    spec = next(s for s in loss_figures(pd.DataFrame(columns=["run_id", "step", "time"]), data)
                if s.stem == "loss_vs_step")
    fig = spec.draw()
    try:
        ax = fig.axes[0]
        assert ax.get_yscale() == "linear"
        (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
        verts = band.get_paths()[0].vertices
        window = smoothing_window(data)
        assert window == 1  # 5 steps: not smoothed
        ci = mean_ci([v[2] for v in vals.values()])
        at2 = verts[np.isclose(verts[:, 0], 2.0), 1]
        assert at2.min() == pytest.approx(ci.low) and at2.max() == pytest.approx(ci.high)
        (line,) = [ln for ln in ax.get_lines() if ln.get_label() == "adam"]
        assert line.get_ydata()[2] == pytest.approx(ci.mean)
    finally:
        plt.close(fig)


@pytest.mark.parametrize("values, expected", [
    ([1e-4, 1e-2, 1.0], True),
    ([0.2, 0.7], False),  # within 30×
    ([0.0, 1e-3, 1.0], False),  # a zero: no log axis
    ([-1.0, 10.0, 1000.0], False),
    ([np.nan, np.inf, 1e-3, 1.0], True),  # non-finite values are ignored
    ([], False),
])
def test_log_scale_decided_from_the_data(values, expected):
    assert use_log_scale(values) is expected


def test_log_axis_per_task_row_and_geometric_mean_on_it(frames):
    evals, steps = frames
    spec = next(s for s in loss_figures(evals, steps) if s.stem == "loss_vs_time")
    fig = spec.draw()
    try:
        axes = np.array(fig.axes[:len(TASKS) * len(ACTS)]).reshape(len(TASKS), len(ACTS))  # rows: tasks, sorted
        assert [ax.get_yscale() for ax in axes[:, 0]] == ["linear", "log"]  # curves: within 3×; digits: decades
        assert axes[0, 0].get_title() == "relu" and axes[0, 1].get_title() == "tanh"
        assert "training time (s, excl. evaluation)" in axes[-1, 0].get_xlabel()
        # on the log row the line is the geometric mean of the seeds (log values interpolated on the common grid)
        ev = evals[(evals.task == "digits_mlp") & (evals.activation == "relu") & (evals.optimizer == "sgd")]
        grid = interpolate_on_grid(ev.assign(train_loss=np.log10(ev.train_loss)), "time", "train_loss")
        x0 = np.sort(grid.time.unique())[3]
        expected = 10 ** grid.train_loss[grid.time == x0].mean()
        (line,) = [ln for ln in axes[1, 0].get_lines() if ln.get_label() == "sgd"]
        assert line.get_ydata()[np.isclose(line.get_xdata(), x0)][0] == pytest.approx(expected)
    finally:
        plt.close(fig)


def test_time_curves_interpolated_on_a_common_grid_up_to_the_shortest_seed():
    data = pd.DataFrame({"run_id": ["a"] * 3 + ["b"] * 3, "task": "t", "activation": "relu", "optimizer": "sgd",
                         "step": [0, 1, 2, 0, 1, 2], "time": [0.0, 1.0, 2.0, 0.0, 0.5, 1.5],
                         "loss": [4.0, 2.0, 0.0, 4.0, 3.0, 1.0]})
    grid = interpolate_on_grid(data, "time", "loss")
    a, b = grid[grid.run_id == "a"], grid[grid.run_id == "b"]
    assert list(a.time) == list(b.time) == [0.0, 0.5, 1.0, 1.5]  # union of time stamps, to the shortest end
    assert list(a.loss) == [4.0, 3.0, 2.0, 1.0] and list(b.loss) == [4.0, 3.0, 2.0, 1.0]
    assert not grid.short.any()
    stopped = data[~((data.run_id == "b") & (data.step == 2))]  # b stopped a step early
    assert interpolate_on_grid(stopped, "time", "loss").short.all()


def test_smoothing_keeps_the_ends_and_averages_inside():
    data = pd.DataFrame({"run_id": ["a"] * 7, "step": np.arange(7), "loss": [9.0, 0, 3, 0, 3, 0, 5]})
    out = smoothed(data, "loss", 5)
    assert out[0] == 9.0 and out[-1] == 5.0  # the ends are the logged values
    assert out[1] == pytest.approx(4.0) and out[3] == pytest.approx(6 / 5)


# --------------------------------------------------------------------------------------
# Files, colours, facets
# --------------------------------------------------------------------------------------


def test_plot_loss_writes_png_then_svg_for_each_figure(frames, tmp_path):
    evals, steps = frames
    files = plot_loss(evals, steps, tmp_path)
    stems = [s.stem for s in loss_figures(evals, steps)]
    assert stems == ["loss_vs_time", "loss_vs_step", "minibatch_loss_vs_time"]
    assert files == [tmp_path / f"{s}.{ext}" for s in stems for ext in ("png", "svg")]
    for f in files:
        head = f.read_bytes()[:200]
        assert (head[:8] == PNG_MAGIC) if f.suffix == ".png" else (b"<svg" in head or b"<?xml" in head)
    assert plt.get_fignums() == []  # every figure closed


def test_one_colour_per_optimizer_the_same_in_every_figure(frames):
    evals, steps = frames
    palette = {k: mcolors.to_hex(v) for k, v in optimizer_palette(OPTS).items()}
    colours = []
    for spec in loss_figures(evals, steps)[:2]:
        fig = spec.draw()
        try:
            seen = _optimizer_colours(fig)
            legend = {t.get_text(): h.get_color() for t, h in zip(fig.legends[0].get_texts(),
                                                                 fig.legends[0].legend_handles) if t.get_text() in OPTS}
        finally:
            plt.close(fig)
        assert set(seen) == set(OPTS)
        assert all(len(c) == 1 for c in seen.values())  # one colour per optimizer in all panels
        colours.append({k: next(iter(v)) for k, v in seen.items()})
        assert {k: mcolors.to_hex(v) for k, v in legend.items()} == palette  # one shared legend
    assert colours[0] == colours[1] == palette


def test_seed_that_stopped_early_is_marked(frames):
    evals, steps = frames
    cut = steps[~((steps.run_id == "r0") & (steps.step > 20))]
    spec = next(s for s in loss_figures(evals, cut) if s.stem == "loss_vs_step")
    fig = spec.draw()
    try:
        marks = [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_marker() == "x"]
        assert len(marks) == 1 and marks[0].get_xdata()[0] == pytest.approx(20, abs=2)
        assert "seed stopped early" in " ".join(fig._suptitle.get_text().split())
    finally:
        plt.close(fig)


def test_curvature_figures_match_statistics_by_prefix_and_reduce_layers(tmp_path):
    rows = []
    for k, (opt, seed, step) in enumerate(itertools.product(["adam", "hf"], [0, 1], [0, 10, 20])):
        ids = {"run_id": f"{opt}{seed}", "task": "digits_mlp", "activation": "relu", "optimizer": opt, "seed": seed,
               "step": step}
        stats = {"trace_H_est": 10.0 + step, "trace_G": 9.0 + step, "trace_H_sign": 1.0, "trace_H_stderr": 0.1,
                 "eig_H/0": 5.0, "eig_H/1": 3.0, "eig_G_ritz/0": 4.0, "block_rel_diff/layer0": 1e-7 * (1 + seed),
                 "block_rel_diff/layer1": 1e-3 * (1 + step) ** 2, "dead_frac/layer0": 0.0, "dead_frac/layer1": 0.2,
                 "loss": 1.0 / (1 + step), "trace_H/layer0": 3.0}
        rows += [{**ids, "statistic": name, "value": v} for name, v in stats.items()]
    stats = pd.DataFrame(rows)
    specs = curvature_figures(stats)
    assert [s.stem for s in specs] == ["stat_trace", "stat_top_eig", "stat_block_rel_diff", "stat_dead_frac",
                                       "stat_loss"]
    fig = specs[2].draw()  # block_rel_diff: max over layers = the layer1 value
    try:
        (line,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "adam"]
        assert np.allclose(line.get_ydata(), 1e-3 * (1 + np.array([0, 10, 20])) ** 2)
        assert fig.axes[0].get_yscale() == "log"
    finally:
        plt.close(fig)
    fig = specs[0].draw()  # two series (trace_H_est, trace_G): two line styles, one colour per optimizer
    try:
        styles = {ln.get_linestyle() for ln in fig.axes[0].get_lines() if ln.get_label() == "hf"}
        assert styles == {"-", "--"}
        assert {"trace_H_est", "trace_G"} <= {t.get_text() for t in fig.legends[0].get_texts()}
    finally:
        plt.close(fig)
    files = plot_curvature(stats, tmp_path)
    assert [f.name for f in files[:2]] == ["stat_trace.png", "stat_trace.svg"]


def test_tuning_figure_keeps_working_with_optimizer_coloured_titles(tmp_path):
    trials = pd.DataFrame({"task": "digits_mlp", "size": "tiny", "activation": ["relu", "tanh"] * 4,
                           "optimizer": ["adam"] * 4 + ["kfgn-kflr"] * 4, "trial": [0, 0, 1, 1] * 2,
                           "score": [0.5, 0.4, np.inf, 0.3, 0.2, 0.25, 0.1, np.nan],
                           "hp_lr": [1e-3, 1e-3, 1e-1, 1e-1, np.nan, np.nan, np.nan, np.nan],
                           "hp_damping": [np.nan] * 4 + [1e-3, 1e-3, 1e-1, 1e-1]})
    (spec,) = tuning_figures(trials, "valid_loss")
    fig = spec.draw()
    try:
        titles = {ax.get_title(): mcolors.to_hex(ax.title.get_color()) for ax in fig.axes}
        assert titles == {k: mcolors.to_hex(v) for k, v in optimizer_palette(["adam", "kfgn-kflr"]).items()}
        assert [ax.get_xscale() for ax in fig.axes] == ["log", "log"]
        assert [ax.get_xlabel() for ax in fig.axes] == ["lr", "damping"]
    finally:
        plt.close(fig)
    files = plot_tuning(trials, "valid_loss", tmp_path)
    assert files == [tmp_path / "tuning_digits_mlp.png", tmp_path / "tuning_digits_mlp.svg"]


def test_figure_plan_lists_exactly_the_files_written(frames, tmp_path):
    evals, steps = frames
    plan = figure_plan(evals, steps, pd.DataFrame())
    files = write_figures(plan, tmp_path)
    assert [f.stem for f in files[::2]] == [s.stem for s in plan]
    assert figure_plan(evals.iloc[:0], steps.iloc[:0], pd.DataFrame()) == []
