"""Turn ``bench_curvature.py`` pytest-benchmark JSON into a ratio table (Markdown).

Usage::

    pytest benchmarks/bench_curvature.py --benchmark-enable --benchmark-json=curv.json
    python benchmarks/report_curvature.py curv.json [--stat min]

For each model and quantity: our time, our time in gradients (``ours / gradient``),
and for each peer its time and ``ours / peer`` (< 1: ours is faster).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path


def ratio_table(data: dict, stat: str = "min") -> str:
    """Markdown table of times (ms) and ratios from pytest-benchmark JSON ``data``."""
    times: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        if "model" not in info:
            continue
        times[info["model"]][info["quantity"]][info["impl"]] = b["stats"][stat] * 1e3
    lines = [
        "| model | quantity | ours (ms) | ours / gradient | BackPACK (ms) | ours / BackPACK "
        "| curvlinops (ms) | ours / curvlinops |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    fmt = lambda x: f"{x:.1f}" if x is not None else "–"  # noqa: E731
    rat = lambda a, b: f"{a / b:.2f}" if a is not None and b else "–"  # noqa: E731
    for model, rows in times.items():
        grad = rows.get("gradient", {}).get("torch")
        lines.append(f"| {model} | gradient | {fmt(grad)} | 1.00 | | | | |")
        for quantity, impls in rows.items():
            if quantity == "gradient":
                continue
            ours, bp, cl = impls.get("ours"), impls.get("backpack"), impls.get("curvlinops")
            lines.append(
                f"| {model} | {quantity} | {fmt(ours)} | {rat(ours, grad)} | {fmt(bp)} | {rat(ours, bp)} "
                f"| {fmt(cl)} | {rat(ours, cl)} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path)
    parser.add_argument("--stat", default="min", choices=["min", "median", "mean"])
    args = parser.parse_args(argv)
    sys.stdout.write(ratio_table(json.loads(args.json.read_text()), args.stat) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
