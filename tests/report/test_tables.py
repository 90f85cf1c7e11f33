"""Tables over seeds: means with their 95% intervals, numeric CSV columns, paper tables in LaTeX and HTML."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from benchsuite.records.store import ResultStore
from benchsuite.report.build import build_report
from benchsuite.report.frames import runs_frame
from benchsuite.report.tables import (
    PAPER_QUANTITIES,
    comparison_stats,
    comparison_table,
    geometric_ci,
    paper_html,
    paper_latex,
    paper_table,
    stats_table,
)
from benchsuite.report.uncertainty import CI_METHOD
from tests.report.test_report import _hand_record

LOSS, TTT = PAPER_QUANTITIES


def _t_interval(values: list[float]) -> tuple[float, float, float]:
    v = np.asarray(values, dtype=float)
    half = st.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)
    return v.mean(), v.mean() - half, v.mean() + half


def _row(table: pd.DataFrame, optimizer: str = "sgd") -> pd.Series:
    return table.set_index("optimizer").loc[optimizer]


# --------------------------------------------------------------------------------------
# The comparison: numbers and strings


def test_numeric_comparison_has_mean_ci_and_n_per_quantity():
    losses = [1.0, 2.0, 4.0]
    row = _row(comparison_stats(runs_frame([_hand_record(s, v) for s, v in enumerate(losses)])))
    mean, low, high = _t_interval(losses)
    assert (row.final_train_loss_mean, row.final_train_loss_ci_low, row.final_train_loss_ci_high) == pytest.approx(
        (mean, low, high))
    assert row.final_train_loss_n == 3 and row.runs == 3 and row.completed == 3 and row.diverged == 0
    assert row.final_valid_loss_mean == pytest.approx(mean + 0.5)
    assert row.target_metric == "valid_error" and row.final_target_metric_mean == pytest.approx(mean / 10)
    assert row.ms_per_step_mean == pytest.approx(2.0) and row.ms_per_step_ci_low == pytest.approx(2.0)


def test_display_strings_are_mean_and_interval():
    losses = [1.0, 2.0, 4.0]
    row = _row(comparison_table(runs_frame([_hand_record(s, v) for s, v in enumerate(losses)])))
    mean, low, high = _t_interval(losses)
    assert row["final train loss"] == f"{mean:.4g} [{low:.4g}, {high:.4g}]" == "2.333 [-1.461, 6.128]"
    assert row["ms/step"] == "2 [2, 2]" and row["runs ok"] == "3/3"
    assert row["_final_train_loss"] == pytest.approx(mean)


# (time to target per seed (None: not reached), expected display, expected n of the interval)
TTT_CASES = {
    "none-reached": ([None, None], "– (0/2)", "– (0/2)", 0),
    "one-reached-no-interval": ([None, 2.0, None], "2 (1/3)", "5 (1/3)", 1),
    "two-reached-interval": ([1.0, 3.0, None], "2 [-10.7, 14.7] (2/3)", "5 [5, 5] (2/3)", 2),
}


@pytest.mark.parametrize("seconds,time_text,steps_text,n", TTT_CASES.values(), ids=TTT_CASES.keys())
def test_time_to_target_interval_or_share_always_with_k_of_n(seconds, time_text, steps_text, n):
    runs = runs_frame([_hand_record(s, 1.0, ttt=t) for s, t in enumerate(seconds)])
    row = _row(comparison_table(runs))
    assert row["time to target (s)"] == time_text and row["steps to target"] == steps_text
    num = _row(comparison_stats(runs))
    assert num.ttt_seconds_n == n and num.reached == n and num.runs == len(seconds)
    if n == 2:
        _, low, high = _t_interval([t for t in seconds if t is not None])
        assert (num.ttt_seconds_ci_low, num.ttt_seconds_ci_high) == pytest.approx((low, high))
    else:
        assert math.isnan(num.ttt_seconds_ci_low) and math.isnan(num.ttt_seconds_ci_high)


def test_diverged_seeds_are_counted_not_averaged():
    records = [_hand_record(0, 1.0), _hand_record(1, 3.0), _hand_record(2, float("nan"), status="diverged")]
    num = _row(comparison_stats(runs_frame(records)))
    assert num.diverged == 1 and num.completed == 2 and num.final_train_loss_n == 2
    assert _row(comparison_table(runs_frame(records)))["runs ok"] == "2/3 (1 diverged)"


def test_comparison_csv_is_numeric(tmp_path):
    store = ResultStore(tmp_path / "res")
    for rec in [_hand_record(0, 1.0, ttt=1.0), _hand_record(1, 1.2, ttt=2.0),
                _hand_record(0, 0.5, optimizer="adam"), _hand_record(1, 0.7, optimizer="adam", ttt=0.3)]:
        store.write(rec)
    build_report(store.root, tmp_path / "out", plots=False)
    csv = pd.read_csv(tmp_path / "out" / "comparison.csv")
    text = set(csv.select_dtypes(exclude="number").columns)
    assert text == {"task", "activation", "optimizer", "target_metric"}
    for q in ("final_train_loss", "best_train_loss", "final_valid_loss", "final_target_metric", "ttt_seconds",
              "ttt_step", "ms_per_step"):
        assert {f"{q}_mean", f"{q}_ci_low", f"{q}_ci_high", f"{q}_n"} <= set(csv.columns), q
    assert "±" not in (tmp_path / "out" / "comparison.csv").read_text()
    adam = csv.set_index("optimizer").loc["adam"]
    assert adam.reached == 1 and adam.runs == 2 and adam.ttt_seconds_mean == pytest.approx(0.3)


def test_report_header_states_the_interval_method(tmp_path):
    store = ResultStore(tmp_path / "res")
    store.write(_hand_record(0, 1.0))
    md = build_report(store.root, tmp_path / "out", plots=False).markdown
    assert CI_METHOD in md and "standard deviation" not in md


# --------------------------------------------------------------------------------------
# Against the baseline: geometric mean, interval on the log scale


def test_geometric_ci_is_the_t_interval_of_the_logs_exponentiated():
    ratios = [0.5, 0.2, 0.8]
    mean, low, high = _t_interval(np.log(ratios))
    ci = geometric_ci([*ratios, math.nan, -1.0])  # non-positive and NaN ratios are left out
    assert (ci.mean, ci.low, ci.high, ci.n) == pytest.approx((math.exp(mean), math.exp(low), math.exp(high), 3))
    assert geometric_ci([]).n == 0


def test_versus_baseline_gives_the_geometric_interval_and_the_seed_count():
    from benchsuite.report.tables import versus_baseline

    runs = pd.DataFrame([{"run_id": f"{o}{s}", "task": "t", "activation": "relu", "optimizer": o, "seed": s,
                              "status": "completed", "final_train_loss": loss, "train_seconds": 1.0, "steps": 10}
                         for o, s, loss in [("adam", 0, 1.0), ("adam", 1, 1.0), ("k", 0, 0.5), ("k", 1, 0.2)]])
    steps = pd.DataFrame([{"run_id": r, "step": 1, "loss": 1.0, "time": 0.5} for r in runs.run_id])
    row = versus_baseline(runs, steps).iloc[0]
    ci = geometric_ci([0.5, 0.2])
    assert row.seeds == 2 and row["per step"] == "wins (2/2)"
    assert row["loss ratio per step"] == f"{ci.mean:.3g} [{ci.low:.3g}, {ci.high:.3g}]"
    assert row._per_step == pytest.approx(math.sqrt(0.1)) and row._per_step_n == 2


# --------------------------------------------------------------------------------------
# Curvature statistics


def test_stats_table_gives_intervals_over_seeds_and_the_seed_count():
    rows = []
    for seed, (gap, eig) in enumerate([(0.1, 2.0), (0.3, 4.0)]):
        ids = {"run_id": f"r{seed}", "task": "t", "activation": "relu", "optimizer": "adam", "seed": seed}
        rows += [dict(ids, step=1, statistic="gap", value=99.0),  # not the last probe
                 dict(ids, step=5, statistic="gap", value=gap),
                 dict(ids, step=5, statistic="eig_H", value=eig), dict(ids, step=5, statistic="eig_H", value=1.0)]
    table = stats_table(pd.DataFrame(rows))
    row = table.iloc[0]
    assert row.seeds == 2
    mean, low, high = _t_interval([0.1, 0.3])
    assert row.gap == f"{mean:.4g} [{low:.4g}, {high:.4g}]"
    assert row["top eig_H"].startswith("3 [")
    assert list(table.columns[:4]) == ["task", "activation", "optimizer", "seeds"]


# --------------------------------------------------------------------------------------
# Paper tables


def _stats(cells: dict[tuple[str, str, str], list[float | str]], ttt: float | None = 1.0) -> pd.DataFrame:
    """Numeric comparison of hand records: ``{(task, activation, optimizer): [final loss per seed | "diverged"]}``."""
    records = []
    for (task, act, opt), losses in cells.items():
        for seed, loss in enumerate(losses):
            rec = _hand_record(seed, math.nan if loss == "diverged" else loss, optimizer=opt,
                               status="diverged" if loss == "diverged" else "completed",
                               ttt=None if loss == "diverged" else ttt)
            records.append(replace(rec, spec=replace(rec.spec, task=task, activation=act),
                                   run_id=f"{task}-{act}-{opt}-{seed}"))
    return comparison_stats(runs_frame(records))


BOLD_CASES = {
    "lowest-mean": ({("digits_mlp", "relu", "adam"): [0.5, 0.7], ("digits_mlp", "relu", "kfgn"): [0.2, 0.3]},
                    {("digits_mlp", "relu"): {"kfgn"}}),
    "diverged-column-not-eligible": ({("digits_mlp", "relu", "adam"): [0.5, 0.7],
                                      ("digits_mlp", "relu", "kfgn"): [0.1, "diverged"]},
                                     {("digits_mlp", "relu"): {"adam"}}),
    "ties-all-bold": ({("digits_mlp", "relu", "adam"): [0.5, 0.5], ("digits_mlp", "relu", "kfgn"): [0.5, 0.5],
                       ("digits_mlp", "relu", "sgd"): [0.9, 0.9]}, {("digits_mlp", "relu"): {"adam", "kfgn"}}),
    "per-row": ({("digits_mlp", "relu", "adam"): [0.5], ("digits_mlp", "relu", "kfgn"): [0.6],
                 ("digits_mlp", "tanh", "adam"): [0.5], ("digits_mlp", "tanh", "kfgn"): [0.4]},
                {("digits_mlp", "relu"): {"adam"}, ("digits_mlp", "tanh"): {"kfgn"}}),
}


@pytest.mark.parametrize("cells,expected", BOLD_CASES.values(), ids=BOLD_CASES.keys())
def test_paper_table_bolds_the_best_eligible_mean_of_each_row(cells, expected):
    text, bold = paper_table(_stats(cells), LOSS)
    assert {row: set(bold.columns[bold.loc[row]]) for row in bold.index} == expected
    assert text.shape == bold.shape and list(text.columns) == sorted({k[2] for k in cells})


def test_time_to_target_bold_needs_every_seed_to_reach_it():
    stats = _stats({("digits_mlp", "relu", "adam"): [0.5, 0.5], ("digits_mlp", "relu", "kfgn"): [0.5, 0.5]})
    stats.loc[stats.optimizer == "kfgn", ["ttt_seconds_mean", "reached"]] = [0.1, 1]  # faster, but 1/2 reached
    text, bold = paper_table(stats, TTT)
    assert bold.loc[("digits_mlp", "relu")].to_dict() == {"adam": True, "kfgn": False}
    assert text.loc[("digits_mlp", "relu"), "adam"] == "1 [1, 1] (2/2)"


def test_paper_table_marks_untuned_cells():
    stats = _stats({("digits_mlp", "relu", "adam"): [0.5], ("digits_mlp", "relu", "kfgn"): [0.2]})
    text, _ = paper_table(stats, LOSS, marked={("digits_mlp", "relu", "kfgn")})
    assert text.loc[("digits_mlp", "relu"), "kfgn"] == "0.2†" and text.loc[("digits_mlp", "relu"), "adam"] == "0.5"


def _balanced(tex: str) -> bool:
    depth = 0
    for ch in re.sub(r"\\[{}]", "", tex):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def _paper_latex() -> str:
    stats = _stats({("digits_mlp", "relu", "adam"): [0.5, 0.7], ("digits_mlp", "relu", "diag_gn"): [0.2, 0.3],
                    ("digits_mlp", "tanh", "adam"): [0.4, 0.4], ("digits_mlp", "tanh", "diag_gn"): [0.9, "diverged"]})
    text, bold = paper_table(stats, LOSS, marked={("digits_mlp", "tanh", "diag_gn")})
    return paper_latex(text, bold, "Final training loss (100% of runs)")


def test_latex_bold_escaping_and_booktabs():
    tex = _paper_latex()
    lines = tex.splitlines()
    assert lines[0] == r"% Final training loss (100\% of runs)"
    assert lines[1].startswith(r"\begin{tabular}{llcc}") and lines[-1] == r"\end{tabular}"
    assert [ln for ln in lines if ln in (r"\toprule", r"\midrule", r"\bottomrule")] == [
        r"\toprule", r"\midrule", r"\bottomrule"]
    assert r"task & activation & adam & diag\_gn \\" in lines
    assert "digits_mlp" not in tex and "diag_gn" not in tex  # every underscore escaped
    relu = next(ln for ln in lines if r"& relu &" in ln)
    tanh = next(ln for ln in lines if r"& tanh &" in ln)
    assert relu.startswith(r"digits\_mlp & relu") and tanh.startswith(" & tanh")  # the task named once
    relu_cells = relu.removesuffix(r" \\").split(" & ")
    assert relu_cells[2].startswith("0.6 [") and not relu_cells[2].startswith(r"\textbf")
    assert relu_cells[3].startswith(r"\textbf{0.25 [") and relu_cells[3].endswith("]}")
    tanh_cells = tanh.removesuffix(r" \\").split(" & ")
    assert tanh_cells[2] == r"\textbf{0.4 [0.4, 0.4]}"  # diag_gn has a diverged seed: not eligible
    assert tanh_cells[3] == r"0.9\textsuperscript{\dag}"
    assert _balanced(tex) and tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 1
    assert "–" not in tex and "†" not in tex  # ASCII-safe for pdflatex


def test_latex_compiles_with_booktabs(tmp_path):
    if shutil.which("pdflatex") is None:
        if os.environ.get("CI"):  # .ci/run installs it: missing there is a failure, not a skip
            pytest.fail("pdflatex not installed (Debian: texlive-latex-base texlive-latex-recommended)")
        pytest.skip("pdflatex not installed (Debian: texlive-latex-base texlive-latex-recommended)")
    doc = "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n" + _paper_latex() + "\\end{document}\n"
    (tmp_path / "t.tex").write_text(doc, encoding="utf-8")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"], check=False, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]


def test_html_bold_and_escaping():
    stats = _stats({("digits_mlp", "relu", "<adam>"): [0.5], ("digits_mlp", "relu", "kfgn"): [0.2]})
    text, bold = paper_table(stats, LOSS)
    page = paper_html(text, bold, "Final & training loss")
    assert "<caption>Final &amp; training loss</caption>" in page and "&lt;adam&gt;" in page and "<adam>" not in page
    bold_ids = re.search(r"#(T_\w+)\s*\{\s*font-weight: bold", page)
    assert bold_ids is not None
    cell = re.search(rf'<td id="{bold_ids.group(1)}"[^>]*>([^<]*)</td>', page)
    assert cell is not None and cell.group(1) == "0.2"


def test_report_writes_the_paper_tables(tmp_path):
    store = ResultStore(tmp_path / "res")
    for rec in [_hand_record(0, 1.0, ttt=1.0), _hand_record(1, 1.2, ttt=2.0),
                _hand_record(0, 0.5, optimizer="adam", ttt=0.4), _hand_record(1, 0.7, optimizer="adam", ttt=0.6)]:
        store.write(rec)
    report = build_report(store.root, tmp_path / "out", plots=False)
    out = tmp_path / "out"
    assert out / "comparison.tex" in report.files and out / "comparison.html" in report.files
    tex = (out / "comparison.tex").read_text()
    assert tex.count(r"\begin{tabular}") == 2 and _balanced(tex) and "% Final training loss" in tex
    assert r"digits\_mlp & relu & \textbf{0.6 [" in tex
    assert r"\textbf{0.5 [-0.771, 1.77] (2/2)}" in tex  # adam's time to target
    page = (out / "comparison.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<table") == 2 and "font-weight: bold" in page


def test_paper_tables_mark_the_untuned_column_of_a_tuned_comparison(tmp_path):
    from tests.report.test_report import _kfgn, _tuned_adam

    store = ResultStore(tmp_path / "res")
    _tuned_adam(store)
    _kfgn(store, tuned=False)
    build_report(store.root, tmp_path / "out", plots=False, tuning_metric="train_loss")
    tex = (tmp_path / "out" / "comparison.tex").read_text()
    row = next(ln for ln in tex.splitlines() if ln.startswith(r"digits\_mlp & relu"))
    adam, kfgn = row.removesuffix(r" \\").split(" & ")[2:]
    assert kfgn.endswith(r"\textsuperscript{\dag}}") and kfgn.startswith(r"\textbf{0.225 [")  # best, untuned
    assert r"\dag" not in adam and r"% \dag: untuned" in tex
    assert "0.225" in (tmp_path / "out" / "comparison.html").read_text()
