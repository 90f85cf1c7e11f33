"""A generic name → entry registry with entry-point plugins.

One :class:`Registry` type serves tasks, activations and optimizers. Entries are
added by decorator (``@TASKS.register("digits_mlp")``) or by :meth:`Registry.add`.
Built-in and third-party entries are discovered the same way: through the Python
entry-point group of the registry (e.g. ``benchsuite.tasks``). Loading an entry
point imports its module, whose decorators register the entries; an object that
an entry point names but that did not register itself is added under the entry
point's name.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from benchsuite.errors import BenchsuiteError, UnknownNameError

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered object with its name and one-line description."""

    name: str
    obj: T
    description: str


def _first_line(obj: object) -> str:
    doc = getattr(obj, "description", None) or getattr(obj, "__doc__", None) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


class Registry(Generic[T]):
    """Maps names to objects of one kind.

    Args:
        kind: What the entries are, used in messages ("task", "optimizer", ...).
        group: The entry-point group scanned for plugins, or None for none.
    """

    def __init__(self, kind: str, group: str | None = None):
        self.kind = kind
        self.group = group
        self._entries: dict[str, Entry[T]] = {}
        self._plugins_loaded = group is None
        self._loading = False

    def register(self, name: str, description: str | None = None) -> Callable[[T], T]:
        """Decorator form of :meth:`add`; returns the object unchanged."""

        def decorator(obj: T) -> T:
            self.add(name, obj, description)
            return obj

        return decorator

    def add(self, name: str, obj: T, description: str | None = None) -> None:
        """Register ``obj`` under ``name``; a name may be registered once only."""
        if not isinstance(name, str) or not name:
            raise BenchsuiteError(f"Invalid {self.kind} name: {name!r}")
        old = self._entries.get(name)
        if old is not None:
            if old.obj is obj:  # the same object seen twice (module re-import via plugin)
                return
            raise BenchsuiteError(f"Duplicate {self.kind} name '{name}': already registered")
        self._entries[name] = Entry(name, obj, description or _first_line(obj))

    def load_plugins(self, force: bool = False) -> None:
        """Import every entry point of the group once (built-ins included)."""
        if (self._plugins_loaded and not force) or self._loading:
            return
        self._loading = True
        try:
            for ep in importlib.metadata.entry_points(group=self.group):
                try:
                    obj = ep.load()
                except Exception as exc:  # a broken plugin must not hide the others
                    log.warning("could not load %s plugin '%s' (%s): %s", self.kind, ep.name, ep.value, exc)
                    continue
                registered = any(e.obj is obj for e in self._entries.values())
                if not registered and ep.attr is not None:
                    try:
                        self.add(ep.name, obj)
                    except BenchsuiteError as exc:  # e.g. a plugin reusing a built-in name
                        log.warning("skipped %s plugin '%s' (%s): %s", self.kind, ep.name, ep.value, exc)
            self._plugins_loaded = True
        finally:
            self._loading = False

    def get(self, name: str) -> T:
        """The object registered as ``name``; unknown names list the valid ones."""
        return self.entry(name).obj

    def entry(self, name: str) -> Entry[T]:
        self.load_plugins()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownNameError(self.kind, str(name), self._entries) from None

    def names(self) -> list[str]:
        """Sorted registered names."""
        self.load_plugins()
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        self.load_plugins()
        return [self._entries[n] for n in sorted(self._entries)]

    def __contains__(self, name: object) -> bool:
        self.load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def unregister(self, name: str) -> None:
        """Remove an entry (for tests and interactive use)."""
        self._entries.pop(name, None)
