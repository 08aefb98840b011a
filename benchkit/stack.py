"""What a run composes, resolved by name before any data is touched: the debias stack (aliases
expanded), the overrides of each component, and whether the backbone, the strategies and the data
go together, with the data setting (Table 3's D_s or D_s ∪ D_t) that follows.

Data settings: ``ugc`` trains on the UGC pairs only (D_s; PGC dropped). ``ugc+pgc`` (D_s ∪ D_t)
hands the PGC to the strategies that consume it (``kl_distill``, ``label_distill``); with no
strategy (``none``) the PGC pairs are pooled with the UGC pairs instead. ``auto`` picks
``ugc+pgc`` when the data has PGC and the stack consumes it, else ``ugc``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from benchkit.data.dataset import Dataset
from benchkit.errors import ConfigError
from benchkit.interfaces import (
    TRAINING_HOOKS,
    Backbone,
    StackAlias,
    Strategy,
)
from benchkit.plugins import Plugins
from benchkit.spec import SETTINGS


def parse_stack(debias: str, plugins: Plugins) -> list[tuple[type[Strategy], bool]]:
    """``a+b`` → (strategy class, optional) pairs, stack aliases expanded; ``none`` stands alone.

    Alias members written ``name?`` are optional (dropped when the data cannot support them).
    """
    names = [n.strip() for n in debias.split("+")]
    if not debias.strip() or any(not n for n in names):
        raise ConfigError(
            f"empty strategy name in --debias {debias!r}; write e.g. 'ips' or 'decrs+label_distill'"
        )
    expanded: list[tuple[type[Strategy], bool]] = []
    for n in names:
        obj = plugins.strategies.get(n)
        if isinstance(obj, StackAlias):
            for member in obj.members:
                optional = member.endswith("?")
                expanded.append((plugins.strategies.get(member.rstrip("?")), optional))
        else:
            expanded.append((obj, False))
    seen: set[str] = set()
    for cls, _ in expanded:
        if cls.name in seen:
            raise ConfigError(f"strategy {cls.name!r} appears twice in --debias {debias!r}")
        seen.add(cls.name)
    if len(expanded) > 1 and "none" in seen:
        raise ConfigError("'none' means no debiasing and cannot be stacked with other strategies")
    return expanded


@dataclass
class Overrides:
    """``--set`` values sorted by owner: the backbone, each strategy, the protocol."""

    backbone: dict[str, Any] = field(default_factory=dict)
    strategies: dict[str, dict[str, Any]] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)


def split_overrides(overrides: Mapping[str, Any], strategy_names: list[str]) -> Overrides:
    """``{"margin": .1, "ips.clip": .2, "protocol.tie": "pessimistic"}`` → per owner."""
    out = Overrides()
    for key, value in overrides.items():
        head, dot, rest = key.partition(".")
        if dot and head == "backbone":
            out.backbone[rest] = value
        elif dot and head == "protocol":
            out.protocol[rest] = value
        elif dot:
            if head not in strategy_names:
                raise ConfigError(
                    f"--set {key}: {head!r} is not a strategy of this run "
                    f"({', '.join(strategy_names)}); use backbone.KEY, protocol.KEY or "
                    f"STRATEGY.KEY"
                )
            out.strategies.setdefault(head, {})[rest] = value
        else:
            out.backbone[key] = value
    return out


def incompatibility(backbone: Backbone, strategy: Strategy, dataset: Dataset) -> str | None:
    """Why ``strategy`` cannot run with this backbone and data, in one line (``None`` if it can)."""
    training = sorted(strategy.hook_points() & TRAINING_HOOKS)
    if backbone.closed_form and training:
        return (
            f"backbone {backbone.name!r} is fitted in closed form, but strategy "
            f"{strategy.name!r} acts during training ({', '.join(training)})"
        )
    missing = sorted(r for r in strategy.requirements() if not dataset.has(r))
    if missing:
        return (
            f"strategy {strategy.name!r} needs {', '.join(missing)}, which dataset "
            f"{dataset.name!r} does not have"
        )
    if strategy.requires_cells and backbone.loss_granularity != "cell":
        return (
            f"strategy {strategy.name!r} weights in-batch cells, but backbone "
            f"{backbone.name!r} exposes only {backbone.loss_granularity}-level loss terms"
        )
    return strategy.check_backbone(backbone)


def check_compatible(backbone: Backbone, strategies: list[Strategy], dataset: Dataset) -> None:
    """Fail before training, in one line, when a strategy cannot work with this backbone or data."""
    missing = sorted(r for r in backbone.requirements() if not dataset.has(r))
    if missing:
        raise ConfigError(
            f"backbone {backbone.name!r} needs {', '.join(missing)}, which dataset "
            f"{dataset.name!r} does not have"
        )
    for s in strategies:
        problem = incompatibility(backbone, s, dataset)
        if problem:
            raise ConfigError(problem)


def resolve_setting(
    setting: str, stack: list[Strategy], debias: str, ds: Dataset
) -> tuple[str, Dataset, bool]:
    """(resolved setting, the data as the method will see it, whether PGC pairs are pooled)."""
    if setting not in SETTINGS:
        raise ConfigError(f"unknown data setting {setting!r}; choose {', '.join(SETTINGS)}")
    consumes = any("pgc" in s.requirements() for s in stack)
    plain = [s.name for s in stack] == ["none"]
    if setting == "auto":
        setting = "ugc+pgc" if ds.pgc is not None and consumes else "ugc"
    if setting == "ugc":
        return setting, (replace(ds, pgc=None) if ds.pgc is not None else ds), False
    if ds.pgc is None:
        raise ConfigError(
            f"setting ugc+pgc needs PGC data, which dataset {ds.name!r} does not "
            f"have (give --pgc PATH)"
        )
    if not consumes and not plain:
        raise ConfigError(
            f"setting ugc+pgc: no strategy of {debias!r} uses the PGC data; add label_distill "
            f"(Table 3's protocol for debias baselines) or use --setting ugc"
        )
    return setting, ds, plain
