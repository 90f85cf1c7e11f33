"""The results store: one JSON record per run, written atomically, keyed by run id."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from benchsuite.errors import ResultsError
from benchsuite.records.record import RunRecord

__all__ = ["ResultStore"]
log = logging.getLogger(__name__)


class ResultStore:
    """A directory of ``<run_id>.json`` records.

    Writes go to a temporary file in the same directory, are flushed and fsynced,
    then renamed over the target (``os.replace`` is atomic on POSIX and Windows), so
    a crash never leaves a half-written record and never clobbers a finished one.
    """

    def __init__(self, root: str | os.PathLike[str], *, create: bool = True):
        self.root = Path(root)
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        elif not self.root.is_dir():
            raise ResultsError(f"Results directory not found: {self.root}")

    def path(self, run_id: str) -> Path:
        return self.root / f"{run_id}.json"

    def write(self, record: RunRecord) -> Path:
        target = self.path(record.run_id)
        fd, tmp = tempfile.mkstemp(prefix=f".{record.run_id}.", suffix=".tmp", dir=self.root)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(record.to_json())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def load(self, run_id: str) -> RunRecord:
        path = self.path(run_id)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ResultsError(f"No record for run {run_id} in {self.root}") from None
        except UnicodeDecodeError:
            raise ResultsError(f"Broken result file {path}: not UTF-8 text") from None
        return RunRecord.from_json(text, source=str(path))

    def is_finished(self, run_id: str) -> bool:
        """Whether a finished (completed/diverged/timeout) record exists; broken files count as not."""
        if not self.path(run_id).exists():
            return False
        try:
            return self.load(run_id).finished
        except ResultsError as exc:
            log.warning("%s; the run will be redone", exc)
            return False

    def run_ids(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.json"))

    def records(self, *, strict: bool = False) -> tuple[list[RunRecord], list[str]]:
        """All readable records, and one message per broken file (raised instead if ``strict``)."""
        records, problems = [], []
        for path in sorted(self.root.glob("*.json")):
            try:
                records.append(self.load(path.stem))
            except (ResultsError, OSError, TypeError, ValueError) as exc:  # ValueError: not UTF-8
                if strict:
                    raise ResultsError(str(exc)) from None
                problems.append(str(exc))
        return records, problems
