"""The body every built-in executor runs in its process or machine: plan the spec, check the key,
train, evaluate, return the record (only the grid driver writes the store)."""

from __future__ import annotations

import os
import threading
import time
import traceback

from benchkit.api import execute, plan_run
from benchkit.contracts.executor import Outcome, Task
from benchkit.errors import BenchkitError, ConfigError
from benchkit.faults import PluginFault
from benchkit.plugins import get_plugins


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


def run_task(task: Task) -> Outcome:
    """Plan, check and execute one task in the calling process (every executor's worker body).

    A user-side failure (bad data, a diverged run, a plugin's fault or exit) comes back as an
    outcome with ``error``; a key that differs from the driver's means the worker runs other code or
    data, and is an error too.
    """
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
