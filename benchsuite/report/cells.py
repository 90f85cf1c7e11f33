"""Several records in one cell: tell them apart instead of mixing them.

A *cell* of the comparison is (task, size, activation, optimizer column, seed). A
results directory can hold several records of one cell when a suite was re-run with
other settings (``--steps 5`` then ``--steps 6``, another batch size, new
hyperparameters): they have different run ids, and a report that keyed on the cell
would average or pair unrelated runs. Here every optimizer column whose records
differ *within* a cell in some setting is split into one column per setting, named
after what differs (``adam [budget.steps=500]``), and the report says so. Records
that differ only in provenance (the same spec run twice) cannot occur: the store
keys records by the spec's content hash.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from benchsuite.records.record import RunRecord

__all__ = ["split_mixed_cells"]

_IDENTITY = {"task", "size", "activation", "optimizer", "optimizer_label", "seed", "trial"}


def _settings(rec: RunRecord) -> dict[str, str]:
    """The spec's settings other than the cell's identity, flattened (``budget.steps``) to JSON strings."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = json.dumps(value, sort_keys=True, default=str)

    walk("", {k: v for k, v in rec.spec.to_dict().items() if k not in _IDENTITY})
    return flat


def _short(value: str) -> str:
    v = json.loads(value)
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def split_mixed_cells(records: Sequence[RunRecord]) -> tuple[list[RunRecord], list[str]]:
    """Records with each mixed column split by its differing settings, and one note per split column.

    Args:
        records: Comparison records (no tuning trials).

    Returns:
        The records, those of a split column relabelled ``"<label> [key=value, …]"``
        (a view for the report: the files are not touched), and notes saying which
        columns were split and on which settings.
    """
    cells: dict[tuple, list[RunRecord]] = defaultdict(list)
    for rec in records:
        s = rec.spec
        cells[(s.task, s.size, s.activation, s.display_optimizer, s.seed)].append(rec)
    differing: dict[str, set[str]] = defaultdict(set)
    for (_, _, _, label, _), recs in cells.items():
        if len(recs) > 1:
            flats = [_settings(r) for r in recs]
            keys = set().union(*flats)
            differing[label] |= {k for k in keys if len({f.get(k) for f in flats}) > 1}
    if not differing:
        return list(records), []
    out, notes = [], []
    for rec in records:
        keys = sorted(differing.get(rec.spec.display_optimizer, ()))
        if keys:
            flat = _settings(rec)
            suffix = ", ".join(f"{k}={_short(flat[k]) if k in flat else '–'}" for k in keys)
            rec = replace(rec, spec=replace(rec.spec, optimizer_label=f"{rec.spec.display_optimizer} [{suffix}]"))
        out.append(rec)
    for label, keys in sorted(differing.items()):
        notes.append(f"`{label}` has several records in one cell that differ in {', '.join(sorted(keys))} "
                     f"(runs of the same column with other settings); it is shown as one column per setting.")
    return out, notes
