"""``popularity``: every video gets the music most used in the training data, in that order.

The floor that ignores content altogether: a deep method that cannot beat it has learned nothing
about what fits a video. Fitted by counting the training pairs' music (pooled PGC music never
count: they are not in the pool a test video is ranked against); ties (music never used, say)
are broken by the protocol's tie policy, never by id.
"""

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
    Query,
)


class Popularity(Backbone):
    name = "popularity"
    description = "the training data's most used music first, whatever the video: a floor"
    loss_granularity = "none"
    closed_form = True
    defaults = {"batch_size": 1024, "epochs": 1}
    ranges = {"batch_size": AT_LEAST_TWO, "epochs": AT_LEAST_ONE}

    counts: Tensor

    def build(self, spec: DataSpec) -> None:
        self.spec = spec
        self.register_buffer("counts", torch.zeros(spec.n_music))

    def fit_closed_form(self, pairs: Any) -> None:
        ids = pairs.music_ids()
        ids = ids[ids < self.counts.numel()]  # UGC music only
        self.counts.copy_(torch.bincount(ids, minlength=self.counts.numel()).to(self.counts))

    def encode_video(self, x: Tensor) -> Latent:
        return Latent(torch.zeros(x.shape[0], 1, device=x.device))

    def encode_music(self, x: Tensor) -> Latent:
        return Latent(torch.zeros(x.shape[0], 1, device=x.device))

    def score_rows(self, video: Tensor, music: Tensor, rows: Query) -> Tensor:
        scores = torch.log1p(self.counts[rows.column_music_idx])
        return scores.expand(video.shape[0], -1).to(torch.float32)

    def loss_terms(self, batch: Batch, out: Output) -> dict[str, LossTerm]:
        return {}


@hookimpl
def register_backbones(register: Any) -> None:
    register(Popularity)
