"""The Python API: one call trains and evaluates one method, exactly as ``benchkit run`` does.

    from benchkit.api import run
    result = run("cmvae", "debcm", preset="tiny", seed=1234)
    result.metrics["recall@25"]

Every keyword is a field of :class:`benchkit.spec.RunSpec` (the same options as the CLI). A run is
*planned* (names resolved, hyperparameters set, data loaded and split, the result key computed) and
then *executed* (trained and evaluated, with the machine-dependent values — device, precision —
resolved once, :mod:`benchkit.options`, and recorded). What a run composes is resolved in
:mod:`benchkit.stack` (the debias stack, the overrides, the data setting); its data comes from
:mod:`benchkit.sources`; ``load_dataset`` gives the same data to a notebook.
"""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchkit.data.dataset import Dataset
from benchkit.data.eval_rows import with_training_labels
from benchkit.data.features import with_feature_dtype, with_normalised_features
from benchkit.data.shared import changed, checksums, share
from benchkit.data.splits import apply_test_set
from benchkit.errors import ConfigError
from benchkit.evaluate import evaluate
from benchkit.faults import PluginFault, contains_plugin_faults
from benchkit.flops import counted
from benchkit.hashing import stable_hash
from benchkit.interfaces import (
    Backbone,
    Protocol,
    RankInfo,
    RunContext,
    Strategy,
    training_seed,
)
from benchkit.method import Method
from benchkit.options import RunOptions, resolve
from benchkit.pairs import Pairs, PooledPairs, pgc_pairs, ugc_pairs
from benchkit.plugins import Plugins, get_plugins
from benchkit.sources import DATASETS, load_dataset
from benchkit.spec import RunSpec
from benchkit.stack import (
    check_compatible,
    incompatibility,
    parse_stack,
    resolve_setting,
    split_overrides,
)
from benchkit.train import Trainer
from benchkit.version import __version__

Log = Callable[[str], None]

__all__ = ["RunPlan", "RunResult", "execute", "load_dataset", "plan_run", "run"]


def _quiet(_message: str) -> None:
    return None


# ---------------------------------------------------------------------------------------------
# Plan and execute


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
    spec: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    key: str = ""
    ranks: RankInfo | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "spec": self.spec,
            "method": self.method,
            "hparams": self.hparams,
            "dataset": self.dataset,
            "protocol": self.protocol,
            "split": self.split,
            "seed": self.seed,
            "metrics": self.metrics,
            "training": self.training,
            "environment": self.environment,
            "history": self.history,
        }


@dataclass
class RunPlan:
    """A run resolved but not yet trained: every name looked up, every hyperparameter set, the data
    split and set up. Its :attr:`key` hashes all that decides the numbers (the results store's key).
    """

    spec: RunSpec
    backbone: Backbone
    strategies: list[Strategy]
    dataset: Dataset
    setting: str
    pooled: bool
    protocol: Protocol
    options: RunOptions

    @property
    def threads(self) -> int:
        return self.options.threads

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
                "requested": {**self.spec.keyed(), "threads": self.threads},
                "setting": self.setting,
                "strategies": [s.name for s in self.strategies],
                "hparams": self.hparams,
                "dataset": self.dataset.fingerprint,
                "protocol": self.protocol.fingerprint(),
                "benchkit": __version__,
            }
        )[:24]


@contains_plugin_faults
def check_metrics(protocol: Protocol, plugins: Plugins) -> None:
    """Every metric the protocol lists is an installed metric of the protocol's candidates (a
    ``pool`` metric is reported beside them by itself, where the data allows)."""
    for name in protocol.metrics:
        metric = plugins.metrics.get(name)  # an unknown name: one line naming the installed ones
        if metric.scope != "candidates":
            ranked = [
                n for n in plugins.metrics.names() if plugins.metrics.get(n).scope == "candidates"
            ]
            raise ConfigError(
                f"protocol.metrics: {name!r} is computed over the whole pool and is reported by "
                f"itself where the data allows; the protocol lists metrics of its candidates: "
                f"{', '.join(ranked)}"
            )


def plan_run(
    spec: RunSpec,
    *,
    dataset: Dataset | None = None,
    plugins: Plugins | None = None,
    log: Log | None = None,
) -> RunPlan:
    """Resolve ``spec`` without training anything (``dataset`` replaces the spec's source)."""
    plugins = plugins or get_plugins()
    # Resolve every name before touching data, so a typo fails in milliseconds.
    backbone_cls = plugins.backbones.get(spec.backbone)
    stack = parse_stack(spec.debias, plugins)
    protocol_cls = plugins.protocols.get(spec.protocol)
    over = split_overrides(dict(spec.overrides), [c.name for c, _ in stack])
    protocol_obj: Protocol = protocol_cls(**over.protocol)
    check_metrics(protocol_obj, plugins)
    if spec.epochs is not None:
        over.backbone["epochs"] = spec.epochs
    bb: Backbone = backbone_cls(**over.backbone)
    candidates = [(cls(**over.strategies.get(cls.name, {})), opt) for cls, opt in stack]
    if dataset is not None:
        ds = apply_test_set(dataset, spec.test_set, seed=spec.world_seed)
        ds = with_normalised_features(with_feature_dtype(ds, spec.features), spec.features_norm)
    else:
        ds = DATASETS.normalised(spec, plugins, log)
    ds = ds.with_priors(spec.priors)
    if spec.labels != "observed":
        if ds.truth is None:
            raise ConfigError(
                f"--labels {spec.labels} needs a world with truth; dataset {ds.name!r} has none"
            )
        # The positive control: trained on the counterfactual choices, early-stopped on the
        # observed validation choices (what a real method sees) — or, as a labelled upper bound
        # that reads labels no method could, on counterfactual validation choices too.
        splits = ("train",) if spec.labels == "counterfactual" else ("train", "val")
        ds = with_training_labels(ds, ds.truth.counterfactual, "cf-" + "-".join(splits), splits)
    if spec.split not in ds.splits:
        raise ConfigError(
            f"dataset {ds.name!r} has no split {spec.split!r}; splits: "
            f"{', '.join(sorted(ds.splits))}"
        )
    resolved, ds, pooled = resolve_setting(
        spec.setting, [s for s, _ in candidates], spec.debias, ds
    )
    # Optional alias members the data cannot support are dropped (DebCM without PGC = D_s).
    strategies = [s for s, optional in candidates if not (optional and incompatibility(bb, s, ds))]
    check_compatible(bb, strategies, ds)
    return RunPlan(spec, bb, strategies, ds, resolved, pooled, protocol_obj, resolve(spec))


@contextlib.contextmanager
def compute_threads(n: int) -> Iterator[None]:
    """Run torch and NumPy's BLAS with ``n`` threads, restoring the previous numbers after: a
    run's float reductions (and so its last digits) depend on both, and ``n`` is in its key."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(before)


@contains_plugin_faults
def execute(
    plan: RunPlan,
    *,
    quiet: bool = True,
    plugins: Plugins | None = None,
    log: Log | None = None,
    save: str | Path | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> RunResult:
    """Train and evaluate a planned run; ``save`` writes the trained model package there
    (:mod:`benchkit.model`); ``on_epoch`` sees each epoch's record (and may stop the run by
    raising, as a tuner's pruner does). Plugin code that raises or exits fails the run with one
    :class:`benchkit.faults.PluginFault` naming the plugin."""
    with compute_threads(plan.threads), shared_data(plan) as own:
        return _execute(own, quiet, plugins or get_plugins(), log or _quiet, save, on_epoch)


@contextlib.contextmanager
def shared_data(plan: RunPlan) -> Iterator[RunPlan]:
    """The plan with its dataset as plugins may see it (:func:`benchkit.data.shared.share`):
    read-only, or a private copy for a strategy that declares ``writes_dataset``. A run that still
    changed the shared arrays (through a tensor sharing their memory) fails, and the dataset cache
    is dropped so that no other run sees the change."""
    private = any(getattr(s, "writes_dataset", False) for s in plan.strategies)
    before = {} if private else checksums(plan.dataset)
    failed = False
    try:
        yield replace(plan, dataset=share(plan.dataset, private))
    except BaseException:
        failed = True
        raise
    finally:
        altered = changed(plan.dataset, before) if before else []
        if altered:
            DATASETS.clear()
            if not failed:
                names = [plan.backbone.name, *(s.name for s in plan.strategies)]
                raise PluginFault(
                    f"the run of {' + '.join(names)} changed the dataset it shares with other "
                    f"runs ({', '.join(altered[:4])}), through memory it was handed read-only; "
                    f"its result is dropped and the dataset will be loaded again"
                )


def _execute(
    plan: RunPlan,
    quiet: bool,
    plugins: Plugins,
    log: Log,
    save: str | Path | None,
    on_epoch: Callable[[dict[str, float]], None] | None,
) -> RunResult:
    started = time.perf_counter()
    spec = plan.spec
    options = plan.options
    torch_device = options.device
    ds, bb, strategies = plan.dataset, plan.backbone, plan.strategies
    torch.manual_seed(options.seed)
    np.random.seed(options.seed % 2**32)
    method = Method.assemble(bb, strategies, ds.spec(), torch_device)
    trainer = Trainer.from_options(plugins, options, progress=not quiet, log=log)
    ctx = RunContext(
        device=torch_device,
        seed=spec.seed,
        plugins=plugins,
        trainer=trainer,
        protocol=plan.protocol,
        log=log,
        split=spec.split,
    )
    emit = plugins.observers(log)
    identity = {
        "key": plan.key,
        "backbone": spec.backbone,
        "debias": spec.debias,
        "seed": spec.seed,
        "dataset": ds.fingerprint,
    }
    emit("run_start", identity, spec.to_dict())
    for s in strategies:
        s.prepare(ds, ctx)
    torch.manual_seed(training_seed(spec.seed))
    ugc = ugc_pairs(ds, "train", torch_device)
    pairs: Pairs | PooledPairs = ugc
    if plan.pooled:
        assert ds.pgc is not None
        pairs = PooledPairs([ugc, pgc_pairs(ds.pgc, "train", torch_device)])
    fitted = trainer.fit(
        method,
        ds,
        plan.protocol,
        pairs=pairs,
        desc=f"{spec.backbone}+{spec.debias}",
        on_epoch=lambda record: _epoch_end(emit, identity, record, on_epoch),
    )
    result, test_flops = counted(
        lambda: evaluate(method, ds, plan.protocol, plugins.metrics, spec.split, torch_device, True)
    )
    run_result = RunResult(
        method={
            "backbone": spec.backbone,
            "debias": spec.debias,
            "setting": plan.setting,
            "strategies": [s.name for s in strategies],
        },
        hparams=method.hparams,
        dataset={
            "name": ds.name,
            "fingerprint": ds.fingerprint,
            "eval_rows": ds.eval_fingerprint(spec.split),
            "test_set": spec.test_set,
            # the world's seed, or on data from disk the seed of its split: what a replicate
            # changes (``replication``: a fresh world, or a fresh split of the same data)
            "world_seed": spec.world_seed,
            "replication": "world" if spec.data is None else "split",
        },
        protocol={
            "name": plan.protocol.name,
            "hash": plan.protocol.fingerprint(),
            "params": plan.protocol.get_params(),
        },
        split=spec.split,
        seed=spec.seed,
        metrics=result.metrics,
        training={
            **fitted.to_dict(),
            "wall_seconds": time.perf_counter() - started,
            "train_pairs": len(pairs),
            "precision": options.precision,
            "threads": plan.threads,
            "strategies": {s.name: r for s in strategies if (r := s.report())},
            "flops": run_flops(
                fitted, test_flops, trainer.spent - fitted.train_flops - fitted.validation_flops
            ),
            "finished_at": time.time(),
        },
        spec=spec.to_dict(),
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
    emit("run_end", identity, run_result.to_dict())
    if save is not None:
        from benchkit.model import save_model

        save_model(save, method, ds, run_result.to_dict(), plugins)
        log(f"saved the model package to {save}")
    return run_result


def run_flops(fitted: Any, test: float, companions: float = 0.0) -> dict[str, float]:
    """A run's counted work: the training steps (FLOPs per pair × the pairs of every epoch run;
    none where an identical earlier training was reused), the validation passes, the final
    evaluation, and the companions this run trained (DecRS's plain model, unless shared). A PGC
    teacher's training, shared by the runs of a world and cached, is not in it."""
    total = fitted.train_flops + fitted.validation_flops + companions + test
    return {
        "per_pair": fitted.per_pair_flops,
        "train": fitted.train_flops,
        "validation": fitted.validation_flops,
        "companions": companions,
        "test": test,
        "total": total,
    }


def _epoch_end(
    emit: Callable[[str, dict[str, Any], dict[str, Any]], None],
    identity: dict[str, Any],
    record: dict[str, float],
    on_epoch: Callable[[dict[str, float]], None] | None,
) -> None:
    emit("epoch_end", identity, record)
    if on_epoch is not None:
        on_epoch(record)


def run(
    backbone: str = "cmvae",
    debias: str = "none",
    *,
    dataset: Dataset | None = None,
    quiet: bool = True,
    plugins: Plugins | None = None,
    log: Log | None = None,
    save: str | Path | None = None,
    **options: Any,
) -> RunResult:
    """Train ``backbone`` with the ``debias`` stack on the training split, select the epoch on the
    validation split, and evaluate on ``split`` under ``protocol``.

    ``options`` are :class:`benchkit.spec.RunSpec` fields — ``preset`` / ``world_seed`` (the
    synthetic world) or ``data`` / ``pgc`` (a dataset on disk), ``test_set``, ``setting``,
    ``seed``, ``epochs``, ``patience``, ``protocol``, ``split``, ``overrides`` (a dict: plain keys
    set the backbone, ``<strategy>.<key>`` a strategy, ``protocol.<key>`` the protocol),
    ``precision``, ``features``, ``device``, ``threads`` — with the CLI's defaults. ``dataset``
    takes an in-memory :class:`benchkit.data.Dataset` instead of a source; ``save`` writes the
    trained model package to that folder (load it with ``benchkit.load``).
    """
    plugins = plugins or get_plugins()
    spec = RunSpec(backbone=backbone, debias=debias).replace(**options)
    if save is not None:
        from benchkit.model_card import check_target

        check_target(save)  # before any data is made or any epoch trained
    plan = plan_run(spec, dataset=dataset, plugins=plugins, log=log)
    return execute(plan, quiet=quiet, plugins=plugins, log=log, save=save)
