"""The executor contract: where a grid's runs execute.

An executor receives :class:`Task` s (a result key and the :class:`~benchkit.spec.RunSpec` that
produces it) through :meth:`Executor.submit` and yields an :class:`Outcome` for each through
:meth:`Executor.collect`, in the order they finish.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from benchkit.contracts.metrics import RankInfo
from benchkit.errors import ConfigError
from benchkit.spec import RunSpec


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
    # Whether tasks run in the driver's own process: then the data the driver loaded while
    # planning are the runs' cache; otherwise the driver drops them once the grid is planned.
    in_driver: ClassVar[bool] = False

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

    def notes(self) -> list[str]:
        """What the executor did beside running the tasks, for the grid's log (once, at the end)."""
        return []

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
