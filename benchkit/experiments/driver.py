"""Running a grid: plan every job, skip what the store holds, run the rest, keep each result.

Every job is a :class:`~benchkit.spec.RunSpec`: the grid's own fields (row, column, seed) on top of
the command line's shared ones. The driver plans each spec to get its result key, asks the store
which keys are done, and hands the rest to an executor (:mod:`benchkit.executors`). Workers return
records; only this driver writes the store, one transaction per run, so killing a grid loses at
most the runs in flight and a rerun resumes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from benchkit.api import plan_run
from benchkit.contracts.executor import Executor, Task
from benchkit.errors import BenchkitError, ConfigError
from benchkit.experiments.grid import BASE_SEED, REPORT_WORLD_SEED, Grid
from benchkit.experiments.stats import Summary, summarise
from benchkit.experiments.store import Store
from benchkit.faults import resumable
from benchkit.interrupts import debug
from benchkit.options import cores
from benchkit.plugins import Plugins, get_plugins
from benchkit.sources import DATASETS
from benchkit.spec import RunSpec


class RunFailed(BenchkitError):
    """Runs of a grid failed in their workers (recorded in the store, marked in the table)."""


@dataclass
class GridRun:
    grid: Grid
    keys: list[str]
    results: dict[str, dict[str, Any]]
    ran: int = 0
    skipped: int = 0
    seconds: float = 0.0
    summary: Summary = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)  # optional rows left out, and why
    failures: dict[str, str] = field(default_factory=dict)  # run key → its error
    idle_tail: float = 0.0  # worker-seconds idle after each worker's last run, to the grid's end


AUTO_MAX_JOBS = 4
RUNS_PER_GPU = 4  # concurrent runs per GPU under auto
ORDERS = ("longest", "table")


def static_cost(plan: Any) -> float:
    """A run's FLOPs before anything ran: 6 per parameter of its backbone per training pair
    (forward and backward of dense layers) over the epochs it may run; 1 for a closed-form one.
    Built on the ``meta`` device: no memory, no arithmetic."""
    backbone = plan.backbone
    if backbone.closed_form:
        return 1.0
    import torch

    pairs = plan.dataset.splits["train"].size * int(backbone.hparams["epochs"])
    try:
        with torch.device("meta"):
            probe = backbone.fresh()
            probe.build(plan.dataset.spec())
        params = sum(p.numel() for p in probe.parameters())
    except Exception:  # a plugin's build that cannot run on meta: order it by its pairs alone
        return float(pairs)
    return 6.0 * params * pairs


def estimated_costs(
    store: Store, grid: str, todo: dict[str, Any], job_of: dict[str, Any], static: dict[str, float]
) -> dict[str, float]:
    """Each run's expected FLOPs: the mean counted FLOPs of the stored runs of its row and column
    in this grid (another replicate or seed: learned, early stopping included) where the store
    has them, else its :func:`static_cost` (``static``)."""
    import json

    frame = store.frame(grid)
    learned: dict[tuple[str, str], float] = {}
    if not frame.empty and "training.flops" in frame:
        for (row, column), runs in frame.groupby(["row_label", "column_key"]):
            totals = [json.loads(t)["total"] for t in runs["training.flops"] if isinstance(t, str)]
            if totals:
                learned[(row, column)] = sum(totals) / len(totals)
    out = {}
    for key in todo:
        job = job_of[key]
        found = learned.get((job.row, "/".join(job.column)))
        out[key] = found if found is not None else static[key]
    return out


def idle_tail(finished: list[float], jobs: int) -> float:
    """Worker-seconds idle at the end of a grid: each worker's last run ends at one of the last
    ``jobs`` finishing times, and waits from then to the grid's last one."""
    if not finished:
        return 0.0
    last = sorted(finished)[-jobs:]
    return sum(last[-1] - t for t in last)


def choose_executor(
    executor: str, jobs: int | None, device: str, own_plugins: bool = False
) -> tuple[str, int]:
    """The executor and workers a grid runs on. ``auto``: on a CPU with several cores, the process
    executor with one thread per run — on 2 cores a whole (tiny) Table 3 took 252 s that way,
    against 309 s one run at a time on both cores (small matrices scale badly across threads).
    On GPUs, the process executor too, ``RUNS_PER_GPU`` runs sharing each device (one small run
    leaves a GPU mostly idle; the workers are spread over the devices). The local executor on one
    core, or with an in-process plugin registry (``own_plugins``: workers load the installed
    plugins, not the caller's). CPU workers default to one per core, at most four, as each holds
    its own copy of the data."""
    n = cores()
    gpus = gpu_count(device)
    if executor == "auto":
        executor = "local" if own_plugins or (n < 2 and not gpus) else "process"
    if executor == "local":
        return executor, 1
    if gpus:
        return executor, jobs or max(1, min(gpus * RUNS_PER_GPU, n))
    return executor, jobs or min(n, AUTO_MAX_JOBS)


def gpu_count(device: str) -> int:
    """The GPUs a grid's runs may spread over: all of them for ``auto`` or ``cuda``, one for a
    named ``cuda:N``, none for the CPU or where CUDA is absent."""
    import torch

    if not (device in ("auto", "cuda") or device.startswith("cuda:")):
        return 0
    if not torch.cuda.is_available():
        return 0
    return 1 if device.startswith("cuda:") else torch.cuda.device_count()


def make_executor(
    name: str, plugins: Plugins, *, jobs: int = 1, address: str | None = None, quiet: bool = True
) -> Executor:
    """The executor plugin ``name`` (``local``, ``process``, ``ray`` or a plugin's)."""
    cls: type[Executor] = plugins.executors.get(name)
    return cls(jobs=jobs, address=address, quiet=quiet)


def tuned_grid(
    grid: Grid, base: RunSpec, out: str, plugins: Plugins, log: Any, jobs: int = 1
) -> Grid:
    """The grid with every cell's hyperparameters tuned on its validation split, with the same
    budget for every row (``grid.tune``: trials, sampler, metric); the studies resume from
    ``<out>/tune.sqlite``. A row with nothing to tune (no declared space) keeps its defaults.
    ``jobs`` trials of a cell run at once, each in its own process."""
    from dataclasses import replace

    from benchkit.tune import tune

    options = {k: grid.tune[k] for k in ("sampler", "metric") if k in grid.tune}
    best: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}
    tuned = []
    for job in grid.jobs:
        cell = (job.row, job.column)
        if cell not in best:
            # Every replicate of a cell uses the values found on one tuning world (or, on data
            # from disk, the first replicate's validation split): defaults are never chosen on
            # a world the table reports on.
            spec = job.spec(base).replace(seed=BASE_SEED, world_seed=tuning_world(base))
            try:
                found = tune(
                    spec,
                    trials=int(grid.tune["trials"]),
                    out=out,
                    plugins=plugins,
                    log=log,
                    evaluate_test=False,
                    jobs=jobs,
                    **options,
                )
                best[cell] = found.params
                log(f"{grid.name}: {job.row} {'/'.join(job.column)} tuned: {found.set_line()}")
            except ConfigError as exc:
                if "nothing to tune" not in str(exc):
                    raise
                best[cell] = {}
        own = dict(job.own)
        own["overrides"] = tuple(sorted({**dict(own.get("overrides", ())), **best[cell]}.items()))
        tuned.append(replace(job, own=tuple(sorted(own.items()))))
    return replace(grid, jobs=tuned)


def shared_work(plan: Any) -> tuple[Any, ...] | None:
    """What a planned run builds that other runs reuse: the PGC teacher of its world and seed
    (``None`` when it builds nothing shared)."""
    ds = plan.dataset
    if ds.pgc is None or not any("pgc" in s.requirements() for s in plan.strategies):
        return None
    return ("teacher", ds.pgc.fingerprint, plan.spec.seed, plan.spec.precision)


def _planned(
    spec: RunSpec, plugins: Plugins, log: Callable[[str], None], cost: bool
) -> tuple[str, str, tuple[Any, ...] | None, float]:
    """What the driver keeps of a run's plan — its key, its test set's fingerprint, what it shares,
    its static cost when ``cost`` — and not the plan: its data are the workers' to load."""
    plan = plan_run(spec, plugins=plugins, log=log)
    test = plan.dataset.eval_fingerprint(spec.split)
    return plan.key, test, shared_work(plan), static_cost(plan) if cost else 0.0


def tuning_world(base: RunSpec) -> int:
    """The world a grid tunes on: the tuning world paired with its first reporting world
    (reporting world 1000 + s ↔ tuning world s), or, below the reporting seeds, that world."""
    if base.data is None and base.world_seed >= REPORT_WORLD_SEED:
        return base.world_seed - REPORT_WORLD_SEED
    return base.world_seed


def job_spec(job: Any, base: RunSpec, replicates: int) -> RunSpec:
    """A job's spec; on data from disk with its given split, replicates redraw the validation /
    test partition (test set ``resplit``) instead of using the one given partition."""
    spec = job.spec(base)
    if replicates > 1 and spec.data is not None and spec.test_set == "given":
        spec = spec.replace(test_set="resplit")
    return spec


def replication(grid: Grid, base: RunSpec) -> dict[str, Any]:
    """What a grid's replicates are, for the footers and the export."""
    kind = "world" if base.data is None else "split"
    return {
        "kind": kind,
        "replicates": grid.replicates,
        "seeds": grid.seeds,
        "first_seed": base.world_seed,
        "reporting": base.data is not None or base.world_seed >= REPORT_WORLD_SEED,
    }


def _distinct_replicates(grid: Grid, planned: list[Any], tests: list[str]) -> None:
    """Refuse replicates that rank the same test videos: a fixed selection of the data (T_diverse
    or T_matching read from disk with a time column, say) leaves them no room to differ."""
    seen: dict[tuple[str, tuple[str, ...], str], int] = {}
    for job, test in zip(planned, tests, strict=True):
        place = (job.row, job.column, test)
        if seen.setdefault(place, job.replicate) != job.replicate:
            raise ConfigError(
                f"{grid.name}: replicates {seen[place]} and {job.replicate} of {job.row} "
                f"{'/'.join(job.column)} rank the same test videos: this test set is a fixed "
                f"selection of the data, with no room to redraw it; use --replicates 1 (and "
                f"--seeds for training noise), or a test set that can be redrawn (given, random)"
            )


@resumable
def run_grid(
    grid: Grid,
    base: RunSpec | None = None,
    out: str = "benchkit-results",
    *,
    executor: str = "auto",
    jobs: int | None = None,
    address: str | None = None,
    quiet: bool = False,
    plugins: Plugins | None = None,
    log: Callable[[str], None] | None = None,
    only_stored: bool = False,
    order: str = "longest",
) -> GridRun:
    """Run every job of ``grid`` not yet in the store at ``out``; return all its results.

    ``base`` holds the shared options (data source, training recipe); each job's own fields go
    on top. When ``base.threads`` is unset, the executor decides each run's threads; ``auto``
    chooses the executor (:func:`choose_executor`). ``only_stored``: run nothing, summarise what
    the store already holds (the keys are those the executor's runs would have). ``order``:
    ``longest`` submits the runs longest first (:func:`estimated_costs`), so that no long run
    starts last and leaves the other workers idle; ``table`` in the grid's order. Ctrl-C stops it
    with one :class:`benchkit.interrupts.Interrupted`: the runs stored so far stay, and a rerun resumes.
    """
    base = base or RunSpec()
    executor, jobs = choose_executor(executor, jobs, base.device, own_plugins=plugins is not None)
    plugins = plugins or get_plugins()
    log = log or (lambda _m: None)
    if order not in ORDERS:
        raise ConfigError(f"order is one of {', '.join(ORDERS)}, not {order!r}")
    started = time.perf_counter()
    store = Store(out)
    with make_executor(executor, plugins, jobs=jobs, address=address, quiet=quiet) as ex:
        if base.threads is None:
            base = base.replace(threads=ex.threads_per_run())
        if grid.tune:
            if only_stored:
                raise ConfigError("a tuned grid cannot be read without running (it tunes first)")
            grid = tuned_grid(grid, base, out, plugins, log, jobs=jobs)  # 1 on local
        planned, specs, keys, tests = [], [], [], []
        shared: dict[str, tuple[Any, ...] | None] = {}
        static: dict[str, float] = {}
        dropped: dict[str, str] = {}
        for job in grid.jobs:
            spec = job_spec(job, base, grid.replicates)
            try:
                key, test, group, flops = _planned(spec, plugins, log, order == "longest")
            except BenchkitError as exc:
                if not job.optional:
                    raise
                dropped.setdefault(job.row, str(exc))
                continue
            planned.append(job)
            specs.append(spec)
            keys.append(key)
            tests.append(test)
            shared[key], static[key] = group, flops
        if not ex.in_driver:  # the runs load their data in the workers: drop the driver's copy
            DATASETS.clear()  # (4.5 GB at the paper preset, held for the whole grid)
        _distinct_replicates(grid, planned, tests)
        grid.replication = replication(grid, base)
        for row, why in dropped.items():
            log(f"{grid.name}: optional row {row!r} left out: {why}")
        done = store.done(keys)
        store.link(grid.name, [(k, j) for k, j in zip(keys, planned, strict=True) if k in done])
        todo = (
            {} if only_stored else {k: s for k, s in zip(keys, specs, strict=True) if k not in done}
        )
        log(
            f"{grid.name}: {len(planned)} runs, {len(done)} already in {store.path}"
            + (
                ", reading only what is stored"
                if only_stored
                else f", {len(todo)} to run on the {executor} executor ({base.threads} "
                f"thread{'s' if base.threads != 1 else ''} per run)"
            )
        )
        job_of = {k: j for k, j in zip(keys, planned, strict=True)}
        places: dict[str, list[Any]] = {}  # a run may sit at several places (a fixed series)
        for k, j in zip(keys, planned, strict=True):
            places.setdefault(k, []).append(j)
        # A run that builds what others reuse (a world's PGC teacher) goes first; the runs that
        # share it wait for it, so that no two workers build the same thing at once, while the
        # other runs keep the workers busy.
        leaders: dict[tuple[Any, ...], str] = {}
        waiting: dict[tuple[Any, ...], list[str]] = {}
        if order == "longest":
            cost = estimated_costs(store, grid.name, todo, job_of, static)
            todo = dict(sorted(todo.items(), key=lambda item: -cost[item[0]]))
        for key, spec in todo.items():
            group = shared.get(key)
            if group is not None and group in leaders:
                waiting.setdefault(group, []).append(key)
                continue
            if group is not None:
                leaders[group] = key
            ex.submit(Task(key, spec))
        bar = tqdm(
            total=len(todo),
            desc=grid.name,
            unit="run",
            disable=quiet or not todo,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        submitted, finished = time.perf_counter(), []
        try:
            for outcome in ex.collect():
                finished.append(time.perf_counter())
                job = job_of[outcome.key]
                if outcome.error is not None:  # recorded; the grid goes on
                    store.fail(outcome.key, grid.name, job, outcome.error)
                    log(
                        f"{grid.name}: {job.row} {'/'.join(job.column)} seed {job.seed} "
                        f"failed: {outcome.error}"
                    )
                    if debug() and outcome.trace:
                        log(outcome.trace.rstrip())
                else:
                    assert outcome.record is not None and outcome.ranks is not None
                    store.put(outcome.key, grid.name, job, outcome.record, outcome.ranks)
                    store.link(grid.name, [(outcome.key, j) for j in places[outcome.key]])
                group = shared.get(outcome.key)
                if group is not None and leaders.get(group) == outcome.key:
                    for key in waiting.pop(group, []):
                        ex.submit(Task(key, todo[key]))
                bar.set_postfix_str(
                    f"{job.row} {'/'.join(job.column)} s{job.seed}: {outcome.seconds:.0f}s"
                )
                bar.update(1)
        finally:
            bar.close()
    idle = idle_tail(finished, jobs)
    if finished:
        log(
            f"{grid.name}: {len(finished)} runs in {finished[-1] - submitted:,.0f} s on {jobs} "
            f"worker{'s' if jobs != 1 else ''}; idle at the end: {idle:,.0f} worker-seconds "
            f"({100 * idle / (jobs * max(finished[-1] - submitted, 1e-9)):.1f}% of worker time)"
        )
    for note in ex.notes():
        log(f"{grid.name}: {note}")
    results = store.get(keys)
    failures = store.failures([k for k in keys if k not in results])
    hashes = {r["record"]["protocol"]["hash"] for r in results.values()}
    if len(hashes) > 1:
        raise ConfigError(
            f"{grid.name}: the stored runs mix protocols ({', '.join(sorted(hashes))});"
            f" a table compares one protocol only"
        )
    run = GridRun(
        grid, keys, results, ran=len(todo), skipped=len(done), seconds=time.perf_counter() - started
    )
    run.failures = {k: failures[k] for k in keys if k in failures}
    run.summary = summarise(grid, keys, results, planned, set(run.failures))
    run.dropped = dropped
    run.idle_tail = idle
    return run
