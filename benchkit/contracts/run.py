"""What a run hands its plugins: the run context, and the provider of a dataset."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from benchkit.contracts.protocol import Protocol
from benchkit.contracts.values import Dataset, Plugins, Trainer
from benchkit.errors import ConfigError
from benchkit.files import cache_root

__all__ = ["DatasetProvider", "RunContext", "training_seed"]


def _silent(_message: str) -> None:
    return None


@dataclass
class RunContext:
    """What a strategy's ``prepare`` receives beside the dataset: the run's device, seed, plugins,
    trainer and protocol, a logger and the cache folder.

    Example::

        ctx = RunContext(device=torch.device("cpu"), seed=1234, plugins=load_plugins())
        ctx.log(f"preparing on {ctx.device} with seed {ctx.seed}")
    """

    device: torch.device
    """Where the run trains: put what ``prepare`` makes here."""
    seed: int
    """The run's seed."""
    plugins: Plugins
    """The loaded plugins (to build a companion backbone by name)."""
    trainer: Trainer | None = None
    """The run's own training recipe (loop, early stopping, precision); ``ctx.train`` uses it."""
    protocol: Protocol | None = None
    """The protocol that selects the run's epochs."""
    log: Callable[[str], None] = _silent
    """Say something on the run's log (silent under ``--quiet``)."""
    cache_dir: Path = field(default_factory=cache_root)
    """benchkit's cache folder (teachers are kept there)."""
    split: str = "test"
    """The split the run is scored on (to report a companion beside the student)."""

    def train(self, method: Any, dataset: Dataset, pairs: Any = None, desc: str = "train") -> Any:
        """Train a companion ``method`` with the run's own recipe (the loop, early stopping on
        ``dataset``'s validation split under the run's protocol, the precision, and the random
        state the run's own training starts from) and return the trainer's
        :class:`benchkit.train.FitResult`. ``pairs`` default to ``dataset``'s training pairs.
        A plain companion built as the run builds its model (``torch.manual_seed(ctx.seed)``,
        then ``Method.assemble``) is the plain run's training, bitwise, and trained once for both
        (:mod:`benchkit.reuse`)."""
        if self.trainer is None:
            raise ConfigError("this RunContext has no trainer: companions cannot be trained")
        torch.manual_seed(training_seed(self.seed))
        return self.trainer.fit(method, dataset, self.protocol, pairs=pairs, desc=desc)


def training_seed(seed: int) -> int:
    """The random state a run's training starts from, whatever preparing it drew (a teacher
    trained, or loaded from the cache): results never depend on the state of a cache."""
    return seed + 1


class DatasetProvider(ABC):
    """Builds or loads a :class:`benchkit.data.Dataset` on demand."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    @abstractmethod
    def load(self, **options: Any) -> Dataset: ...
