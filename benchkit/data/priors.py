"""Uploader genre priors d_u, from the training split only: what a method may know of an uploader's
taste. Leave-one-out for the training video they describe by default, so that a row's own label is
not inside its confounder (``in-sample`` is the DebCM release's form)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GenreHistory:
    """Per-uploader genre counts over the training rows, with each training row's genre (−1 for
    a music of unknown genre, which says nothing about a taste)."""

    counts: np.ndarray  # (U, G) float64
    genre: np.ndarray  # (n_train,) genre of each training row's music, −1 unknown
    video_uploader: np.ndarray  # (Nv,)
    train: np.ndarray  # the training rows

    @classmethod
    def of(
        cls,
        music_genre: np.ndarray,
        video_music: np.ndarray,
        video_uploader: np.ndarray,
        train: np.ndarray,
        shape: tuple[int, int],
    ) -> GenreHistory:
        """``shape``: (uploaders, genres) of the data."""
        genre = music_genre[video_music[train]]
        known = genre >= 0
        counts = np.zeros(shape, dtype=np.float64)
        np.add.at(counts, (video_uploader[train][known], genre[known]), 1)
        return cls(counts, genre, video_uploader, train)

    def uploader_prior(self) -> np.ndarray:
        """(U, G) float32: each uploader's genre distribution over their whole training history
        (an uploader without one gets the mean over training rows): what a new video of theirs,
        outside the training data, is described by."""
        totals = self.counts.sum(axis=1, keepdims=True)
        prior_u = np.divide(self.counts, totals, out=np.zeros_like(self.counts), where=totals > 0)
        row_mean = prior_u[self.video_uploader[self.train]].mean(axis=0)
        prior_u[totals[:, 0] == 0] = row_mean
        return prior_u.astype(np.float32)

    def video_prior(self, loo: bool) -> np.ndarray:
        """(Nv, G) float32: each video's uploader genre distribution — leave-one-out for the
        training rows when ``loo``, the whole history for the others. Where nothing is left (an
        uploader's only training video, or no history), the mean over training rows."""
        prior_u = self.uploader_prior()
        out = prior_u[self.video_uploader].astype(np.float64)
        if loo:
            own = self.counts[self.video_uploader[self.train]].copy()
            known = self.genre >= 0
            own[np.flatnonzero(known), self.genre[known]] -= 1
            left = own.sum(axis=1, keepdims=True)
            fallback = prior_u[self.video_uploader[self.train]].mean(axis=0)
            out[self.train] = np.where(left > 0, own / np.maximum(left, 1), fallback)
        return out.astype(np.float32)
