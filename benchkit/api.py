"""The Python API: one call trains and evaluates one method, exactly as ``benchkit run`` does.

    from benchkit.api import run
    result = run("cmvae", "debcm", preset="tiny", seed=1234)
    result.metrics["recall@25"]

Every keyword is a field of :class:`benchkit.spec.RunSpec` (the same options as the CLI). A run is
*planned* (names resolved, hyperparameters set, data loaded and split, the result key computed) and
then *executed* (trained and evaluated, with the machine-dependent values — device, precision —
resolved there and recorded).

Data settings (Table 3): ``ugc`` trains on the UGC pairs only (D_s; PGC dropped). ``ugc+pgc``
(D_s ∪ D_t) hands the PGC to the strategies that consume it (``kl_distill``, ``label_distill``);
with no strategy (``none``) the PGC pairs are pooled with the UGC pairs instead. ``auto`` picks
``ugc+pgc`` when the data has PGC and the stack consumes it, else ``ugc``.
"""

from __future__ import annotations

import contextlib
import platform
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchkit import __version__
from benchkit.data.dataset import Dataset
from benchkit.data.io import open_dataset, read_pgc_any
from benchkit.data.shared import changed, checksums, share
from benchkit.data.splits import apply_test_set
from benchkit.device import select_device
from benchkit.errors import ConfigError
from benchkit.evaluate import evaluate
from benchkit.faults import PluginFault, contains_plugin_faults
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
from benchkit.pairs import Pairs, PooledPairs, pgc_pairs, ugc_pairs
from benchkit.plugins import Plugins, get_plugins
from benchkit.spec import SETTINGS, RunSpec
from benchkit.train import Trainer, resolve_precision

Log = Callable[[str], None]


def _quiet(_message: str) -> None:
    return None


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


# ---------------------------------------------------------------------------------------------
# Data


class DatasetCache:
    """Datasets by what decides them (:meth:`RunSpec.data_key`), a few at a time: a grid's runs
    and a worker's successive jobs share one load of each world and each test-set split."""

    def __init__(self, size: int = 6) -> None:
        self.size = size
        self._items: OrderedDict[tuple[Any, ...], Dataset] = OrderedDict()

    def normalised(self, spec: RunSpec, plugins: Plugins, log: Log | None = None) -> Dataset:
        """:meth:`get`, with the features preprocessed as ``spec.features_norm`` says (kept too:
        every row of a grid's column shares one normalisation of its data)."""
        stamp = (_stamp(spec.data), _stamp(spec.pgc))
        key = (*spec.data_key(), stamp, "norm", spec.features_norm)
        if key not in self._items:
            ds = self.get(spec, plugins, log).with_normalised_features(spec.features_norm)
            self._put(key, ds)
        self._items.move_to_end(key)
        return self._items[key]

    def get(self, spec: RunSpec, plugins: Plugins, log: Log | None = None) -> Dataset:
        stamp = (_stamp(spec.data), _stamp(spec.pgc))  # files changed on disk: load them again
        key = (*spec.data_key(), stamp)
        if key not in self._items:
            base_spec = spec.replace(test_set="given", features="float32")
            base_key = (*base_spec.data_key(), stamp)
            if base_key not in self._items:
                self._put(base_key, _load_source(base_spec, plugins, log))
            ds = apply_test_set(self._items[base_key], spec.test_set, seed=spec.world_seed)
            self._put(key, ds.with_feature_dtype(spec.features))
        self._items.move_to_end(key)
        return self._items[key]

    def _put(self, key: tuple[Any, ...], ds: Dataset) -> None:
        self._items[key] = ds
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()


DATASETS = DatasetCache()


def _stamp(path: str | None) -> tuple[tuple[str, int, int], ...]:
    """(name, size, mtime) of every file under ``path``: changes when the data on disk change."""
    if path is None:
        return ()
    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    out = []
    for f in files:
        try:
            st = f.stat()
        except OSError:
            continue
        out.append((str(f), st.st_size, st.st_mtime_ns))
    return tuple(out)


def _load_source(spec: RunSpec, plugins: Plugins, log: Log | None) -> Dataset:
    if spec.data is not None:
        if spec.world:
            raise ConfigError("--world changes the synthetic world; it cannot apply to --data")
        return open_dataset(
            plugins, spec.data, pgc=spec.pgc, normalise_weights=spec.normalise_weights
        )
    data = plugins.datasets.get("synth").load(
        preset=spec.preset, seed=spec.world_seed, log=log, **dict(spec.world)
    )
    if spec.pgc is not None:
        data = replace(data, pgc=read_pgc_any(spec.pgc))
    return data


def load_dataset(
    spec: RunSpec | None = None,
    *,
    plugins: Plugins | None = None,
    log: Log | None = None,
    **options: Any,
) -> Dataset:
    """The data a run of ``spec`` (or of these RunSpec ``options``) sees: the dataset at ``data``
    (any layout a dataset plugin detects) or the synthetic world at ``preset``, re-split by
    ``test_set``, features stored as ``features``."""
    spec = (spec or RunSpec()).replace(**options)
    return DATASETS.get(spec, plugins or get_plugins(), log)


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
    threads: int

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
    if spec.epochs is not None:
        over.backbone["epochs"] = spec.epochs
    bb: Backbone = backbone_cls(**over.backbone)
    candidates = [(cls(**over.strategies.get(cls.name, {})), opt) for cls, opt in stack]
    if dataset is not None:
        ds = apply_test_set(dataset, spec.test_set, seed=spec.world_seed)
        ds = ds.with_feature_dtype(spec.features).with_normalised_features(spec.features_norm)
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
        ds = ds.with_training_labels(ds.truth.counterfactual, "cf-" + "-".join(splits), splits)
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
    threads = spec.threads or torch.get_num_threads()
    return RunPlan(spec, bb, strategies, ds, resolved, pooled, protocol_obj, threads)


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
    torch_device = select_device(spec.device)
    precision = resolve_precision(spec.precision, torch_device)
    ds, bb, strategies = plan.dataset, plan.backbone, plan.strategies
    torch.manual_seed(spec.seed)
    np.random.seed(spec.seed % 2**32)
    data_spec = ds.spec()
    bb.build(data_spec)
    for s in strategies:
        s.build(data_spec, bb)
    method = Method(bb, strategies).to(torch_device)
    trainer = Trainer(
        plugins,
        torch_device,
        spec.seed,
        patience=spec.patience,
        progress=not quiet,
        precision=precision,
    )
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
    # Whatever prepare did (train a teacher, or load it from the cache), training starts from the
    # same random state: results never depend on the state of a cache.
    torch.manual_seed(spec.seed + 1)
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
    result = evaluate(method, ds, plan.protocol, plugins.metrics, spec.split, torch_device, True)
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
            "precision": precision,
            "threads": plan.threads,
            "strategies": {s.name: r for s in strategies if (r := s.report())},
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
