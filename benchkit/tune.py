"""Hyperparameter search on the validation split only (Optuna), so that every row of a table can
get the same tuning budget.

A study searches a space — each plugin's declared ``search_space`` (backbone parameters by name,
a strategy's as ``strategy.name``), or a TOML file — for the best value of a metric on the
**validation** split: every trial is an ordinary run whose scored split is ``val``, and the test
split is evaluated once, for the best trial, at the end. Trials that fall behind are pruned from
their per-epoch validation score (Optuna's median pruner; the score is the protocol's selection
metric). The study lives in ``<out>/tune.sqlite``: a killed search resumes where it stopped —
finished trials are kept, the one cut short is marked failed and not counted.

Space files::

    [space]
    lr = { log = [1e-4, 1e-2] }
    margin = { uniform = [0.01, 0.3] }
    hard_negatives = { int = [10, 80] }
    "backdoor.estimate" = { choice = ["batch", "global"] }
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchkit.api import RunResult, execute, plan_run
from benchkit.errors import BenchkitError, ConfigError, DataError
from benchkit.executors.worker import exit_with_parent
from benchkit.hashing import stable_hash
from benchkit.interfaces import Space
from benchkit.metrics import higher_is_better
from benchkit.options import threads_for
from benchkit.plugins import Plugins, get_plugins
from benchkit.spec import RunSpec
from benchkit.stack import parse_stack

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SAMPLERS = ("tpe", "random", "grid")
STUDY_FILE = "tune.sqlite"


@dataclass
class TuneResult:
    """The best parameters found on validation, and the one evaluation of them on the test split."""

    params: dict[str, Any]
    value: float
    metric: str
    trials: dict[str, int]  # complete / pruned / failed
    test: RunResult | None
    study: str
    history: list[dict[str, Any]] = field(default_factory=list)

    def set_line(self) -> str:
        return " ".join(f"--set {k}={_text(v)}" for k, v in sorted(self.params.items()))


def _text(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def rounded(value: Any, s: Space) -> Any:
    """``value`` to the precision the search resolves: 3 significant digits on a log scale, 3
    digits of the range's span on a uniform one (TPE's 0.0012345678 is 0.00123: the digits
    beyond are noise of the validation score, not a finding); kept inside the space."""
    if s.kind == "log":
        v = float(f"{value:.3g}")
    elif s.kind == "uniform":
        v = round(float(value), max(0, math.ceil(-math.log10(s.high - s.low)) + 2))
    else:
        return value
    return min(max(v, s.low), s.high)


def _shown(params: dict[str, Any], space: dict[str, Space]) -> str:
    return " ".join(
        f"{k}={_text(rounded(v, space[k])) if k in space else v}" for k, v in sorted(params.items())
    )


def progress(log: Any, total: int, metric: str, space: dict[str, Space], where: str = "") -> Any:
    """An Optuna callback that says how each trial ended — its score, or the epoch it was pruned
    at, or its error — with the best so far, the trial's parameters and its time."""
    optuna = _optuna()
    state = optuna.trial.TrialState

    def report(study: Any, trial: Any) -> None:
        counted = study.get_trials(deepcopy=False, states=(state.COMPLETE, state.PRUNED))
        head = f"{where}trial {len(counted)}/{total}"
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        params = _shown(trial.params, space)
        if trial.state == state.COMPLETE:
            best = study.best_trial
            log(
                f"{head}: {metric} {trial.value:.4f} (best {best.value:.4f}, trial "
                f"{best.number}); {params}; {seconds:.0f} s"
            )
        elif trial.state == state.PRUNED and "error" in trial.user_attrs:
            log(f"{head}: failed ({trial.user_attrs['error']}); {params}")
        elif trial.state == state.PRUNED:
            step = trial.last_step
            val = trial.intermediate_values.get(step) if step is not None else None
            at = f" at epoch {step} (val {val:.4f})" if val is not None else ""
            log(f"{head}: pruned{at}; {params}; {seconds:.0f} s")
        else:
            log(f"{head}: {trial.state.name.lower()}; {params}")

    return report


def _optuna() -> Any:
    from benchkit.extras import require

    optuna = require("tune", "tuning")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


# ---------------------------------------------------------------------------------------------
# Spaces


def default_space(spec: RunSpec, plugins: Plugins) -> dict[str, Space]:
    """The backbone's and each strategy's declared search space (``strategy.name`` keys)."""
    space: dict[str, Space] = dict(plugins.backbones.get(spec.backbone).search_space)
    for cls, _ in parse_stack(spec.debias, plugins):
        space.update({f"{cls.name}.{k}": v for k, v in cls.search_space.items()})
    return space


def read_space(path: str | Path) -> dict[str, Space]:
    """A space file (see the module docstring), or one clear line."""
    p = Path(path)
    try:
        spec = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such space file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not a valid TOML space file ({exc})") from None
    table = spec.get("space")
    if not isinstance(table, dict) or not table:
        raise ConfigError(f"{p}: needs a [space] table with at least one parameter")
    out = {}
    for name, value in table.items():
        if not isinstance(value, dict) or len(value) != 1:
            raise ConfigError(
                f"{p}: {name} must be one of {{ log = [a, b] }}, {{ uniform = [a, b] }}, "
                f"{{ int = [a, b] }} or {{ choice = [...] }}"
            )
        ((kind, bounds),) = value.items()
        if not isinstance(bounds, list):
            raise ConfigError(f"{p}: {name}: {kind} needs a list")
        try:
            if kind == "choice":
                out[name] = Space.choice(*bounds)
            elif len(bounds) != 2:
                raise ConfigError(f"{p}: {name}: {kind} needs [low, high]")
            else:
                out[name] = Space(kind, float(bounds[0]), float(bounds[1]))
        except (TypeError, ValueError):
            raise ConfigError(f"{p}: {name}: the bounds must be numbers") from None
        except ConfigError as exc:
            raise ConfigError(f"{p}: {name}: {exc}") from None
    return out


def check_space(space: dict[str, Space], spec: RunSpec, plugins: Plugins) -> None:
    """Every name must be a hyperparameter of the backbone or of a strategy of the stack, and every
    value the space can draw must be one the owner accepts."""
    if not space:
        raise ConfigError(
            f"nothing to tune: {spec.backbone}+{spec.debias} declares no search space; give one "
            f"with --space FILE.toml"
        )
    stack = {cls.name: cls for cls, _ in parse_stack(spec.debias, plugins)}
    backbone = plugins.backbones.get(spec.backbone)
    for name, s in space.items():
        head, dot, rest = name.partition(".")
        owner, key = (stack.get(head), rest) if dot else (backbone, name)
        if owner is None or key not in owner.defaults:
            valid = sorted(backbone.defaults) + [
                f"{n}.{k}" for n, c in stack.items() for k in c.defaults
            ]
            raise ConfigError(
                f"unknown parameter {name!r} in the search space; valid: {', '.join(valid)}"
            )
        for value in s.choices or (s.low, s.high):
            value = int(value) if s.kind == "int" else value
            try:
                owner(**{key: value})
            except BenchkitError as exc:
                raise ConfigError(f"search space {name!r}: {exc}") from None


def _suggest(trial: Any, name: str, s: Space) -> Any:
    if s.kind == "log":
        return trial.suggest_float(name, s.low, s.high, log=True)
    if s.kind == "uniform":
        return trial.suggest_float(name, s.low, s.high)
    if s.kind == "int":
        return trial.suggest_int(name, int(s.low), int(s.high))
    return trial.suggest_categorical(name, list(s.choices))


# ---------------------------------------------------------------------------------------------
# The study


def _sampler(optuna: Any, kind: str, space: dict[str, Space], seed: int) -> Any:
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "grid":
        if any(s.kind != "choice" for s in space.values()):
            raise ConfigError("--sampler grid needs a space of choices only ({ choice = [...] })")
        return optuna.samplers.GridSampler(
            {k: list(s.choices) for k, s in space.items()}, seed=seed
        )
    raise ConfigError(f"unknown sampler {kind!r}; choose {', '.join(SAMPLERS)}")


def study_name(spec: RunSpec, space: dict[str, Space], metric: str, sampler: str) -> str:
    base = spec.replace(split="val").to_dict()
    return (
        "tune-"
        + stable_hash(
            {
                "spec": base,
                "space": {k: vars(v) for k, v in space.items()},
                "metric": metric,
                "sampler": sampler,
            }
        )[:16]
    )


def _objective(spec: RunSpec, space: dict[str, Space], metric: str, plugins: Plugins) -> Any:
    optuna = _optuna()

    def objective(trial: Any) -> float:
        params = {name: _suggest(trial, name, s) for name, s in space.items()}
        trial_spec = spec.replace(overrides={**dict(spec.overrides), **params}, split="val")
        plan = plan_run(trial_spec, plugins=plugins)

        def prune(record: dict[str, float]) -> None:
            # The epochs report the selection metric (higher is better): a guide to pruning only
            # for a study that maximises too.
            if "val" in record and higher_is_better(metric):
                trial.report(record["val"], int(record["epoch"]))
                if trial.should_prune():
                    raise optuna.TrialPruned()

        try:
            result = execute(plan, plugins=plugins, on_epoch=prune)
        except BenchkitError as exc:  # a diverged trial is a failed point of the space
            trial.set_user_attr("error", str(exc))
            raise optuna.TrialPruned() from None
        trial.set_user_attr("key", result.key)
        return float(result.metrics[metric])

    return objective


def _worker(
    storage: str,
    name: str,
    spec: RunSpec,
    space: dict[str, Space],
    metric: str,
    trials: int,
    sampler: str,
    timeout: float | None,
    parent: int,
    total: int = 0,
    say: bool = False,
) -> None:
    """One process of a parallel search (``--jobs``): the same study, a share of the trials
    (``say``: report each trial on stderr, as the single-process search logs it)."""
    from benchkit.interrupts import ignore_interrupts

    ignore_interrupts()  # Ctrl-C is the parent's to handle
    exit_with_parent(parent)
    optuna = _optuna()
    study = optuna.load_study(
        study_name=name,
        storage=storage,
        sampler=_sampler(optuna, sampler, space, spec.seed + os.getpid()),
    )
    callbacks = [progress(_stderr, total, metric, space, f"[{os.getpid()}] ")] if say else []
    study.optimize(
        _objective(spec, space, metric, get_plugins()),
        n_trials=trials,
        timeout=timeout,
        callbacks=callbacks,
    )


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def tune(
    spec: RunSpec,
    *,
    trials: int = 20,
    sampler: str = "tpe",
    space: dict[str, Space] | None = None,
    metric: str = "recall@25",
    timeout: float | None = None,
    jobs: int = 1,
    out: str | Path = "benchkit-results",
    plugins: Plugins | None = None,
    log: Any = None,
    evaluate_test: bool = True,
) -> TuneResult:
    """Search ``space`` (default: the plugins' declared spaces) for the best validation ``metric``
    of ``spec``; then train the best — its values rounded to the precision searched
    (:func:`rounded`), the values the result gives — once more and evaluate it on ``spec.split``
    (test). ``log`` hears how each trial ends."""
    optuna = _optuna()
    plugins = plugins or get_plugins()
    say = log is not None
    log = log or (lambda _m: None)
    if trials < 1 or jobs < 1:
        raise ConfigError("--trials and --jobs must be at least 1")
    space = default_space(spec, plugins) if space is None else space
    check_space(space, spec, plugins)
    probe = plan_run(spec.replace(split="val"), plugins=plugins, log=log)
    reported = {f"{m}@{k}" for m in probe.protocol.metrics for k in probe.protocol.ks}
    if metric not in reported:
        raise ConfigError(
            f"metric {metric!r} is not one the protocol {probe.protocol.name!r} reports; "
            f"choose {', '.join(sorted(reported))}"
        )
    folder = Path(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        what = "is a file, not a folder" if folder.is_file() else f"cannot be made ({exc.strerror})"
        raise DataError(f"--out {folder} {what}; name a folder for the study") from None
    storage = f"sqlite:///{folder / STUDY_FILE}"
    name = study_name(spec, space, metric, sampler)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize" if higher_is_better(metric) else "minimize",
        sampler=_sampler(optuna, sampler, space, spec.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=3),
        load_if_exists=True,
    )
    state = optuna.trial.TrialState
    for t in study.get_trials(deepcopy=False, states=(state.RUNNING,)):  # cut short by a kill
        study.tell(t.number, state=state.FAIL)
    counted = (state.COMPLETE, state.PRUNED)
    remaining = trials - len(study.get_trials(deepcopy=False, states=counted))
    log(f"{name}: {trials - remaining} trials done, {max(0, remaining)} to run ({metric} on val)")
    if remaining > 0:
        if jobs == 1:
            study.optimize(
                _objective(spec, space, metric, plugins),
                n_trials=remaining,
                timeout=timeout,
                callbacks=[progress(log, trials, metric, space)],
            )
        else:
            worker_spec = spec.replace(threads=spec.threads or threads_for(jobs))
            shares = [remaining // jobs + (i < remaining % jobs) for i in range(jobs)]
            ctx = mp.get_context("spawn")
            procs = [
                ctx.Process(
                    target=_worker,
                    args=(
                        storage,
                        name,
                        worker_spec,
                        space,
                        metric,
                        n,
                        sampler,
                        timeout,
                        os.getpid(),
                        trials,
                        say,
                    ),
                )
                for n in shares
                if n
            ]
            for p in procs:
                p.start()
            for p in procs:
                p.join()
    done = study.get_trials(deepcopy=False, states=(state.COMPLETE,))
    if not done:
        raise BenchkitError(f"{name}: no trial finished; nothing to select")
    best = study.best_trial
    counts = {
        "complete": len(done),
        "pruned": len(study.get_trials(deepcopy=False, states=(state.PRUNED,))),
        "failed": len(study.get_trials(deepcopy=False, states=(state.FAIL,))),
    }
    history = [
        {"number": t.number, "value": t.value, "state": t.state.name, **t.params}
        for t in study.get_trials(deepcopy=False)
    ]
    params = {k: rounded(v, space[k]) for k, v in best.params.items()}
    test = None
    if evaluate_test:
        final = spec.replace(overrides={**dict(spec.overrides), **params})
        test = execute(plan_run(final, plugins=plugins, log=log), plugins=plugins, log=log)
    return TuneResult(params, float(best.value), metric, counts, test, name, history)
