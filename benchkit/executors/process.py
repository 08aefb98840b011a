"""The ``process`` executor: a local pool of ``jobs`` worker processes sharing the cores.

Workers are spawned (not forked: torch and forked threads do not mix) and each runs with
``cores // jobs`` threads, which the driver writes into every run's spec (and so its key). A
worker ends itself within a second of the driver's death, however the driver died.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

from benchkit.executors import Executor, Outcome, Task, exit_with_parent, run_task


class ProcessExecutor(Executor):
    name = "process"
    description = "a local pool of --jobs worker processes sharing the cores"

    def __init__(self, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self._pool: ProcessPoolExecutor | None = None
        self._pending: dict[Future[Outcome], str] = {}

    def threads_per_run(self) -> int:
        return max(1, (os.cpu_count() or 1) // self.jobs)

    def submit(self, task: Task) -> None:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.jobs,
                mp_context=mp.get_context("spawn"),
                initializer=exit_with_parent,
                initargs=(os.getpid(),),
            )
        self._pending[self._pool.submit(run_task, task)] = task.key

    def collect(self) -> Iterator[Outcome]:
        while self._pending:
            done, _ = wait(list(self._pending), return_when=FIRST_COMPLETED)
            for fut in done:
                self._pending.pop(fut)
                yield fut.result()

    def close(self) -> None:
        if self._pool is not None:
            for fut in self._pending:
                fut.cancel()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
