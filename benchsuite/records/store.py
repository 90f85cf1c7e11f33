"""The results store: one JSON record per run, written atomically, keyed by run id.

No result is ever lost. A record is written once, to a temporary file that is
fsynced and renamed over its name, and it is readable by the owner's group (the
process umask applies, as for any file it creates; ``mkstemp``'s 0600 does not). A
file the store cannot read (truncated, not JSON, wrong fields or types, an older
schema) is never overwritten: before its run is redone the file is renamed aside to
``<run_id>.json.quarantined-<UTC time>`` with its bytes untouched, and a warning
names both paths. A record of a *newer* schema (a later benchsuite wrote it) is
refused: :meth:`ResultStore.is_finished` raises
:class:`~benchsuite.records.record.NewerSchemaError` naming the writer's version, and
the file stays where it is.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

from benchsuite.errors import ResultsError
from benchsuite.records.record import NewerSchemaError, RunRecord

__all__ = ["QUARANTINE", "ResultStore"]
log = logging.getLogger(__name__)

QUARANTINE = ".quarantined-"  # the suffix after ``<run_id>.json`` of a file moved aside


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class ResultStore:
    """A directory of ``<run_id>.json`` records.

    Writes go to a temporary file in the same directory, are flushed and fsynced,
    then renamed over the target (``os.replace`` is atomic on POSIX and Windows), so
    a crash never leaves a half-written record and never clobbers a finished one.
    """

    def __init__(self, root: str | os.PathLike[str], *, create: bool = True):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise ResultsError(f"Results path {self.root} is a file, not a directory: give a directory")
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
            os.fchmod(fd, 0o666 & ~_umask())  # group-readable like any new file, not mkstemp's 0600
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
        except IsADirectoryError:
            raise ResultsError(f"Broken result file {path}: a directory, not a file") from None
        return RunRecord.from_json(text, source=str(path))

    def quarantine(self, run_id: str) -> Path:
        """Rename the file of ``run_id`` aside, bytes untouched, and return its new path."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        base = self.root / f"{run_id}.json{QUARANTINE}{stamp}"
        dest, k = base, 1
        while dest.exists():
            dest, k = base.with_name(f"{base.name}-{k}"), k + 1
        os.rename(self.path(run_id), dest)
        return dest

    def is_finished(self, run_id: str) -> bool:
        """Whether a finished (completed/diverged/timeout) record exists.

        A file that cannot be read is moved aside (:meth:`quarantine`) and counts as not
        finished, so the run is redone into a fresh file.

        Raises:
            NewerSchemaError: the record was written by a newer benchsuite; it is left in place.
        """
        if not self.path(run_id).exists():
            return False
        try:
            return self.load(run_id).finished
        except NewerSchemaError:
            raise
        except ResultsError as exc:
            moved = self.quarantine(run_id)
            log.warning("%s; moved it aside to %s and the run will be redone", exc, moved.name)
            return False

    def run_ids(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.json") if p.is_file())

    def records(self, *, strict: bool = False) -> tuple[list[RunRecord], list[str]]:
        """All readable records, and one message per unreadable file (raised instead if ``strict``)."""
        records, problems = [], []
        for path in sorted(self.root.glob("*.json")):
            try:
                records.append(self.load(path.stem))
            except (ResultsError, OSError, TypeError, ValueError) as exc:  # ValueError: not UTF-8
                if strict:
                    raise ResultsError(str(exc)) from None
                problems.append(str(exc))
        return records, problems
