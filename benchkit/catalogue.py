"""What the installed plugins register, remembered between commands, so that ``benchkit --help``
and ``benchkit list …`` answer without importing them.

Loading the plugins imports every plugin module, and every one imports torch (a backbone is a
``torch.nn.Module``): two seconds on a small machine, for a list of names. The catalogue keeps what
they registered — each kind's names, plugins and descriptions, and the commands plugins add — in
``$BENCHKIT_CACHE/catalogue/``, under a key that changes whenever the answer could: the benchkit
version, the entry points and their distributions' versions, the size and modification time of
each plugin module (found without importing it), and ``BENCHKIT_PLUGINS`` /
``BENCHKIT_BLOCK_PLUGINS``. A command that loads the plugins anyway (``benchkit plugins``, any run)
writes it; a missing or unreadable one just means loading the plugins this once.

This module imports nothing heavy: it runs before the command line knows what it will need.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from benchkit.files import cache_root, write_text
from benchkit.plugins import (
    BUILTIN_MODULES,
    ENV_BLOCK,
    ENV_ONLY,
    OWN_DISTRIBUTION,
    _entry_points,
)
from benchkit.version import __version__


def entry_points() -> list[metadata.EntryPoint]:
    return _entry_points()


def third_party(points: list[metadata.EntryPoint]) -> list[metadata.EntryPoint]:
    """Entry points of other distributions than benchkit (only they can add commands: a test
    keeps benchkit's own plugins free of ``register_commands``)."""
    return [ep for ep in points if not (ep.dist and ep.dist.name == OWN_DISTRIBUTION)]


def _find_spec(name: str) -> Any:
    """A module's spec found the way ``import`` finds it, without running any package's code (the
    parent's search path comes from the parent's spec, not from importing it)."""
    path = None
    spec = None
    parts = name.split(".")
    for i in range(len(parts)):
        full = ".".join(parts[: i + 1])
        module = sys.modules.get(full)
        spec = getattr(module, "__spec__", None) if module is not None else None
        if spec is None:
            for finder in sys.meta_path:
                find = getattr(finder, "find_spec", None)
                try:
                    spec = find(full, path) if find is not None else None
                except Exception:
                    spec = None
                if spec is not None:
                    break
        if spec is None:
            return None
        path = spec.submodule_search_locations
    return spec


def _stat(module: str) -> list[Any]:
    spec = _find_spec(module)
    origin = getattr(spec, "origin", None)
    if not origin or not os.path.isfile(origin):
        raise LookupError(module)
    st = os.stat(origin)
    return [module, origin, st.st_size, st.st_mtime_ns]


def key() -> str | None:
    """What the catalogue's answer depends on, hashed; ``None`` when a plugin module cannot be
    located without importing it (then nothing is remembered)."""
    try:
        points = entry_points()
        parts: list[Any] = [__version__, sys.version_info[:2]]
        parts += [os.environ.get(var, "") for var in (ENV_ONLY, ENV_BLOCK)]
        for ep in points:
            dist = (ep.dist.name, ep.dist.version) if ep.dist else ("?", "?")
            parts.append([ep.name, ep.value, *dist, _stat(ep.module)])
        parts += [_stat(m) for m in BUILTIN_MODULES]
    except Exception:
        return None
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:24]


def _path(k: str) -> Path:
    return cache_root() / "catalogue" / f"{k}.json"


def read() -> dict[str, Any] | None:
    """The remembered catalogue of the plugins as installed now, or ``None``."""
    k = key()
    if k is None:
        return None
    try:
        found = json.loads(_path(k).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) and "kinds" in found else None


def write(catalogue: dict[str, Any]) -> None:
    """Remember ``catalogue``; an unwritable cache only means loading the plugins next time."""
    k = key()
    if k is None:
        return
    try:
        write_text(_path(k), json.dumps(catalogue))
    except Exception:
        return


def describe(plugins: Any, commands: list[tuple[str, str]]) -> dict[str, Any]:
    """The catalogue of a loaded plugin set: per kind, (name, plugin, description) rows in name
    order; and (name, short help) of every command the plugins added."""
    from benchkit.contracts.kinds import KIND_NAMES
    from benchkit.interfaces import StackAlias

    kinds = {}
    for kind in KIND_NAMES:
        rows = []
        for entry in plugins.registry(kind).entries():
            text = entry.description
            if isinstance(entry.obj, StackAlias):
                text = f"= {' + '.join(entry.obj.members)}" + (f": {text}" if text else "")
            rows.append([entry.name, entry.plugin, text])
        kinds[kind] = rows
    return {"kinds": kinds, "commands": [list(c) for c in commands]}
