"""Performance profiles (Dolan & Moré 2002): ratios, profiles and summaries against hand-computed toy cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from benchsuite.records.store import ResultStore
from benchsuite.report.build import build_report
from benchsuite.report.profiles import (
    RHO_LABEL,
    TAU_LABEL,
    default_tau_max,
    performance_costs,
    performance_profile,
    performance_ratios,
    plot_profiles,
    profile_summary,
)
from tests.report.test_report import _hand_record

INF = math.inf


def _runs(cells: dict[tuple[str, str], list[float | None]], task: str = "t") -> pd.DataFrame:
    """A runs frame: ``{(activation, optimizer): [seconds per seed, None = never reached, "diverged"]}``."""
    rows = []
    for (act, opt), seeds in cells.items():
        for seed, t in enumerate(seeds):
            status = "diverged" if t == "diverged" else "completed"
            reached = t is not None and t != "diverged"
            rows.append({"run_id": f"{act}-{opt}-{seed}", "task": task, "activation": act, "optimizer": opt, "seed": seed,
                             "status": status, "reached_target": reached, "ttt_seconds": t if reached else math.nan,
                             "ttt_step": 10 * t if reached else math.nan})
    return pd.DataFrame(rows)


def _ratios(table: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Ratios by hand: ``{optimizer: {activation: r}}`` on task ``t``."""
    frame = pd.DataFrame(table)
    frame.index = pd.MultiIndex.from_tuples([("t", a) for a in frame.index], names=["task", "activation"])
    frame.columns.name = "optimizer"
    return frame


# (runs by cell, expected ratios {optimizer: {activation: r}})
RATIO_CASES = {
    "two-problems": ({("relu", "a"): [1.0, 1.0], ("relu", "b"): [2.0, 2.0],
                      ("tanh", "a"): [3.0, 3.0], ("tanh", "b"): [1.5, 1.5]},
                     {"a": {"relu": 1.0, "tanh": 2.0}, "b": {"relu": 2.0, "tanh": 1.0}}),
    "median-over-seeds": ({("relu", "a"): [1.0, 2.0, 9.0], ("relu", "b"): [4.0, 4.0, 4.0]},
                          {"a": {"relu": 1.0}, "b": {"relu": 2.0}}),
    "half-never-reached-is-inf": ({("relu", "a"): [1.0, None], ("relu", "b"): [4.0, 4.0]},
                                  {"a": {"relu": INF}, "b": {"relu": 1.0}}),
    "one-of-three-never-reached": ({("relu", "a"): [1.0, 1.0, None], ("relu", "b"): [4.0, 4.0, 4.0]},
                                   {"a": {"relu": 1.0}, "b": {"relu": 4.0}}),
    "diverged-seed-is-inf": ({("relu", "a"): [1.0, "diverged"], ("relu", "b"): [2.0, 2.0]},
                             {"a": {"relu": INF}, "b": {"relu": 1.0}}),
    "ties": ({("relu", "a"): [2.0], ("relu", "b"): [2.0], ("relu", "c"): [3.0]},
             {"a": {"relu": 1.0}, "b": {"relu": 1.0}, "c": {"relu": 1.5}}),
    "nobody-reached": ({("relu", "a"): [None], ("relu", "b"): [None]},
                       {"a": {"relu": INF}, "b": {"relu": INF}}),
    "zero-cost-best": ({("relu", "a"): [0.0], ("relu", "b"): [0.0], ("relu", "c"): [1.0]},
                       {"a": {"relu": 1.0}, "b": {"relu": 1.0}, "c": {"relu": INF}}),
    "column-not-run-on-a-cell": ({("relu", "a"): [1.0], ("relu", "b"): [2.0], ("tanh", "a"): [1.0]},
                                 {"a": {"relu": 1.0, "tanh": 1.0}, "b": {"relu": 2.0, "tanh": INF}}),
}


@pytest.mark.parametrize("cells,expected", RATIO_CASES.values(), ids=RATIO_CASES.keys())
def test_performance_ratios(cells, expected):
    got = performance_ratios(_runs(cells), "time_to_target")
    pd.testing.assert_frame_equal(got, _ratios(expected), check_like=True)


def test_steps_measure_uses_the_step_column_and_problems_are_task_by_activation():
    runs = pd.concat([_runs({("relu", "a"): [1.0], ("relu", "b"): [3.0]}, task="t1"),
                      _runs({("relu", "a"): [2.0], ("relu", "b"): [1.0]}, task="t2")], ignore_index=True)
    runs["ttt_step"] = [5.0, 20.0, 8.0, 2.0]  # other ratios than the seconds
    costs = performance_costs(runs, "steps_to_target")
    assert costs.loc[("t1", "relu")].tolist() == [5.0, 20.0]
    ratios = performance_ratios(runs, "steps_to_target")
    assert list(ratios.index) == [("t1", "relu"), ("t2", "relu")]
    assert ratios.loc[("t1", "relu")].tolist() == [1.0, 4.0] and ratios.loc[("t2", "relu")].tolist() == [4.0, 1.0]


def test_unknown_measure_names_the_choices():
    with pytest.raises(ValueError, match="time_to_target, steps_to_target"):
        performance_costs(_runs({("relu", "a"): [1.0]}), "loss")


# (ratios {optimizer: {activation: r}}, taus, expected rho {optimizer: [rho(tau) per tau]})
PROFILE_CASES = {
    "two-problems": ({"a": {"relu": 1.0, "tanh": 2.0}, "b": {"relu": 2.0, "tanh": 1.0}},
                     [1.0, 1.5, 2.0, 4.0], {"a": [0.5, 0.5, 1.0, 1.0], "b": [0.5, 0.5, 1.0, 1.0]}),
    "four-problems": ({"a": {"p1": 1.0, "p2": 1.0, "p3": 3.0, "p4": INF},
                       "b": {"p1": 2.0, "p2": 1.0, "p3": 1.0, "p4": 1.0}},
                      [1.0, 2.0, 3.0, 100.0], {"a": [0.5, 0.5, 0.75, 0.75], "b": [0.75, 1.0, 1.0, 1.0]}),
    "all-inf": ({"a": {"relu": INF}, "b": {"relu": INF}}, [1.0, 1e9], {"a": [0.0, 0.0], "b": [0.0, 0.0]}),
    "one-problem": ({"a": {"relu": 1.0}, "b": {"relu": 3.0}}, [1.0, 2.0, 3.0], {"a": [1.0, 1.0, 1.0],
                                                                                 "b": [0.0, 0.0, 1.0]}),
}


@pytest.mark.parametrize("ratios,taus,expected", PROFILE_CASES.values(), ids=PROFILE_CASES.keys())
def test_performance_profile(ratios, taus, expected):
    rho = performance_profile(_ratios(ratios), taus)
    assert list(rho.index) == taus
    for name, values in expected.items():
        assert rho[name].tolist() == pytest.approx(values)


# (ratios, tau_max, expected {optimizer: (area, wins, median ratio, solved)})
SUMMARY_CASES = {
    # area = mean over problems of (1 - log2 r / log2 tau_max) for r <= tau_max, else 0
    "two-problems": ({"a": {"relu": 1.0, "tanh": 2.0}, "b": {"relu": 4.0, "tanh": 1.0}}, 4.0,
                     {"a": ((1 + 0.5) / 2, 1, 1.5, 2), "b": ((0 + 1) / 2, 1, 2.5, 2)}),
    "ties-count-for-each": ({"a": {"relu": 1.0}, "b": {"relu": 1.0}, "c": {"relu": 2.0}}, 2.0,
                            {"a": (1.0, 1, 1.0, 1), "b": (1.0, 1, 1.0, 1), "c": (0.0, 0, 2.0, 1)}),
    "beyond-tau-max-scores-zero": ({"a": {"relu": 1.0}, "b": {"relu": 8.0}}, 4.0,
                                   {"a": (1.0, 1, 1.0, 1), "b": (0.0, 0, 8.0, 1)}),
    "all-inf-nobody-wins": ({"a": {"relu": INF, "tanh": INF}, "b": {"relu": INF, "tanh": INF}}, 2.0,
                            {"a": (0.0, 0, INF, 0), "b": (0.0, 0, INF, 0)}),
    "failed-on-half": ({"a": {"p1": 1.0, "p2": INF}, "b": {"p1": 2.0, "p2": 1.0}}, 2.0,
                       {"a": (0.5, 1, INF, 1), "b": (0.5, 1, 1.5, 2)}),
}


@pytest.mark.parametrize("ratios,tau_max,expected", SUMMARY_CASES.values(), ids=SUMMARY_CASES.keys())
def test_profile_summary(ratios, tau_max, expected):
    summary = profile_summary(_ratios(ratios), tau_max).set_index("optimizer")
    for name, (area, wins, median, solved) in expected.items():
        row = summary.loc[name]
        assert row.area == pytest.approx(area) and row.wins == wins and row.solved == solved
        assert row["median ratio"] == pytest.approx(median)
        assert row.problems == len(next(iter(ratios.values())))


def test_summary_area_equals_the_integral_of_the_profile_on_a_fine_log_grid():
    ratios = _ratios({"a": {"p1": 1.0, "p2": 1.7, "p3": 3.1, "p4": INF}, "b": {"p1": 1.2, "p2": 1.0, "p3": 1.0,
                                                                             "p4": 1.0}})
    x = np.linspace(0.0, 3.0, 300_001)  # log2 tau on [0, log2 8]
    rho = performance_profile(ratios, 2.0 ** x)
    summary = profile_summary(ratios, 8.0).set_index("optimizer")
    for name in ("a", "b"):
        assert summary.loc[name, "area"] == pytest.approx(np.trapezoid(rho[name], x) / 3.0, abs=1e-4)


def test_summary_is_sorted_best_first_and_rejects_a_tau_max_of_one():
    summary = profile_summary(_ratios({"a": {"relu": 2.0}, "b": {"relu": 1.0}}), 4.0)
    assert list(summary.optimizer) == ["b", "a"]
    with pytest.raises(ValueError, match="tau_max"):
        profile_summary(_ratios({"a": {"relu": 1.0}}), 1.0)


@pytest.mark.parametrize("table,expected", [
    ({"a": {"relu": 1.0}, "b": {"relu": 1.3}}, 2.0),
    ({"a": {"relu": 1.0}, "b": {"relu": 5.0}}, 8.0),
    ({"a": {"relu": INF}}, 2.0),
    ({"a": {"relu": 1.0}, "b": {"relu": 1e9}}, 1024.0),
], ids=["at-least-2", "next-power-of-two", "all-inf", "capped"])
def test_default_tau_max(table, expected):
    assert default_tau_max(_ratios(table)) == expected


def test_plot_profiles_writes_png_and_svg(tmp_path, png_magic):
    ratios = _ratios({"adam": {"relu": 1.0, "tanh": 2.5}, "kfgn-kfra": {"relu": 1.5, "tanh": 1.0},
                      "sgd": {"relu": INF, "tanh": INF}})
    files = plot_profiles(ratios, tmp_path, "time_to_target")
    assert files == [tmp_path / "profile_time_to_target.png", tmp_path / "profile_time_to_target.svg"]
    assert files[0].read_bytes()[:8] == png_magic and files[0].stat().st_size > 1000
    assert b"<svg" in files[1].read_bytes()[:2000]
    assert TAU_LABEL == "τ (ratio to the best, log2)" and RHO_LABEL == "share of task × activation cells"
    assert plot_profiles(_ratios({}), tmp_path, "time_to_target") == []


def test_plot_uses_the_labels_and_the_optimizer_colours(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from benchsuite.report.style import optimizer_color

    seen = {}
    monkeypatch.setattr(plt, "close", lambda fig: seen.setdefault("fig", fig))
    plot_profiles(_ratios({"adam": {"relu": 1.0}, "hf": {"relu": 2.0}}), tmp_path, "steps_to_target")
    ax = seen["fig"].axes[0]
    assert ax.get_xlabel() == TAU_LABEL and ax.get_ylabel() == RHO_LABEL and ax.get_xscale() == "log"
    colours = {line.get_label(): line.get_color() for line in ax.get_lines()}
    assert colours == {"adam": optimizer_color("adam"), "hf": optimizer_color("hf")}
    plt.close(seen["fig"])


# --------------------------------------------------------------------------------------
# The report's section


def _report(tmp_path, records, plots: bool = True) -> str:
    store = ResultStore(tmp_path / "res")
    for rec in records:
        store.write(rec)
    return build_report(store.root, tmp_path / "out", plots=plots).markdown


def test_report_section_with_summary_and_figures(tmp_path):
    records = [_hand_record(s, 0.5, optimizer="adam", ttt=0.5 + s) for s in (0, 1)]
    records += [_hand_record(s, 0.2, optimizer="kfgn", ttt=0.25) for s in (0, 1)]
    md = _report(tmp_path, records)
    section = md.split("## Performance profiles", 1)[1].split("\n## ", 1)[0]
    assert "Dolan & Moré 2002" in section
    assert "![Performance profile: time to target (training seconds)](profile_time_to_target.png)" in section
    assert "(profile_steps_to_target.png)" in section
    assert "Only one task × activation cell" in section
    assert (tmp_path / "out" / "profile_time_to_target.png").exists()
    without = _report(tmp_path / "no-plots", records, plots=False)
    assert "profile_time_to_target.png" not in without and "## Performance profiles" in without
    assert not (tmp_path / "no-plots" / "out" / "profile_time_to_target.png").exists()
    # time: adam median 1.0 s vs kfgn 0.25 s -> ratio 4, tau_max 4 -> area 0
    assert "| kfgn | 1.000 | 1/1 | 1 | 1/1 |" in section and "| adam | 0.000 | 0/1 | 4 | 1/1 |" in section
    out = tmp_path / "out"
    for name in ("profile_time_to_target.png", "profile_time_to_target.svg", "profiles.csv"):
        assert (out / name).is_file(), name
    csv = pd.read_csv(out / "profiles.csv")
    assert set(csv.measure) == {"time_to_target", "steps_to_target"} and csv.area.dtype == float


def test_report_says_when_no_optimizer_reached_the_target(tmp_path):
    md = _report(tmp_path, [_hand_record(0, 1.0), _hand_record(0, 0.5, optimizer="adam")])
    section = md.split("## Performance profiles", 1)[1].split("\n## ", 1)[0]
    assert "No optimizer reached the target on any task × activation cell: no profile of time to target" in section
    assert "![" not in section and not (tmp_path / "out" / "profile_time_to_target.png").exists()


def test_report_says_when_there_is_only_one_optimizer(tmp_path):
    md = _report(tmp_path, [_hand_record(0, 1.0, ttt=0.5)])
    section = md.split("## Performance profiles", 1)[1].split("\n## ", 1)[0]
    assert "Only one optimizer column" in section and "Only one task × activation cell" in section
    assert "| sgd | 1.000 | 1/1 | 1 | 1/1 |" in section
