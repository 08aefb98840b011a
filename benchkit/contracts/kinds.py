"""The table of plugin kinds: for each, its registry's name, what one of them is called, the hook
that registers it, the contract it must meet, and whether it registers a class or an instance.
Loading, listing, fault attribution, the command line and the docs all derive from this table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def _contracts() -> dict[str, type]:
    """The contract classes by name, imported when a registration is checked (listing kinds, on
    the command line's fast path, must not import torch)."""
    from benchkit.contracts.executor import Executor
    from benchkit.contracts.methods import Backbone, StackAlias, Strategy
    from benchkit.contracts.metrics import Metric
    from benchkit.contracts.protocol import Protocol
    from benchkit.contracts.run import DatasetProvider

    found = (Backbone, Strategy, StackAlias, DatasetProvider, Protocol, Metric, Executor)
    return {cls.__name__: cls for cls in found}


@dataclass(frozen=True)
class Kind:
    """One kind of plugin. ``base``: the contract's class name; ``instance``: a plugin registers
    an instance of it (else a subclass); ``also``: other objects the kind accepts (a stack
    alias)."""

    name: str  # the registry, plural: "backbones"
    singular: str  # "backbone"
    base: str
    instance: bool = False
    also: tuple[str, ...] = ()
    description: str = ""

    @property
    def hook(self) -> str:
        return f"register_{self.name}"

    @property
    def contract(self) -> str:
        """Where a plugin author imports the contract from."""
        module = "benchkit.executors" if self.base == "Executor" else "benchkit.interfaces"
        return f"{module}.{self.base}"


KINDS: tuple[Kind, ...] = (
    Kind("backbones", "backbone", "Backbone", description="encoders, a score and loss terms"),
    Kind(
        "strategies",
        "strategy",
        "Strategy",
        also=("StackAlias",),
        description="a debias method (hooks), or a named stack of them",
    ),
    Kind(
        "datasets",
        "dataset provider",
        "DatasetProvider",
        instance=True,
        description="loads a dataset by name or from a path",
    ),
    Kind("protocols", "protocol", "Protocol", description="how a split becomes ranking tasks"),
    Kind("metrics", "metric", "Metric", instance=True, description="a ranking metric at K"),
    Kind("executors", "executor", "Executor", description="where a grid's runs execute"),
)
BY_NAME = {kind.name: kind for kind in KINDS}
KIND_NAMES = tuple(BY_NAME)


def check(kind: Kind, obj: Any) -> str | None:
    """Why ``obj`` cannot be registered as a plugin of ``kind`` (``None`` when it can)."""
    classes = _contracts()
    base = classes[kind.base]
    if kind.also and isinstance(obj, tuple(classes[n] for n in kind.also)):
        members = getattr(obj, "members", True)
        return None if members else f"a {type(obj).__name__} needs at least one member"
    if kind.instance:
        if not isinstance(obj, base):
            return f"expected an instance of {kind.contract}, got {obj!r}"
        return None
    if not (isinstance(obj, type) and issubclass(obj, base)):
        return f"expected a subclass of {kind.contract}, got {obj!r}"
    abstract = getattr(obj, "__abstractmethods__", None)
    if abstract:
        return f"{obj.__name__} does not implement {', '.join(sorted(abstract))}"
    return None
