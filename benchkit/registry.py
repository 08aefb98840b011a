"""Typed registries, filled by the plugins' ``register`` callbacks.

A registry knows one kind of thing (backbones, strategies, ...). It checks every registration on the
spot, so that a broken plugin is named at load time rather than failing later inside a run: the name
must be a slug, the object must satisfy the kind's contract, and a name (or alias) may belong to one
plugin only — a clash names both plugins.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from benchkit.errors import PluginError, UnknownNameError

T = TypeVar("T")

SLUG = re.compile(r"^[a-z][a-z0-9_]*(?:-[a-z0-9_]+)*$")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered thing and where it came from."""

    name: str
    obj: T
    plugin: str
    aliases: tuple[str, ...] = ()

    @property
    def description(self) -> str:
        text = getattr(self.obj, "description", "") or (getattr(self.obj, "__doc__", "") or "")
        return text.strip().splitlines()[0] if text.strip() else ""


@dataclass
class Registry(Generic[T]):
    """Name → object for one kind. ``check`` returns an error text, or ``None`` when fine."""

    kind: str
    check: Callable[[Any], str | None]
    hint: str = ""  # appended to "unknown name" errors (e.g. which plugins were not loaded)
    _entries: dict[str, Entry[T]] = field(default_factory=dict)
    _aliases: dict[str, str] = field(default_factory=dict)

    def validate(
        self, obj: Any, *, plugin: str, name: str | None, aliases: tuple[str, ...]
    ) -> Entry[T]:
        """Check one registration without adding it (the loader stages a plugin's registrations)."""
        name = name if name is not None else getattr(obj, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(
                f"plugin {plugin!r} registered a {self.kind} without a name: give the class a "
                f"`name` attribute or call register(obj, name=...)"
            )
        problem = self.check(obj)
        if problem:
            raise PluginError(f"plugin {plugin!r} registered {self.kind} {name!r}: {problem}")
        for n in (name, *aliases):
            if not SLUG.match(n):
                raise PluginError(
                    f"plugin {plugin!r} registered {self.kind} name {n!r}: names are lower-case "
                    f"slugs (letters, digits, '_' and '-', starting with a letter)"
                )
            owner = self._owner(n)
            if owner is not None:
                raise PluginError(
                    f"{self.kind} name {n!r} from plugin {plugin!r} clashes with the {self.kind} "
                    f"{owner.name!r} already registered by plugin {owner.plugin!r}; block one of "
                    f"them with BENCHKIT_BLOCK_PLUGINS"
                )
        return Entry(name=name, obj=obj, plugin=plugin, aliases=tuple(aliases))

    def add(self, entry: Entry[T]) -> None:
        # Re-check names: another entry of the same staged batch may have taken them.
        for n in (entry.name, *entry.aliases):
            owner = self._owner(n)
            if owner is not None:
                raise PluginError(
                    f"{self.kind} name {n!r} from plugin {entry.plugin!r} clashes with the "
                    f"{self.kind} {owner.name!r} already registered by plugin {owner.plugin!r}"
                )
        self._entries[entry.name] = entry
        for a in entry.aliases:
            self._aliases[a] = entry.name

    def remove(self, entry: Entry[T]) -> None:
        if self._entries.get(entry.name) is entry:
            del self._entries[entry.name]
            for a in entry.aliases:
                self._aliases.pop(a, None)

    def _owner(self, name: str) -> Entry[T] | None:
        if name in self._entries:
            return self._entries[name]
        if name in self._aliases:
            return self._entries[self._aliases[name]]
        return None

    def entry(self, name: str) -> Entry[T]:
        found = self._owner(name)
        if found is None:
            available = ", ".join(self.names()) or "none installed"
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; installed: {available}{self.hint}"
            )
        return found

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._owner(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
