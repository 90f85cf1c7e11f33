"""Ratio table from ``bench_optimizers.py``'s pytest-benchmark JSON: step time / Adam step.

Usage: ``python benchmarks/report_optimizers.py opt.json`` (prints markdown).
"""

from __future__ import annotations

import json
import sys


def main(path: str) -> None:
    data = json.load(open(path))
    rows: dict[str, dict[str, tuple[float, int | None]]] = {}
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        rows.setdefault(b["group"], {})[info.get("optimizer", b["name"])] = (
            b["stats"]["min"], info.get("state_bytes"))
    machine = data.get("machine_info", {})
    print(f"machine: {machine.get('cpu', {}).get('brand_raw', machine.get('processor', '?'))}; "
          f"min over rounds\n")
    for task, res in rows.items():
        adam = res.get("adam", (float("nan"), None))[0]
        grad = res.get("gradient", (float("nan"), None))[0]
        print(f"### {task}\n\n| optimizer | ms/step | / Adam step | / gradient | state MiB |\n|---|---:|---:|---:|---:|")
        for name, (t, mem) in sorted(res.items(), key=lambda kv: kv[1][0]):
            mib = f"{mem / 2**20:.2f}" if mem is not None else "–"
            print(f"| {name} | {t * 1e3:.2f} | {t / adam:.2f} | {t / grad:.2f} | {mib} |")
        print()


if __name__ == "__main__":
    main(sys.argv[1])
