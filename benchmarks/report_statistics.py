"""Turn ``bench_statistics.py`` pytest-benchmark JSON into a ratio table (Markdown).

Usage::

    pytest benchmarks/bench_statistics.py --benchmark-enable --benchmark-json=stats.json
    python benchmarks/report_statistics.py stats.json [--stat median]

For each network, operation and our variant (``ours``, ``ours_tight``): our time,
PyHessian's time, ``ours / PyHessian`` (< 1: ours is faster; the acceptance bound is
0.5) and, for the top eigenvalue, the median (and worst) relative error of each
against a float64 reference. The interleaved mode of ``bench_statistics.py`` prints the
same table with the median of per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

HEADER = [
    ("| network | operation | ours | ours (ms) | PyHessian (ms) | ours / PyHessian | ours rel. error "
     "| PyHessian rel. error |"),
    "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
]


def _fmt(x: float | None, spec: str) -> str:
    return format(x, spec) if x is not None else "–"


def _err(errors: list[float] | None) -> str:
    """Median relative error (and the worst), or – when not recorded."""
    if not errors:
        return "–"
    return f"{statistics.median(errors):.1e} (max {max(errors):.1e})"


def ratio_table(data: dict, stat: str = "median") -> str:
    """Markdown table of times (ms) and ``ours / PyHessian`` from pytest-benchmark JSON ``data``."""
    rows: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        if "op" not in info:
            continue
        rows[info["net"], info["op"]][info["impl"]] = {"time": b["stats"][stat] * 1e3,
                                                       "errors": info.get("rel_errors")}
    lines = list(HEADER)
    for (net, op), impls in rows.items():
        peer = impls.get("pyhessian", {})
        t_peer = peer.get("time")
        for impl, ours in impls.items():
            if impl == "pyhessian":
                continue
            t_ours = ours.get("time")
            ratio = t_ours / t_peer if t_ours is not None and t_peer else None
            lines.append(f"| {net} | {op} | {impl} | {_fmt(t_ours, '.0f')} | {_fmt(t_peer, '.0f')} "
                         f"| {_fmt(ratio, '.2f')} | {_err(ours.get('errors'))} | {_err(peer.get('errors'))} |")
    return "\n".join(lines)


def interleaved_table(rows: list[dict]) -> str:
    """Markdown table from :func:`benchmarks.bench_statistics.interleaved` rows (medians, per-round ratio)."""
    lines = list(HEADER)
    for r in rows:
        errs = {}
        for impl in ("ours", "pyhessian"):
            if r["op"] == "top_eigenvalue":
                errs[impl] = [abs(v - r["reference"]) / abs(r["reference"]) for v in r[f"{impl}_values"]]
        lines.append(f"| {r['net']} | {r['op']} | {r['impl']} | {r['ours'] * 1e3:.0f} | {r['pyhessian'] * 1e3:.0f} "
                     f"| {r['ratio']:.2f} | {_err(errs.get('ours'))} | {_err(errs.get('pyhessian'))} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path)
    parser.add_argument("--stat", default="median", choices=["min", "median", "mean"])
    args = parser.parse_args(argv)
    sys.stdout.write(ratio_table(json.loads(args.json.read_text()), args.stat) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
