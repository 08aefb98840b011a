"""The plugin contract.

Every hook receives a ``register`` callback (the style of ``llm`` and tox 4) and calls it once per
thing it contributes. The callback validates on the spot (slug name, right type, no clash) and the
plugin manager remembers which plugin registered what, so errors and ``benchkit plugins`` can name
it. A plugin implements only the hooks it needs.
"""

from __future__ import annotations

from typing import Any, Protocol

import pluggy

PROJECT = "benchkit"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class Register(Protocol):
    """The callback a ``register_*`` hook receives."""

    def __call__(
        self, obj: Any, *, name: str | None = None, aliases: tuple[str, ...] = ()
    ) -> None: ...


@hookspec
def register_backbones(register: Register) -> None:
    """Register backbone classes (subclasses of :class:`benchkit.interfaces.Backbone`).

    Called once when the plugins are loaded. ``register(cls)`` uses ``cls.name``; pass ``name=`` or
    ``aliases=`` to override or add names.
    """


@hookspec
def register_strategies(register: Register) -> None:
    """Register debias strategies (subclasses of :class:`benchkit.interfaces.Strategy`) and
    stack aliases (:class:`benchkit.interfaces.StackAlias`, e.g. ``debcm`` = backdoor + distill).

    Called once when the plugins are loaded.
    """


@hookspec
def register_datasets(register: Register) -> None:
    """Register dataset providers (:class:`benchkit.interfaces.DatasetProvider` instances).

    Called once when the plugins are loaded; providers build or load a
    :class:`benchkit.data.Dataset` only when a run asks for them.
    """


@hookspec
def register_protocols(register: Register) -> None:
    """Register evaluation protocols (subclasses of :class:`benchkit.interfaces.Protocol`).

    Called once when the plugins are loaded.
    """


@hookspec
def register_metrics(register: Register) -> None:
    """Register ranking metrics (:class:`benchkit.interfaces.Metric` instances).

    Called once when the plugins are loaded; a protocol computes each metric at every cut-off K.
    """


@hookspec
def register_commands(cli: Any) -> None:
    """Add commands to the ``benchkit`` click group ``cli`` (``cli.add_command(...)``).

    Called when the command line starts, before the arguments are parsed.
    """
