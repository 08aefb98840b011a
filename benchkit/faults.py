"""Plugin faults, contained: what a plugin's code raises — an exception, ``sys.exit``, a
``KeyboardInterrupt`` of its own — becomes one :class:`PluginFault` naming the plugin, the component
and the hook, so that a grid records the row as failed and goes on, and ``benchkit run`` prints one
line. ``BENCHKIT_DEBUG=1`` (or ``benchkit --debug``) keeps the traceback.

A real Ctrl-C is told apart from a plugin's ``raise KeyboardInterrupt`` by
:func:`benchkit.interrupts.users_interrupt`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

from benchkit.contracts.kinds import BY_NAME, KIND_NAMES
from benchkit.errors import BenchkitError
from benchkit.interrupts import Interrupted, users_interrupt, watch_interrupts
from benchkit.plugins import Plugins, get_plugins

F = TypeVar("F", bound=Callable[..., Any])


class PluginFault(BenchkitError):
    """Plugin code broke a run: it raised, exited or broke the contract. ``trace`` keeps the
    traceback (printed under ``BENCHKIT_DEBUG=1``)."""

    def __init__(self, message: str, trace: str = "") -> None:
        super().__init__(message)
        self.trace = trace


# -- whose code failed --------------------------------------------------------------------------


@dataclass(frozen=True)
class Culprit:
    """Where plugin code failed: the plugin, its component (if known), the hook it was in."""

    plugin: str
    component: str  # "strategy 'ips'", or "" when the frame belongs to no registered class
    hook: str
    where: str  # file:line of the innermost frame of the plugin's code

    def __str__(self) -> str:
        who = f"plugin {self.plugin!r}"
        if self.component:
            who = f"{self.component} of {who}"
        return f"{who}, in {self.hook} ({self.where})"


def _harness(module: str) -> bool:
    return module == "benchkit" or module.startswith("benchkit.")


def _index(plugins: Plugins) -> tuple[dict[str, str], dict[type, tuple[str, str]]]:
    """(module → plugin, class → (component, plugin)) for every loaded plugin, built once."""
    cached = getattr(plugins, "_fault_index", None)
    if cached is not None:
        return cached
    modules: dict[str, str] = {}
    classes: dict[type, tuple[str, str]] = {}
    for name, obj in plugins.pm.list_name_plugin():
        if isinstance(obj, ModuleType) and not _harness(obj.__name__):
            modules[obj.__name__] = name
    for kind in KIND_NAMES:
        for entry in plugins.registry(kind).entries():
            cls = entry.obj if isinstance(entry.obj, type) else type(entry.obj)
            if _harness(cls.__module__):
                continue
            classes[cls] = (f"{BY_NAME[kind].singular} {entry.name!r}", entry.plugin)
            modules.setdefault(cls.__module__, entry.plugin)
    found = (modules, classes)
    plugins._fault_index = found  # type: ignore[attr-defined]
    return found


def culprit(exc: BaseException, plugins: Plugins | None = None) -> Culprit | None:
    """The plugin whose code ``exc`` came out of (its innermost frame of plugin code), or
    ``None`` when the traceback holds no plugin code (a fault of the harness)."""
    if plugins is None:
        plugins = get_plugins()
    modules, classes = _index(plugins)
    frames = [f for f, _ in traceback.walk_tb(exc.__traceback__)]
    for i in range(len(frames) - 1, -1, -1):
        frame = frames[i]
        module = str(frame.f_globals.get("__name__", ""))
        plugin = modules.get(module)
        if plugin is None:
            continue
        component = ""
        entry = i  # the outermost consecutive frame of the same plugin: the hook it entered by
        while entry > 0 and modules.get(str(frames[entry - 1].f_globals.get("__name__"))) == plugin:
            entry -= 1
        for f in (frames[entry], frame):
            owner = f.f_locals.get("self")
            for cls in type(owner).__mro__ if owner is not None else ():
                if cls in classes:
                    component, plugin = classes[cls]
                    break
            if component:
                break
        code = frame.f_code
        return Culprit(
            plugin,
            component,
            frames[entry].f_code.co_name,
            f"{os.path.basename(code.co_filename)}:{frame.f_lineno}",
        )
    return None


def _what(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r})"
    if isinstance(exc, KeyboardInterrupt):
        return "raised KeyboardInterrupt"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if len(text) > 300:
        text = text[:300] + "…"
    return f"raised {type(exc).__name__}" + (f": {text}" if text else "")


READ_ONLY_HINT = (
    "; the dataset's arrays are shared by every run and read-only: copy one before changing it "
    "(np.array(a)), or declare writes_dataset = True on the strategy"
)


def fault(exc: BaseException, plugins: Plugins | None = None) -> PluginFault | None:
    """``exc`` as a :class:`PluginFault` naming the plugin (``None`` if no plugin is to blame and
    it is no exit)."""
    who = culprit(exc, plugins)
    if who is None and not isinstance(exc, (SystemExit, KeyboardInterrupt)):
        return None
    where = str(who) if who is not None else "a run"
    message = f"{where} {_what(exc)}" if who is None else f"{where}: {_what(exc)}"
    wrote = (isinstance(exc, ValueError) and "read-only" in str(exc)) or (
        isinstance(exc, TypeError) and "mappingproxy" in str(exc)
    )
    if wrote:  # a write into the shared dataset: say why it is refused, and the way out
        message += READ_ONLY_HINT
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return PluginFault(message, trace)


@contextlib.contextmanager
def plugin_faults(plugins: Plugins | None = None) -> Iterator[None]:
    """Run code that calls plugins: a plugin's exception, exit or own ``KeyboardInterrupt``
    leaves as a :class:`PluginFault`; benchkit's own errors and the user's Ctrl-C pass through."""
    try:
        yield
    except BenchkitError:
        raise
    except KeyboardInterrupt as exc:
        if users_interrupt():
            raise
        raise _as_fault(exc, plugins) from None
    except (SystemExit, Exception) as exc:
        found = fault(exc, plugins)
        if found is None:
            raise
        raise found from exc


def _as_fault(exc: BaseException, plugins: Plugins | None) -> PluginFault:
    found = fault(exc, plugins)
    assert found is not None  # an exit or interrupt is always one
    return found


def contains_plugin_faults(fn: F) -> F:
    """Decorate a function that calls plugins (its ``plugins`` keyword names the plugin set)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with plugin_faults(kwargs.get("plugins")):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def resumable(fn: F) -> F:
    """Decorate a grid runner (its argument ``out`` is the results folder): the user's Ctrl-C
    becomes one :class:`Interrupted` line saying that a rerun resumes."""
    import inspect

    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with watch_interrupts():
            try:
                return fn(*args, **kwargs)
            except KeyboardInterrupt:
                bound = signature.bind(*args, **kwargs)
                bound.apply_defaults()
                out = bound.arguments.get("out", "the results folder")
                raise Interrupted(
                    f"interrupted; the runs finished so far are kept in {out}: run the same "
                    f"command again to resume"
                ) from None

    return wrapper  # type: ignore[return-value]


def component(obj: Any) -> str:
    """``obj`` (a backbone, strategy, … instance) as the user knows it: ``strategy 'ips' of
    plugin 'ips'``."""
    _, classes = _index(get_plugins())
    for cls in type(obj).__mro__:
        if cls in classes:
            what, plugin = classes[cls]
            return f"{what} of plugin {plugin!r}"
    return f"{type(obj).__name__} {getattr(obj, 'name', '')!r}".rstrip(" '")


def broke(obj: Any, hook: str, problem: str) -> PluginFault:
    """A component that broke its contract in ``hook``, as one line."""
    return PluginFault(f"{component(obj)}, in {hook}: {problem}")
