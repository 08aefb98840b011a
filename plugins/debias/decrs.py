"""DecRS (Wang et al., KDD 2021) adapted to background-music matching. METHODS.md §10.

Training: the backdoor adjustment with the *global* mean d̄ (see ``backdoor``; the interaction form
by default, so the adjustment reaches the ranking on the music side of the score). Inference: the
scores are mixed with those of a separately trained plain backbone (same recipe, no strategy),
per uploader, by how much their interests drift:
η_u = ((KL_u − min) / (max − min))^a, score = η_u σ(s_DecRS) + (1 − η_u) σ(s_plain), where KL_u is
the symmetric KL between the genre distributions (smoothed by ``smoothing`` = 0.01) of the two halves
of u's training history, a = 0.2. The data has no timestamps: a history's halves are its videos in
row order. Uploaders with fewer than two training videos show no drift (η = 0: the plain model).
The plain model is part of the trained DecRS module (saved with it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from benchkit import hookimpl
from benchkit.data.dataset import Dataset
from benchkit.device import as_tensor
from benchkit.interfaces import Backbone, Batch, DataSpec, Query, RunContext
from benchkit.method import Method
from benchkit_plugins.debias.backdoor import Backdoor


def drift_weights(
    genres: np.ndarray,
    uploaders: np.ndarray,
    n_uploaders: int,
    n_genres: int,
    a: float = 0.2,
    smoothing: float = 0.01,
) -> np.ndarray:
    """η_u per uploader from the training history (``genres``/``uploaders`` in time order)."""
    eta = np.zeros(n_uploaders)
    kl = np.full(n_uploaders, np.nan)
    order = np.argsort(uploaders, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(uploaders, minlength=n_uploaders))]
    for u in range(n_uploaders):
        hist = genres[order[bounds[u] : bounds[u + 1]]]
        if hist.size < 2:
            continue
        half = hist.size // 2
        p = (np.bincount(hist[:half], minlength=n_genres) + smoothing) / (
            half + smoothing * n_genres
        )
        q = (np.bincount(hist[half:], minlength=n_genres) + smoothing) / (
            hist.size - half + smoothing * n_genres
        )
        kl[u] = np.sum(p * np.log(p / q)) + np.sum(q * np.log(q / p))
    known = ~np.isnan(kl)
    if known.any():
        lo, hi = kl[known].min(), kl[known].max()
        eta[known] = ((kl[known] - lo) / (hi - lo)) ** a if hi > lo else 0.0
    return eta


class DecRS(Backdoor):
    name = "decrs"
    description = (
        "DecRS: global-mean backdoor in training + drift-weighted mixing with a plain model"
    )
    defaults = {
        "variant": "interaction",
        "estimate": "global",
        "a": 0.2,
        "smoothing": 0.01,
        "mix": True,
    }

    video_eta: Tensor

    def build(self, spec: DataSpec, backbone: Backbone) -> None:
        super().build(spec, backbone)
        self.hold("student", backbone, freeze=False)  # the plain model copies its recipe
        self.register_buffer("video_eta", torch.zeros(0), persistent=False)

    def prepare(self, dataset: Dataset, ctx: RunContext) -> None:
        super().prepare(dataset, ctx)
        if not self.hparams["mix"]:
            return
        assert dataset.video_uploader is not None and dataset.music_genre is not None
        train = dataset.splits["train"]
        eta = drift_weights(
            np.maximum(dataset.music_genre[dataset.video_music[train]], 0),
            dataset.video_uploader[train],
            dataset.n_uploaders,
            dataset.n_genres,
            self.hparams["a"],
            self.hparams["smoothing"],
        )
        self.video_eta = as_tensor(eta[dataset.video_uploader].astype(np.float32), ctx.device)
        plain_bb = self.held("student").fresh()
        torch.manual_seed(ctx.seed)
        plain_bb.build(dataset.spec())
        plain = Method(plain_bb).to(ctx.device)
        ctx.log("DecRS: training the plain model it mixes with")
        ctx.train(plain, dataset, desc="decrs plain")
        self.hold("plain", plain, persistent=True)  # needed at inference: saved with DecRS
        self.hold("video_features", as_tensor(dataset.video_features, ctx.device))
        self.hold("music_features", as_tensor(dataset.music_features, ctx.device))

    def adjust_score(self, scores: Tensor, rows: Batch | Query, music: Tensor) -> Tensor:
        scores = super().adjust_score(scores, rows, music)
        if not isinstance(rows, Query) or "plain" not in self._held:
            return scores
        model = self.held("plain")
        video_features, music_features = self.held("video_features"), self.held("music_features")
        plain = model.backbone.score(
            model.video_codes(video_features[rows.video_idx].float()),
            model.music_codes(music_features[rows.column_music_idx].float()),
        )
        eta = self.video_eta[rows.video_idx][:, None]
        return eta * torch.sigmoid(scores) + (1 - eta) * torch.sigmoid(plain)


@hookimpl
def register_strategies(register: Any) -> None:
    register(DecRS)
