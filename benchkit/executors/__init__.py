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

from typing import Any

from benchkit.contracts.executor import Executor, Outcome, Task
from benchkit.hookspecs import hookimpl

__all__ = ["Executor", "Outcome", "Task"]


@hookimpl
def register_executors(register: Any) -> None:
    from benchkit.executors.local import LocalExecutor
    from benchkit.executors.process import ProcessExecutor
    from benchkit.executors.ray import RayExecutor

    register(LocalExecutor)
    register(ProcessExecutor)
    register(RayExecutor)
