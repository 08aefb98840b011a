"""Running a grid: plan every job, skip what the store holds, run the rest, keep each result.

Executors: ``local`` (one after another, in this process), ``process`` (a local process pool,
``jobs`` workers sharing the cores), ``ray`` (an existing Ray cluster at ``address``, or a local
one; ``pip install benchkit[ray]``). Workers return records; only this driver writes the store, one
transaction per run, so killing a grid loses at most the runs in flight and a rerun resumes.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from benchkit.api import execute, load_dataset, plan_run
from benchkit.data.dataset import Dataset
from benchkit.data.splits import apply_test_set
from benchkit.errors import ConfigError
from benchkit.experiments.grid import Grid, Job
from benchkit.experiments.stats import Summary, summarise
from benchkit.experiments.store import Store
from benchkit.interfaces import RankInfo
from benchkit.plugins import Plugins, get_plugins

EXECUTORS = ("local", "process", "ray")


@dataclass
class Source:
    """Where a grid's data comes from: the synthetic world at a preset, or a path."""

    preset: str = "small"
    world_seed: int = 0
    data: str | None = None
    pgc: str | None = None

    def load(self, plugins: Plugins, log: Callable[[str], None] | None = None) -> Dataset:
        return load_dataset(
            plugins, self.preset, self.world_seed, log, path=self.data, pgc=self.pgc
        )


@dataclass
class GridRun:
    grid: Grid
    keys: list[str]
    results: dict[str, dict[str, Any]]
    ran: int = 0
    skipped: int = 0
    seconds: float = 0.0
    summary: Summary = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    """What every job of a grid shares (sent to each worker)."""

    source: Source
    epochs: int | None
    patience: int
    protocol: str
    device: str
    precision: str = "auto"
    features: str = "float32"


def _job_options(job: Job, recipe: Recipe) -> dict[str, Any]:
    return {
        "setting": job.setting,
        "seed": job.seed,
        "epochs": recipe.epochs,
        "patience": recipe.patience,
        "protocol": recipe.protocol,
        "overrides": job.overrides_dict(),
        "precision": recipe.precision,
        "features": recipe.features,
        "device": recipe.device,
    }


_WORKER_DATA: dict[tuple[Any, ...], Dataset] = {}


def _worker_dataset(source: Source, test_set: str, plugins: Plugins) -> Dataset:
    key = (source.preset, source.world_seed, source.data, source.pgc, test_set)
    if key not in _WORKER_DATA:
        base_key = (*key[:4], "given")
        if base_key not in _WORKER_DATA:
            _WORKER_DATA[base_key] = source.load(plugins)
        _WORKER_DATA[key] = apply_test_set(_WORKER_DATA[base_key], test_set, seed=source.world_seed)
    return _WORKER_DATA[key]


def run_job(job: Job, expected_key: str, recipe: Recipe) -> tuple[str, dict[str, Any], RankInfo]:
    """Train one job (in whichever process runs it) and return its record and ranks."""
    plugins = get_plugins()
    data = _worker_dataset(recipe.source, job.test_set, plugins)
    plan = plan_run(
        job.backbone,
        job.debias,
        dataset=data,
        plugins=plugins,
        world_seed=recipe.source.world_seed,
        **_job_options(job, recipe),
    )
    if plan.key != expected_key:  # the worker's code or data differ from the driver's
        raise ConfigError(
            f"run {job.row} {job.column}: planned key {expected_key} but the worker "
            f"resolved {plan.key}; are driver and workers on the same version/data?"
        )
    result = execute(plan, device=recipe.device, plugins=plugins)
    record = result.to_dict()
    record["dataset"]["test_set"] = job.test_set
    assert result.ranks is not None
    return expected_key, record, result.ranks


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _local(todo: list[tuple[str, Job]], recipe: Recipe) -> Iterator[tuple[Job, Any]]:
    for key, job in todo:
        yield job, run_job(job, key, recipe)


def _process(todo: list[tuple[str, Job]], recipe: Recipe, jobs: int) -> Iterator[tuple[Job, Any]]:
    import multiprocessing as mp

    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=mp.get_context("spawn"),
        initializer=_init_worker,
        initargs=(threads,),
    ) as pool:
        pending = {pool.submit(run_job, job, key, recipe): job for key, job in todo}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                job = pending.pop(fut)
                yield job, fut.result()


def _ray(
    todo: list[tuple[str, Job]], recipe: Recipe, address: str | None, jobs: int
) -> Iterator[tuple[Job, Any]]:
    try:
        import ray
    except ImportError:
        raise ConfigError("the ray executor needs Ray: pip install 'benchkit[ray]'") from None
    if not ray.is_initialized():
        ray.init(
            address=address,
            num_cpus=None if address else (os.cpu_count() or 1),
            ignore_reinit_error=True,
            log_to_driver=False,
        )
    cpus = max(1, (os.cpu_count() or 1) // max(1, jobs)) if not address else 1
    remote = ray.remote(num_cpus=cpus)(run_job)
    pending = {remote.remote(job, key, recipe): job for key, job in todo}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            job = pending.pop(ref)
            yield job, ray.get(ref)


def run_grid(
    grid: Grid,
    source: Source,
    out: str,
    *,
    epochs: int | None = None,
    patience: int = 10,
    executor: str = "local",
    jobs: int = 1,
    address: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    features: str = "float32",
    quiet: bool = False,
    plugins: Plugins | None = None,
    log: Callable[[str], None] | None = None,
) -> GridRun:
    """Run every job of ``grid`` not yet in the store at ``out``; return all its results."""
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; choose {', '.join(EXECUTORS)}")
    if jobs < 1:
        raise ConfigError("--jobs must be at least 1")
    plugins = plugins or get_plugins()
    log = log or (lambda _m: None)
    started = time.perf_counter()
    store = Store(out)
    recipe = Recipe(source, epochs, patience, grid.protocol, device, precision, features)
    base = source.load(plugins, log)
    datasets = {
        t: apply_test_set(base, t, seed=source.world_seed)
        for t in sorted({j.test_set for j in grid.jobs})
    }
    keys = [
        plan_run(
            job.backbone,
            job.debias,
            dataset=datasets[job.test_set],
            plugins=plugins,
            world_seed=source.world_seed,
            **_job_options(job, recipe),
        ).key
        for job in grid.jobs
    ]
    done = store.done(keys)
    todo = [(k, j) for k, j in zip(keys, grid.jobs, strict=True) if k not in done]
    todo = list(dict((k, j) for k, j in todo).items())  # identical jobs run once
    log(
        f"{grid.name}: {len(grid.jobs)} runs, {len(done)} already in {store.path}, "
        f"{len(todo)} to run on the {executor} executor"
    )
    for test_set, ds in datasets.items():
        _WORKER_DATA[(source.preset, source.world_seed, source.data, source.pgc, test_set)] = ds
    if executor == "local":
        stream = _local(todo, recipe)
    elif executor == "process":
        stream = _process(todo, recipe, jobs)
    else:
        stream = _ray(todo, recipe, address, jobs)
    bar = tqdm(
        total=len(todo),
        desc=grid.name,
        unit="run",
        disable=quiet,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    last = time.perf_counter()
    try:
        for job, (key, record, ranks) in stream:
            store.put(key, grid.name, job, record, ranks)
            now = time.perf_counter()
            bar.set_postfix_str(f"{job.row} {'/'.join(job.column)} s{job.seed}: {now - last:.0f}s")
            last = now
            bar.update(1)
    finally:
        bar.close()
    results = store.get(keys)
    hashes = {r["record"]["protocol"]["hash"] for r in results.values()}
    if len(hashes) > 1:
        raise ConfigError(
            f"{grid.name}: the stored runs mix protocols ({', '.join(sorted(hashes))});"
            f" a table compares one protocol only"
        )
    run = GridRun(
        grid, keys, results, ran=len(todo), skipped=len(done), seconds=time.perf_counter() - started
    )
    run.summary = summarise(grid, keys, results)
    return run
