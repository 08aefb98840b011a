"""An evaluation protocol: the rows of a split's ranking tasks, the metrics, the K and the ties."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from benchkit.contracts.params import Configurable
from benchkit.contracts.values import Dataset
from benchkit.errors import ConfigError
from benchkit.hashing import stable_hash

__all__ = ["EvalTask", "Protocol"]


@dataclass
class EvalTask:
    """The rows of one evaluation: each test video, its positive music, its candidate music
    (``None`` = the whole pool) and its weight (the weights sum to 1)."""

    video_idx: np.ndarray
    positive: np.ndarray
    candidates: np.ndarray | None
    weights: np.ndarray


class Protocol(Configurable, ABC):
    """How a split is turned into ranking tasks, which metrics at which K, and the tie policy.

    A protocol's ``fingerprint`` hashes its name and settings; results carry it and tables refuse to
    mix protocols.
    """

    selection_metric: ClassVar[str] = "recall@25"

    def __init__(self, **hparams: Any) -> None:
        self._set_hparams(hparams)
        if "ks" in self.hparams and "metrics" in self.hparams:
            name, _, k = self.selection_metric.partition("@")
            if name not in self.metrics or int(k) not in self.ks:
                raise ConfigError(
                    f"protocol {self.name!r}: epochs are selected on validation "
                    f"{self.selection_metric}, which ks={list(self.ks)} and "
                    f"metrics={list(self.metrics)} leave out; keep it, e.g. --set "
                    f"protocol.ks=[{', '.join(map(str, sorted({*self.ks, int(k)})))}]"
                )

    @abstractmethod
    def task(self, dataset: Dataset, split: str) -> EvalTask: ...

    @property
    def ks(self) -> tuple[int, ...]:
        return tuple(self.hparams["ks"])

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(self.hparams["metrics"])

    @property
    def tie_policy(self) -> str:
        return str(self.hparams["tie"])

    def fingerprint(self) -> str:
        return stable_hash({"protocol": self.name, **self.hparams})[:16]
