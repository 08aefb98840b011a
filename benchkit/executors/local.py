"""The ``local`` executor: every run in this process, one after another."""

from __future__ import annotations

from collections.abc import Iterator

from benchkit.contracts.executor import Executor, Outcome, Task
from benchkit.executors.worker import run_task


class LocalExecutor(Executor):
    name = "local"
    description = "in this process, one run after another"
    in_driver = True

    def __init__(self, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self._queue: list[Task] = []

    def submit(self, task: Task) -> None:
        self._queue.append(task)

    def collect(self) -> Iterator[Outcome]:
        while self._queue:
            yield run_task(self._queue.pop(0))
