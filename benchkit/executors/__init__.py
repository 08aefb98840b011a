"""Executors: where a grid's runs execute. A contract, three built-ins, and a hook for more.

An executor receives :class:`Task` s (a result key and the :class:`~benchkit.spec.RunSpec` that
produces it) through :meth:`Executor.submit` and yields an :class:`Outcome` for each through
:meth:`Executor.collect`, in the order they finish. Every built-in runs :func:`run_task` — plan
the spec, check the key, train, evaluate — in whichever process or machine it uses, and returns
the record; only the grid driver writes the results store, so all executors share one store and
one set of keys.

Built-ins: ``local`` (in this process, one after another), ``process`` (a local process pool),
``ray`` (a Ray cluster: an existing one at ``--address``, or a local one bound to 127.0.0.1).
A plugin adds its own with the ``register_executors`` hook.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from benchkit import hookimpl
from benchkit.errors import BenchkitError, ConfigError
from benchkit.interfaces import RankInfo
from benchkit.spec import RunSpec


def exit_with_parent(parent: int, every: float = 1.0) -> None:
    """Run in a worker process: end it when ``parent`` is gone. A pool worker waiting on its task
    queue never sees the queue close (it holds a writing end too), so a driver killed by SIGKILL or
    the OOM killer would otherwise leave its workers — and their copies of the data — behind."""

    def watch() -> None:
        while True:
            time.sleep(every)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="benchkit-parent-watch", daemon=True).start()


@dataclass(frozen=True)
class Task:
    """One run to execute: the key the driver planned, and the spec that produces it."""

    key: str
    spec: RunSpec


@dataclass
class Outcome:
    """What came back from one task. ``seconds`` is the run's own duration, measured where it
    ran; ``error`` is set (and ``record`` / ``ranks`` are ``None``) when the run failed."""

    key: str
    record: dict[str, Any] | None
    ranks: RankInfo | None
    seconds: float
    error: str | None = None
    trace: str = ""  # the failure's traceback, shown under BENCHKIT_DEBUG=1


class Executor(ABC):
    """Runs tasks somewhere and reports their outcomes as they finish."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(self, *, jobs: int = 1, address: str | None = None, quiet: bool = True) -> None:
        if jobs < 1:
            raise ConfigError("--jobs must be at least 1")
        self.jobs = jobs
        self.address = address
        self.quiet = quiet

    def threads_per_run(self) -> int:
        """The CPU threads each run gets, when the spec does not say (it enters the run's key)."""
        import torch

        return torch.get_num_threads()

    @abstractmethod
    def submit(self, task: Task) -> None:
        """Queue or start one task."""

    @abstractmethod
    def collect(self) -> Iterator[Outcome]:
        """Yield the outcome of every submitted task, in the order they finish."""

    def close(self) -> None:
        """Release workers (called once, after :meth:`collect`, also after an error)."""
        return None

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def run_task(task: Task) -> Outcome:
    """Plan, check and execute one task in the calling process (every executor's worker body).

    A user-side failure (bad data, a diverged run, a plugin's fault or exit) comes back as an
    outcome with ``error``; a key that differs from the driver's means the worker runs other code or
    data, and is an error too.
    """
    from benchkit.api import execute, plan_run
    from benchkit.faults import PluginFault
    from benchkit.plugins import get_plugins

    started = time.perf_counter()
    try:
        plugins = get_plugins()
        plan = plan_run(task.spec, plugins=plugins)
        if plan.key != task.key:
            raise ConfigError(
                f"the driver planned key {task.key} but this worker resolved {plan.key}: are "
                f"driver and workers on the same benchkit version, plugins and data?"
            )
        result = execute(plan, plugins=plugins)
    except BenchkitError as exc:
        trace = exc.trace if isinstance(exc, PluginFault) else ""
        return Outcome(task.key, None, None, time.perf_counter() - started, str(exc), trace)
    except (Exception, SystemExit) as exc:  # a bug: keep the grid going, keep the trace
        line = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return Outcome(task.key, None, None, time.perf_counter() - started, line, trace)
    assert result.ranks is not None
    return Outcome(task.key, result.to_dict(), result.ranks, time.perf_counter() - started)


@hookimpl
def register_executors(register: Any) -> None:
    from benchkit.executors.local import LocalExecutor
    from benchkit.executors.process import ProcessExecutor
    from benchkit.executors.ray import RayExecutor

    register(LocalExecutor)
    register(ProcessExecutor)
    register(RayExecutor)
