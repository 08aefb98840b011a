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
from benchkit import interfaces as bk


class Popularity(bk.Scorer):
    name = "popularity"
    description = "the training data's most used music first, whatever the video: a floor"

    counts: Tensor

    def build(self, spec: bk.DataSpec) -> None:
        self.spec = spec
        self.register_buffer("counts", torch.zeros(spec.n_music))

    def fit_closed_form(self, pairs: Any) -> None:
        ids = pairs.music_ids()
        ids = ids[ids < self.counts.numel()]  # UGC music only
        self.counts.copy_(torch.bincount(ids, minlength=self.counts.numel()).to(self.counts))

    def score_rows(self, video: Tensor, music: Tensor, rows: bk.Query) -> Tensor:
        scores = torch.log1p(self.counts[rows.column_music_idx])
        return scores.expand(video.shape[0], -1).to(torch.float32)


@hookimpl
def register_backbones(register: Any) -> None:
    register(Popularity)
