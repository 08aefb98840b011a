"""The training pairs as device tensors: UGC pairs of a split, PGC pairs, and pooled sources.

Features stay in one tensor per modality (zero-copy from NumPy on the CPU); a batch is gathered by
index, so the loop does no per-sample Python work and no host copies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from benchkit.data.dataset import PGC, Dataset
from benchkit.device import as_tensor
from benchkit.interfaces import Batch


@dataclass
class Pairs:
    """Matched (video, music) pairs for training, on one device.

    ``video_row`` / ``music_row`` index the feature tensors; ``music_row`` also identifies the music,
    so in-batch cells pairing a video with another copy of its own music can be masked.
    """

    video_features: Tensor
    music_features: Tensor
    video_row: Tensor
    music_row: Tensor
    uploader: Tensor | None = None
    genre: Tensor | None = None
    prior: Tensor | None = None
    propensity: Tensor | None = None
    video_offset: int = 0  # added to the ids a batch reports (pooled sources stay distinct)
    music_offset: int = 0
    dataset: Dataset | None = None  # where the pairs come from (closed-form fits may read it)

    def __len__(self) -> int:
        return int(self.video_row.shape[0])

    @property
    def device(self) -> torch.device:
        return self.video_row.device

    def matched_features(self) -> tuple[Tensor, Tensor]:
        """(video features, music features) of every pair, row by row (closed-form fits)."""
        return self.video_features[self.video_row].float(), self.music_features[
            self.music_row
        ].float()

    def music_ids(self) -> Tensor:
        """The music id of every pair, as a batch reports it (offset in a pooled set)."""
        return self.music_row + self.music_offset

    def batch(self, idx: Tensor) -> Batch:
        v, m = self.video_row[idx], self.music_row[idx]
        return Batch(
            video=self.video_features[v].float(),
            music=self.music_features[m].float(),
            video_idx=v + self.video_offset,
            music_idx=m + self.music_offset,
            uploader_idx=None if self.uploader is None else self.uploader[idx],
            genre=None if self.genre is None else self.genre[idx],
            prior=None if self.prior is None else self.prior[idx],
            propensity=None if self.propensity is None else self.propensity[idx],
        )


def ugc_pairs(dataset: Dataset, split: str, device: torch.device) -> Pairs:
    """The dataset's UGC pairs of one split (each video with the music its uploader chose)."""
    rows = dataset.splits[split]
    music = dataset.video_music[rows]
    genre = dataset.music_genre
    return Pairs(
        video_features=as_tensor(dataset.video_features, device),
        music_features=as_tensor(dataset.music_features, device),
        video_row=as_tensor(rows, device),
        music_row=as_tensor(music, device),
        uploader=None
        if dataset.video_uploader is None
        else as_tensor(dataset.video_uploader[rows], device),
        genre=None if genre is None else as_tensor(genre[music], device),
        prior=as_tensor(dataset.video_prior[rows], device) if dataset.has("uploaders") else None,
        propensity=None
        if dataset.propensity is None
        else as_tensor(dataset.propensity[rows].astype(np.float32), device),
        dataset=dataset,
    )


def pgc_pairs(pgc: PGC, split: str, device: torch.device) -> Pairs:
    """The PGC pairs of one split (``train`` or ``val``), genres where the PGC music have them."""
    rows = pgc.pairs[pgc.splits[split]]
    genre = None if pgc.music_genre is None else as_tensor(pgc.music_genre[rows[:, 1]], device)
    return Pairs(
        video_features=as_tensor(pgc.video_features, device),
        music_features=as_tensor(pgc.music_features, device),
        video_row=as_tensor(rows[:, 0].copy(), device),
        music_row=as_tensor(rows[:, 1].copy(), device),
        genre=genre,
    )


@dataclass
class PooledPairs:
    """Several pair sets trained as one (UGC ∪ PGC, Table 3's D_s ∪ D_t for plain backbones).

    Ids are offset per source so that a PGC music never counts as another copy of a UGC music.
    Fields only some sources have (uploaders, priors) are dropped; genres unknown to a source are
    -1.
    """

    parts: list[Pairs]

    def __post_init__(self) -> None:
        video_offset = music_offset = 0
        for part in self.parts:
            part.video_offset, part.music_offset = video_offset, music_offset
            video_offset += int(part.video_features.shape[0])
            music_offset += int(part.music_features.shape[0])
        self.bounds = np.cumsum([0, *(len(p) for p in self.parts)])

    def __len__(self) -> int:
        return int(self.bounds[-1])

    @property
    def device(self) -> torch.device:
        return self.parts[0].device

    @property
    def dataset(self) -> Dataset | None:
        """The UGC dataset of the first source (where the test videos come from)."""
        return self.parts[0].dataset

    def matched_features(self) -> tuple[Tensor, Tensor]:
        parts = [p.matched_features() for p in self.parts]
        return torch.cat([v for v, _ in parts]), torch.cat([m for _, m in parts])

    def music_ids(self) -> Tensor:
        return torch.cat([p.music_ids() for p in self.parts])

    def batch(self, idx: Tensor) -> Batch:
        pieces = []
        for part, lo, hi in zip(self.parts, self.bounds[:-1], self.bounds[1:], strict=True):
            sel = idx[(idx >= lo) & (idx < hi)] - int(lo)
            if sel.numel():
                pieces.append(part.batch(sel))
        genres = [
            b.genre if b.genre is not None else torch.full_like(b.video_idx, -1) for b in pieces
        ]
        return Batch(
            video=torch.cat([b.video for b in pieces]),
            music=torch.cat([b.music for b in pieces]),
            video_idx=torch.cat([b.video_idx for b in pieces]),
            music_idx=torch.cat([b.music_idx for b in pieces]),
            genre=torch.cat(genres) if any(b.genre is not None for b in pieces) else None,
        )
