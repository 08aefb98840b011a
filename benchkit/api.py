"""The Python API: one call trains and evaluates one method, exactly as ``benchkit run`` does.

    from benchkit.api import run
    result = run("cmvae", "debcm", preset="tiny", seed=1234)
    result.metrics["recall@25"]

Data settings (Table 3): ``ugc`` trains on the UGC pairs only (D_s; PGC dropped). ``ugc+pgc``
(D_s ∪ D_t) hands the PGC to the strategies that consume it (``kl_distill``, ``label_distill``);
with no strategy (``none``) the PGC pairs are pooled with the UGC pairs instead. ``auto`` picks
``ugc+pgc`` when the data has PGC and the stack consumes it, else ``ugc``.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchkit import __version__
from benchkit.data.dataset import Dataset
from benchkit.data.io import open_dataset, read_pgc_any
from benchkit.data.splits import apply_test_set
from benchkit.device import Pairs, PooledPairs, pgc_pairs, select_device, ugc_pairs
from benchkit.errors import ConfigError
from benchkit.evaluate import evaluate
from benchkit.hashing import stable_hash
from benchkit.interfaces import (
    TRAINING_HOOKS,
    Backbone,
    Protocol,
    RankInfo,
    RunContext,
    StackAlias,
    Strategy,
)
from benchkit.method import Method
from benchkit.plugins import Plugins, get_plugins
from benchkit.train import Trainer, resolve_precision

SETTINGS = ("auto", "ugc", "ugc+pgc")


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


def split_overrides(
    overrides: Mapping[str, Any], strategy_names: list[str]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``{"margin": .1, "ips.clip": .2}`` → backbone overrides and per-strategy overrides."""
    backbone: dict[str, Any] = {}
    strategies: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        head, dot, rest = key.partition(".")
        if dot and head == "backbone":
            backbone[rest] = value
        elif dot:
            if head not in strategy_names:
                raise ConfigError(
                    f"--set {key}: {head!r} is not a strategy of this run "
                    f"({', '.join(strategy_names)})"
                )
            strategies.setdefault(head, {})[rest] = value
        else:
            backbone[key] = value
    return backbone, strategies


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


def load_dataset(
    plugins: Plugins,
    preset: str = "small",
    world_seed: int = 0,
    log: Callable[[str], None] | None = None,
    *,
    path: str | Path | None = None,
    pgc: str | Path | None = None,
    test_set: str | None = None,
    normalise_weights: bool = False,
) -> Dataset:
    """The dataset at ``path`` (any layout a dataset plugin detects), else the synthetic world at
    ``preset``; ``pgc`` replaces its PGC clips; ``test_set`` re-splits it (see
    :func:`benchkit.data.splits.apply_test_set`)."""
    if path is not None:
        data = open_dataset(plugins, path, pgc=pgc, normalise_weights=normalise_weights)
    else:
        data = plugins.datasets.get("synth").load(preset=preset, seed=world_seed, log=log)
        if pgc is not None:
            data = replace(data, pgc=read_pgc_any(pgc))
    return apply_test_set(data, test_set, seed=world_seed)


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


@dataclass
class RunResult:
    """Everything needed to trust and reproduce one number."""

    method: dict[str, Any]
    hparams: dict[str, Any]
    dataset: dict[str, Any]
    protocol: dict[str, Any]
    split: str
    seed: int
    metrics: dict[str, float]
    training: dict[str, Any]
    environment: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    key: str = ""
    ranks: RankInfo | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "method": self.method,
            "hparams": self.hparams,
            "dataset": self.dataset,
            "protocol": self.protocol,
            "split": self.split,
            "seed": self.seed,
            "metrics": self.metrics,
            "training": self.training,
            "environment": self.environment,
        }


@dataclass
class RunPlan:
    """A run resolved but not yet trained: every name looked up, every hyperparameter set, the data
    split and set up. Its :attr:`key` hashes all that decides the numbers (the results store's key).
    """

    backbone_name: str
    debias: str
    backbone: Backbone
    strategies: list[Strategy]
    dataset: Dataset
    setting: str
    pooled: bool
    protocol: Protocol
    seed: int
    split: str
    patience: int
    test_set: str
    world_seed: int | None
    precision: str = "fp32"

    @property
    def hparams(self) -> dict[str, Any]:
        return {
            "backbone": dict(self.backbone.hparams),
            "strategies": {s.name: dict(s.hparams) for s in self.strategies},
        }

    @property
    def key(self) -> str:
        return stable_hash(
            {
                "backbone": self.backbone_name,
                "debias": self.debias,
                "setting": self.setting,
                "strategies": [s.name for s in self.strategies],
                "hparams": self.hparams,
                "dataset": self.dataset.fingerprint,
                "protocol": self.protocol.fingerprint(),
                "seed": self.seed,
                "split": self.split,
                "patience": self.patience,
                "precision": self.precision,
                "benchkit": __version__,
            }
        )[:24]


def plan_run(
    backbone: str = "cmvae",
    debias: str = "none",
    *,
    preset: str = "small",
    dataset: Dataset | None = None,
    data: str | Path | None = None,
    pgc: str | Path | None = None,
    setting: str = "auto",
    test_set: str | None = None,
    normalise_weights: bool = False,
    world_seed: int = 0,
    seed: int = 1234,
    epochs: int | None = None,
    protocol: str = "paper",
    protocol_params: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    split: str = "test",
    patience: int = 10,
    precision: str = "auto",
    features: str = "float32",
    device: str = "auto",
    plugins: Plugins | None = None,
    log: Callable[[str], None] | None = None,
) -> RunPlan:
    """Resolve a run (see :func:`run` for the arguments) without training anything."""
    plugins = plugins or get_plugins()
    # Resolve every name before touching data, so a typo fails in milliseconds.
    backbone_cls = plugins.backbones.get(backbone)
    stack = parse_stack(debias, plugins)
    protocol_obj: Protocol = plugins.protocols.get(protocol)(**dict(protocol_params or {}))
    bb_over, st_over = split_overrides(overrides or {}, [c.name for c, _ in stack])
    if epochs is not None:
        if epochs < 1:
            raise ConfigError("epochs must be at least 1")
        bb_over["epochs"] = epochs
    bb: Backbone = backbone_cls(**bb_over)
    candidates = [(cls(**st_over.get(cls.name, {})), optional) for cls, optional in stack]
    if dataset is not None:
        ds = apply_test_set(dataset, test_set, seed=world_seed)
    else:
        ds = load_dataset(
            plugins,
            preset,
            world_seed,
            log,
            path=data,
            pgc=pgc,
            test_set=test_set,
            normalise_weights=normalise_weights,
        )
    ds = ds.with_feature_dtype(features)
    if split not in ds.splits:
        raise ConfigError(
            f"dataset {ds.name!r} has no split {split!r}; splits: {', '.join(sorted(ds.splits))}"
        )
    resolved, ds, pooled = resolve_setting(setting, [s for s, _ in candidates], debias, ds)
    # Optional alias members the data cannot support are dropped (DebCM without PGC = D_s).
    strategies = [s for s, optional in candidates if not (optional and incompatibility(bb, s, ds))]
    check_compatible(bb, strategies, ds)
    precision = resolve_precision(precision, select_device(device))
    return RunPlan(
        backbone,
        debias,
        bb,
        strategies,
        ds,
        resolved,
        pooled,
        protocol_obj,
        seed,
        split,
        patience,
        test_set or "given",
        world_seed if dataset is None and data is None else None,
        precision,
    )


def execute(
    plan: RunPlan,
    *,
    device: str = "auto",
    quiet: bool = True,
    plugins: Plugins | None = None,
    log: Callable[[str], None] | None = None,
) -> RunResult:
    """Train and evaluate a planned run."""
    started = time.perf_counter()
    plugins = plugins or get_plugins()
    log = log or (lambda _m: None)
    torch_device = select_device(device)
    ds, bb, strategies = plan.dataset, plan.backbone, plan.strategies
    torch.manual_seed(plan.seed)
    np.random.seed(plan.seed % 2**32)
    spec = ds.spec()
    bb.build(spec)
    for s in strategies:
        s.build(spec, bb)
    method = Method(bb, strategies).to(torch_device)
    trainer = Trainer(
        plugins,
        torch_device,
        plan.seed,
        patience=plan.patience,
        progress=not quiet,
        precision=plan.precision,
    )
    ctx = RunContext(
        device=torch_device,
        seed=plan.seed,
        plugins=plugins,
        trainer=trainer,
        protocol=plan.protocol,
        log=log,
        quiet=quiet,
    )
    for s in strategies:
        s.prepare(ds, ctx)
    # Whatever prepare did (train a teacher, or load it from the cache), training starts from the
    # same random state: results never depend on the state of a cache.
    torch.manual_seed(plan.seed + 1)
    ugc = ugc_pairs(ds, "train", torch_device)
    pairs: Pairs | PooledPairs = ugc
    if plan.pooled:
        assert ds.pgc is not None
        pairs = PooledPairs([ugc, pgc_pairs(ds.pgc, "train", torch_device)])
    fitted = trainer.fit(
        method, ds, plan.protocol, pairs=pairs, desc=f"{plan.backbone_name}+{plan.debias}"
    )
    result = evaluate(
        method, ds, plan.protocol, plugins.metrics, plan.split, torch_device, oracle=True
    )
    return RunResult(
        method={
            "backbone": plan.backbone_name,
            "debias": plan.debias,
            "setting": plan.setting,
            "strategies": [s.name for s in strategies],
        },
        hparams=method.hparams,
        dataset={
            "name": ds.name,
            "fingerprint": ds.fingerprint,
            "test_set": plan.test_set,
            "world_seed": plan.world_seed,
        },
        protocol={
            "name": plan.protocol.name,
            "hash": plan.protocol.fingerprint(),
            "params": plan.protocol.get_params(),
        },
        split=plan.split,
        seed=plan.seed,
        metrics=result.metrics,
        training={
            **fitted.to_dict(),
            "wall_seconds": time.perf_counter() - started,
            "train_pairs": len(pairs),
            "precision": plan.precision,
        },
        environment={
            "benchkit": __version__,
            "torch": torch.__version__,
            "device": str(torch_device),
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
        },
        history=fitted.history,
        key=plan.key,
        ranks=result.ranks,
    )


def run(
    backbone: str = "cmvae",
    debias: str = "none",
    *,
    device: str = "auto",
    quiet: bool = True,
    plugins: Plugins | None = None,
    log: Callable[[str], None] | None = None,
    **options: Any,
) -> RunResult:
    """Train ``backbone`` with the ``debias`` stack on the training split, select the epoch on the
    validation split, and evaluate on ``split`` under ``protocol``.

    Options: ``dataset`` (an in-memory Dataset) or ``data`` (a path: the DebCM layout or tables,
    with PGC clips from ``pgc``), else the synthetic world at ``preset`` (seed ``world_seed``);
    ``setting`` is the data setting (module docstring); ``test_set`` re-splits the data
    (``random``, ``diverse``, ``matching``, ``ratio:X``); ``seed`` seeds initialisation and
    batching; ``protocol`` (``paper`` or ``full``) and ``protocol_params``; ``overrides`` set
    hyperparameters — plain keys go to the backbone, ``<strategy>.<key>`` to a strategy;
    ``epochs`` caps training (early stopping after ``patience`` epochs still applies); ``split``
    is the split evaluated; ``features`` stores the features as ``float32`` or ``float16``;
    ``precision`` is the training precision: ``fp32``, ``bf16`` (bfloat16
    autocast; evaluation stays float32) or ``auto`` (bf16 on CPUs with native bfloat16).
    """
    plugins = plugins or get_plugins()
    plan = plan_run(backbone, debias, plugins=plugins, log=log, device=device, **options)
    return execute(plan, device=device, quiet=quiet, plugins=plugins, log=log)
