"""Plugin loading: hook specs → entry points → benchkit's own builtins → check.

Nothing is discovered at import time: :func:`load_plugins` builds a manager on demand (tests build
one without entry points). Each plugin's hooks are called one plugin at a time with a ``register``
callback bound to that plugin, so a broken plugin — one that fails to import, raises in a hook, or
registers a bad or clashing name — is recorded with its error and dropped, while every other plugin
keeps working. ``benchkit plugins`` shows both lists.

Environment:
  ``BENCHKIT_PLUGINS=a,b``       load only these entry points (by entry-point or distribution name)
  ``BENCHKIT_BLOCK_PLUGINS=c,d`` never load these
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import sys
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from benchkit import hookspecs
from benchkit.contracts.kinds import BY_NAME, KINDS, check
from benchkit.errors import PluginError
from benchkit.registry import Entry, Registry
from benchkit.version import __version__

ENTRY_POINT_GROUP = "benchkit"
ENV_ONLY = "BENCHKIT_PLUGINS"
ENV_BLOCK = "BENCHKIT_BLOCK_PLUGINS"

# The harness's own plugins: ``none`` (no debiasing), the executors, protocols, metrics and the
# dataset loaders. Methods are never here; they arrive through entry points like any third party's.
BUILTIN_MODULES = (
    "benchkit.method",
    "benchkit.executors",
    "benchkit.metrics",
    "benchkit.oracle",
    "benchkit.evaluate",
    "benchkit.data.synth",
    "benchkit.data.io",
)


@dataclass
class PluginInfo:
    """One loaded plugin: its name, the distribution that ships it, and what it registered."""

    name: str
    distribution: str
    version: str
    registered: list[tuple[str, str]] = field(default_factory=list)  # (kind, name)


@dataclass
class PluginFailure:
    name: str
    distribution: str
    version: str
    error: str


def _env_list(var: str) -> set[str]:
    return {x.strip() for x in os.environ.get(var, "").split(",") if x.strip()}


class Plugins:
    """The loaded plugins and their registries."""

    backbones: Registry[Any]
    strategies: Registry[Any]
    datasets: Registry[Any]
    protocols: Registry[Any]
    metrics: Registry[Any]
    executors: Registry[Any]

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        for kind in KINDS:
            setattr(self, kind.name, Registry(kind.singular, functools.partial(check, kind)))
        self.info: dict[str, PluginInfo] = {}
        self.failures: list[PluginFailure] = []
        self.skipped: dict[str, str] = {}  # entry point → why it was not loaded

    # -- loading ------------------------------------------------------------------------------

    def add_module(
        self, module: ModuleType | Any, name: str, dist: str = "", version: str = ""
    ) -> None:
        """Register one plugin object (module or instance) and run its register hooks."""
        self.pm.register(module, name=name)
        self.info[name] = PluginInfo(name, dist or "benchkit", version or __version__)

    def _fail(self, name: str, dist: str, version: str, error: str) -> None:
        self.failures.append(PluginFailure(name, dist, version, error))
        if self.pm.get_plugin(name) is not None:
            self.pm.unregister(name=name)
        self.info.pop(name, None)

    def collect(self, strict: bool = False) -> None:
        """Call every register hook plugin by plugin; a plugin's registrations land all or none."""
        self.pm.check_pending()
        for plugin_name in list(self.info):
            try:
                staged = self._stage(plugin_name)
                committed: list[tuple[Registry[Any], Entry[Any]]] = []
                try:
                    for registry, entry in staged:
                        registry.add(entry)
                        committed.append((registry, entry))
                except Exception:
                    for registry, entry in committed:
                        registry.remove(entry)
                    raise
            except Exception as exc:  # a broken plugin must not break the others
                if strict:
                    raise
                info = self.info[plugin_name]
                self._fail(plugin_name, info.distribution, info.version, _describe(exc))
                continue
            self.info[plugin_name].registered = [(r.kind, e.name) for r, e in staged]

    def _stage(self, plugin_name: str) -> list[tuple[Registry[Any], Entry[Any]]]:
        """Run one plugin's register hooks, validating each registration as it is made."""
        plugin = self.pm.get_plugin(plugin_name)
        staged: list[tuple[Registry[Any], Entry[Any]]] = []
        for kind in KINDS:
            hook_name, registry = kind.hook, self.registry(kind.name)

            def register(
                obj: Any,
                *,
                name: str | None = None,
                aliases: Iterable[str] = (),
                _reg: Registry[Any] = registry,
            ) -> None:
                entry = _reg.validate(obj, plugin=plugin_name, name=name, aliases=tuple(aliases))
                staged.append((_reg, entry))

            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin is plugin:
                    with contained():
                        impl.function(register=register)
        return staged

    # -- queries ------------------------------------------------------------------------------

    def registry(self, kind: str) -> Registry[Any]:
        registry: Registry[Any] = getattr(self, BY_NAME[kind].name)
        return registry

    def observers(self, log: Any) -> Any:
        """A function ``emit(event, run, payload)`` that calls every ``on_run_event`` hook; an
        observer that fails is reported once through ``log`` and not called again."""
        impls = list(self.pm.hook.on_run_event.get_hookimpls())
        broken: set[str] = set()

        def emit(event: str, run: dict[str, Any], payload: dict[str, Any]) -> None:
            for impl in impls:
                if impl.plugin_name in broken:
                    continue
                try:
                    with contained():
                        impl.function(event=event, run=run, payload=payload)
                except PluginError as exc:
                    broken.add(impl.plugin_name)
                    log(f"observer {impl.plugin_name!r} failed and is left out: {exc}")

        return emit

    def add_commands(self, cli: Any) -> None:
        """Let plugins add commands; one that would replace an existing command (a built-in's, or
        another plugin's) is undone and reported against the plugin."""
        for impl in self.pm.hook.register_commands.get_hookimpls():
            before = dict(cli.commands)
            try:
                with contained():
                    impl.function(cli=cli)
                replaced = sorted(n for n, c in before.items() if cli.commands.get(n) is not c)
                if replaced:
                    raise PluginError(
                        f"plugin {impl.plugin_name!r} tried to replace the command(s) "
                        f"{', '.join(replaced)}; choose other names"
                    )
            except Exception as exc:
                cli.commands.clear()
                cli.commands.update(before)
                info = self.info.get(impl.plugin_name)
                self._fail(
                    impl.plugin_name,
                    info.distribution if info else "?",
                    info.version if info else "?",
                    _describe(exc),
                )


@contextlib.contextmanager
def contained() -> Iterator[None]:
    """Run a plugin's code so that it cannot take the command line down with it: what it prints
    goes to stderr (stdout stays pure for ``--json``), and any exit it raises — ``SystemExit``,
    its own ``KeyboardInterrupt`` included — becomes a :class:`PluginError` the loader records.
    The user's Ctrl-C passes through (:func:`benchkit.interrupts.users_interrupt`)."""
    from benchkit.interrupts import users_interrupt

    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    except PluginError:
        raise
    except KeyboardInterrupt as exc:
        if users_interrupt():
            raise
        raise PluginError(_describe(exc)) from None
    except BaseException as exc:
        raise PluginError(_describe(exc)) from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, PluginError):
        return str(exc)
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {last[0].filename}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"


OWN_DISTRIBUTION = "benchkit"


def _dist(ep: metadata.EntryPoint) -> str:
    return ep.dist.name if ep.dist else "?"


def _entry_points() -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def load_plugins(
    *,
    entry_points: bool = True,
    builtins: bool = True,
    extra: Iterable[tuple[str, Any]] = (),
    strict: bool = False,
) -> Plugins:
    """Build a plugin set.

    ``entry_points``: load the ``benchkit`` entry-point group (built-in methods and third parties),
    honouring ``BENCHKIT_PLUGINS`` / ``BENCHKIT_BLOCK_PLUGINS``. ``builtins``: benchkit's own
    protocols, metrics and synthetic world. ``extra``: (name, module-or-object) pairs to register
    directly, as tests and notebooks do. ``strict``: raise on the first broken plugin.
    """
    plugins = Plugins()
    only, block = _env_list(ENV_ONLY), _env_list(ENV_BLOCK)
    # Order decides who owns a name: the harness's own plugins, then benchkit's built-in methods,
    # then third parties — so a third party can never take over a built-in name.
    if builtins:
        for modname in BUILTIN_MODULES:  # the harness's own: never blocked
            short = "benchkit." + modname.rsplit(".", 1)[-1]
            plugins.add_module(importlib.import_module(modname), short)
    if entry_points:
        for ep in sorted(_entry_points(), key=lambda e: (_dist(e) != OWN_DISTRIBUTION, e.name)):
            dist = _dist(ep)
            version = ep.dist.version if ep.dist else "?"
            if {ep.name, dist} & block:
                plugins.skipped[ep.name] = f"blocked by {ENV_BLOCK}"
                continue
            if only and not {ep.name, dist} & only:
                plugins.skipped[ep.name] = f"not listed in {ENV_ONLY}"
                continue
            owner = plugins.info.get(ep.name)
            if owner is not None or plugins.pm.get_plugin(ep.name) is not None:
                plugins.failures.append(
                    PluginFailure(
                        ep.name,
                        dist,
                        version,
                        f"entry-point name {ep.name!r} is already taken by "
                        f"{owner.distribution if owner else 'another plugin'}; rename the entry "
                        f"point",
                    )
                )
                continue
            try:
                with contained():
                    module = ep.load()
            except PluginError as exc:
                if strict:
                    raise
                plugins.failures.append(PluginFailure(ep.name, dist, version, str(exc)))
                continue
            plugins.add_module(module, ep.name, dist, version)
    for name, obj in extra:
        plugins.add_module(
            obj, name, getattr(obj, "__distribution__", "local"), getattr(obj, "__version__", "")
        )
    plugins.collect(strict=strict)
    if plugins.skipped:
        note = "; ".join(f"plugin {n!r} {why}" for n, why in sorted(plugins.skipped.items()))
        for kind in KINDS:
            plugins.registry(kind.name).hint = f" (not loaded: {note})"
    return plugins


_DEFAULT: Plugins | None = None


def get_plugins() -> Plugins:
    """The process-wide plugin set used by the CLI and the Python API (loaded once)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = load_plugins()
    return _DEFAULT


def reset_plugins() -> None:
    """Forget the cached plugin set (after installing a plugin, or in tests)."""
    global _DEFAULT
    _DEFAULT = None
