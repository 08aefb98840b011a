"""Device selection and the training pairs as device tensors.

Features stay in one tensor per modality (zero-copy from NumPy on the CPU); a batch is gathered by
index, so the loop does no per-sample Python work and no host copies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from benchkit.data.dataset import Dataset
from benchkit.errors import ConfigError
from benchkit.interfaces import Batch


def select_device(preference: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else the CPU. ``cuda`` fails clearly where there is none."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device {preference!r} requested but CUDA is not available; use --device cpu"
        )
    try:
        return torch.device(preference)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {preference!r}: {exc}") from None


def as_tensor(a: np.ndarray, device: torch.device) -> Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a))
    return t.to(device, non_blocking=True) if t.device != device else t


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

    def __len__(self) -> int:
        return int(self.video_row.shape[0])

    def batch(self, idx: Tensor) -> Batch:
        v, m = self.video_row[idx], self.music_row[idx]
        return Batch(
            video=self.video_features[v].float(),
            music=self.music_features[m].float(),
            video_idx=v,
            music_idx=m,
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
    )
