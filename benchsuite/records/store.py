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

Many writers share a store. Before a process runs a spec it *claims* it
(:meth:`ResultStore.claim`): an exclusive, non-blocking ``fcntl.flock`` on
``.<run_id>.claim``, held until the record is written. Another process (a second
``benchsuite run`` on the same directory, a worker pool, a job of a Slurm array) that
finds the claim held skips the run for now and waits for it at the end. The kernel
releases a ``flock`` when its holder dies, ``kill -9`` included, so a stale claim file
is simply claimed again. (``flock`` needs a local file system, or NFSv4 with lock
support, for claims between machines.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

try:
    import fcntl
except ImportError:  # Windows: no flock; claims always succeed (one writer per directory there)
    fcntl = None  # type: ignore[assignment]

from benchsuite.errors import ResultsError
from benchsuite.records.record import NewerSchemaError, RunRecord

__all__ = ["QUARANTINE", "Claim", "ResultStore", "atomic_write"]
log = logging.getLogger(__name__)

QUARANTINE = ".quarantined-"  # the suffix after ``<run_id>.json`` of a file moved aside


STALE_TMP_SECONDS = 600.0  # a record write takes milliseconds: an older temporary file is a crash's leftover


def atomic_write(target: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``target`` all or nothing: ``write`` fills a temporary file beside it, which is
    fsynced, made group-readable like any new file (not ``mkstemp``'s 0600) and renamed over
    ``target`` (``os.replace`` is atomic on POSIX and Windows)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Claim:
    """An exclusive claim on one run of a store (a held ``flock``); :meth:`release` ends it."""

    def __init__(self, path: Path, fd: int):
        self.path, self._fd = path, fd

    def release(self) -> None:
        """Remove the claim file and drop the lock (idempotent)."""
        if self._fd < 0:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = -1


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

    def claim(self, run_id: str, *, wait: bool = False) -> Claim | None:
        """Claim ``run_id`` for this process: a :class:`Claim`, or None if another process holds it.

        Args:
            run_id: The run.
            wait: Block until the claim is free instead of returning None.
        """
        path = self.root / f".{run_id}.claim"
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o666 & ~_umask())
        if fcntl is None:
            return Claim(path, fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        if not path.exists():  # the holder released (and unlinked) it between our open and lock: retry
            os.close(fd)
            return self.claim(run_id, wait=wait)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {time.time():.0f}\n".encode())
        return Claim(path, fd)

    def clean_temporary_files(self, older_than: float = STALE_TMP_SECONDS) -> int:
        """Remove temporary record files a crashed writer left (older than ``older_than`` seconds)."""
        removed, now = 0, time.time()
        for tmp in self.root.glob(".*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                if now - tmp.stat().st_mtime > older_than:
                    tmp.unlink()
                    removed += 1
        return removed

    def write(self, record: RunRecord) -> Path:
        target = self.path(record.run_id)
        text = record.to_json()
        atomic_write(target, lambda fh: fh.write(text.encode("utf-8")))
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
