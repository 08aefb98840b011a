"""``random``: the chance floor. Every music gets the same score, so the protocol's tie policy
decides the rank; under the default ``expected`` policy Recall@K is exactly K / #candidates. A floor
that cannot be argued with: any method must beat it."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from benchkit import hookimpl
from benchkit.interfaces import (
    AT_LEAST_ONE,
    AT_LEAST_TWO,
    Backbone,
    Batch,
    DataSpec,
    Latent,
    LossTerm,
    Output,
)


class Chance(Backbone):
    name = "random"
    description = "chance: scores every music the same; the tie policy makes it exactly random"
    loss_granularity = "none"
    closed_form = True
    defaults = {"batch_size": 1024, "epochs": 1}
    ranges = {"batch_size": AT_LEAST_TWO, "epochs": AT_LEAST_ONE}

    def build(self, spec: DataSpec) -> None:
        self.spec = spec

    def encode_video(self, x: Tensor) -> Latent:
        return Latent(torch.zeros(x.shape[0], 1, device=x.device))

    def encode_music(self, x: Tensor) -> Latent:
        return Latent(torch.zeros(x.shape[0], 1, device=x.device))

    def fit_closed_form(self, pairs: Any) -> None:
        """Nothing to fit."""

    def loss_terms(self, batch: Batch, out: Output) -> dict[str, LossTerm]:
        return {}


@hookimpl
def register_backbones(register: Any) -> None:
    register(Chance)
