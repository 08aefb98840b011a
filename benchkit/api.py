"""The Python API: one call trains and evaluates one method, exactly as ``benchkit run`` does.

from benchkit.api import run
result = run("cmvae", "none", preset="tiny", seed=1234)
result.metrics["recall@25"]
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
from benchkit.device import select_device, ugc_pairs
from benchkit.errors import ConfigError
from benchkit.evaluate import evaluate
from benchkit.interfaces import (
    TRAINING_HOOKS,
    Backbone,
    Protocol,
    RunContext,
    StackAlias,
    Strategy,
)
from benchkit.method import Method
from benchkit.plugins import Plugins, get_plugins
from benchkit.train import fit


def parse_stack(debias: str, plugins: Plugins) -> list[type[Strategy]]:
    """``a+b`` → strategy classes, stack aliases expanded; ``none`` stands alone."""
    names = [n.strip() for n in debias.split("+")]
    if not debias.strip() or any(not n for n in names):
        raise ConfigError(
            f"empty strategy name in --debias {debias!r}; write e.g. 'ips' or 'decrs+label_distill'"
        )
    expanded: list[type[Strategy]] = []
    for n in names:
        obj = plugins.strategies.get(n)
        members = (
            [plugins.strategies.get(m) for m in obj.members]
            if isinstance(obj, StackAlias)
            else [obj]
        )
        expanded.extend(members)
    seen: set[str] = set()
    for cls in expanded:
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


def check_compatible(backbone: Backbone, strategies: list[Strategy], dataset: Dataset) -> None:
    """Fail before training, in one line, when a strategy cannot work with this backbone or data."""
    missing = sorted(r for r in backbone.requirements() if not dataset.has(r))
    if missing:
        raise ConfigError(
            f"backbone {backbone.name!r} needs {', '.join(missing)}, which dataset "
            f"{dataset.name!r} does not have"
        )
    for s in strategies:
        training = sorted(s.hook_points() & TRAINING_HOOKS)
        if backbone.closed_form and training:
            raise ConfigError(
                f"backbone {backbone.name!r} is fitted in closed form, but strategy {s.name!r} "
                f"acts during training ({', '.join(training)})"
            )
        missing = sorted(r for r in s.requires if not dataset.has(r))
        if missing:
            raise ConfigError(
                f"strategy {s.name!r} needs {', '.join(missing)}, which dataset "
                f"{dataset.name!r} does not have"
            )
        if s.requires_cells and backbone.loss_granularity != "cell":
            raise ConfigError(
                f"strategy {s.name!r} weights in-batch cells, but backbone "
                f"{backbone.name!r} exposes only {backbone.loss_granularity}-level "
                f"loss terms"
            )


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

    def to_dict(self) -> dict[str, Any]:
        return {
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


def run(
    backbone: str = "cmvae",
    debias: str = "none",
    *,
    preset: str = "small",
    dataset: Dataset | None = None,
    data: str | Path | None = None,
    pgc: str | Path | None = None,
    test_set: str | None = None,
    normalise_weights: bool = False,
    world_seed: int = 0,
    seed: int = 1234,
    epochs: int | None = None,
    protocol: str = "paper",
    protocol_params: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    device: str = "auto",
    split: str = "test",
    patience: int = 10,
    quiet: bool = True,
    plugins: Plugins | None = None,
    log: Callable[[str], None] | None = None,
) -> RunResult:
    """Train ``backbone`` with the ``debias`` stack on the training split, select the epoch on the
    validation split, and evaluate on ``split`` under ``protocol``.

    ``dataset`` (an in-memory Dataset) or ``data`` (a path: the DebCM layout or tables, with PGC
    clips from ``pgc``) default to the synthetic world at ``preset`` (seed ``world_seed``);
    ``test_set`` re-splits the data (``random``, ``diverse``, ``matching``, ``ratio:X``); ``seed``
    seeds initialisation and batching. ``overrides`` set hyperparameters: plain keys go to the backbone,
    ``<strategy>.<key>`` to a strategy. ``epochs`` caps training (early stopping still applies).
    """
    started = time.perf_counter()
    plugins = plugins or get_plugins()
    # Resolve every name before touching data, so a typo fails in milliseconds.
    backbone_cls = plugins.backbones.get(backbone)
    strategy_classes = parse_stack(debias, plugins)
    protocol_obj: Protocol = plugins.protocols.get(protocol)(**dict(protocol_params or {}))
    bb_over, st_over = split_overrides(overrides or {}, [c.name for c in strategy_classes])
    if epochs is not None:
        if epochs < 1:
            raise ConfigError("epochs must be at least 1")
        bb_over["epochs"] = epochs
    bb: Backbone = backbone_cls(**bb_over)
    strategies = [cls(**st_over.get(cls.name, {})) for cls in strategy_classes]
    torch_device = select_device(device)

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
    if split not in ds.splits:
        raise ConfigError(
            f"dataset {ds.name!r} has no split {split!r}; splits: {', '.join(sorted(ds.splits))}"
        )
    check_compatible(bb, strategies, ds)

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    spec = ds.spec()
    bb.build(spec)
    for s in strategies:
        s.build(spec, bb)
    method = Method(bb, strategies).to(torch_device)
    ctx = RunContext(
        device=torch_device, seed=seed, plugins=plugins, log=log or (lambda _m: None), quiet=quiet
    )
    for s in strategies:
        s.prepare(ds, ctx)

    def validate(m: Method) -> float:
        ev = evaluate(m, ds, protocol_obj, plugins.metrics, "val", torch_device)
        return ev.metrics[protocol_obj.selection_metric]

    fitted = fit(
        method,
        ugc_pairs(ds, "train", torch_device),
        epochs=bb.hparams["epochs"],
        batch_size=bb.hparams["batch_size"],
        seed=seed,
        validate=validate,
        patience=patience,
        progress=not quiet,
        desc=f"{backbone}+{debias}",
    )
    result = evaluate(method, ds, protocol_obj, plugins.metrics, split, torch_device, oracle=True)
    return RunResult(
        method={"backbone": backbone, "debias": debias, "strategies": [s.name for s in strategies]},
        hparams=method.hparams,
        dataset={
            "name": ds.name,
            "fingerprint": ds.fingerprint,
            "test_set": test_set or "given",
            "world_seed": world_seed if dataset is None and data is None else None,
        },
        protocol={
            "name": protocol_obj.name,
            "hash": protocol_obj.fingerprint(),
            "params": protocol_obj.get_params(),
        },
        split=split,
        seed=seed,
        metrics=result.metrics,
        training={
            **fitted.to_dict(),
            "wall_seconds": time.perf_counter() - started,
            "train_pairs": int(ds.splits["train"].size),
        },
        environment={
            "benchkit": __version__,
            "torch": torch.__version__,
            "device": str(torch_device),
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
        },
        history=fitted.history,
    )
