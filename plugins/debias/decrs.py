"""DecRS (Wang et al., KDD 2021) adapted to background-music matching. docs/methods.md.

DecRS treats the user's group distribution d_u as a confounder of the *user representation*. Its
backdoor adjustment replaces d_u by the global average d̄ and lets the confounder interact with the
user side through factorisation-machine pooling: the mediator M = FM(user features, d̄-weighted
group embeddings) enters the prediction as one more feature of the user. Here the user side is the
video (the query of its uploader): with z_u = Σ_g d[g] e_g, the pairwise FM terms give

    M = z_v ⊙ z_u + ½ [(Σ_g d_g e_g)² − Σ_g d_g² e_g²],   and the video is scored as z_v + M,

so the score gains (z_v ⊙ z_u)·z_m + c·z_m: it depends on the music, and reaches the ranking
(it is not a rank-invariant bias). ``estimate`` is the training-time d: ``global`` (DecRS's d̄;
the default), ``batch`` or ``sample``; inference always uses d̄.

Inference: the scores are mixed with those of a separately trained plain backbone (same recipe,
no strategy), per uploader, by how much their interests drift:
η_u = ((KL_u − min) / (max − min))^a, score = η_u σ(s_DecRS) + (1 − η_u) σ(s_plain), where KL_u is
the symmetric KL between the genre distributions (smoothed by ``smoothing`` = 0.01) of the two halves
of u's training history, a = 0.2. The halves follow the data's ``time`` column when it has one
(the synthetic world writes it), row order otherwise; :meth:`DecRS.report` says which. Uploaders
with fewer than two training videos show no drift (η = 0: the plain model). The plain model is part
of the trained DecRS module (saved with it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from benchkit import hookimpl
from benchkit import interfaces as bk
from benchkit.data.dataset import Dataset
from benchkit.errors import ConfigError
from benchkit.method import Method
from benchkit.nn import CONFOUNDER_ESTIMATES, ConfounderEmbedding
from benchkit_plugins.debias.backdoor import closed_form_refusal, code_dim


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


def fm_mediator(video: Tensor, d: Tensor, embedding: Tensor) -> Tensor:
    """DecRS's mediator for video codes (B, D) and genre distributions d (1 or B, G): the pairwise
    FM interactions of the video with the d-weighted genre embeddings and among the latter."""
    z_u = d @ embedding
    among = 0.5 * (z_u.pow(2) - d.pow(2) @ embedding.pow(2))
    return video * z_u + among


class DecRS(bk.Strategy):
    name = "decrs"
    description = (
        "DecRS: global-mean backdoor on the video side (FM mediator) + drift-weighted mixing "
        "with a plain model"
    )
    requires = frozenset({"genres", "uploaders"})
    params = {
        "estimate": bk.Param("global", CONFOUNDER_ESTIMATES),
        "a": bk.Param(0.2, bk.POSITIVE, bk.Space.log(0.05, 2.0)),
        "smoothing": bk.Param(0.01, bk.POSITIVE),
        "mix": bk.Param(True),
    }

    uploader_eta: Tensor

    def __init__(self, **hparams: Any) -> None:
        super().__init__(**hparams)
        self._order = "none"

    def check_backbone(self, backbone: bk.Backbone) -> str | None:
        return closed_form_refusal(self, backbone)

    def build(self, spec: bk.DataSpec, backbone: bk.Backbone) -> None:
        d = code_dim(backbone, spec)
        self.confounder = ConfounderEmbedding(spec.n_genres, d, self.hparams["estimate"])
        # η per uploader (saved: a new video of a known uploader gets theirs; unknown ones get 0).
        self.register_buffer("uploader_eta", torch.zeros(max(1, spec.n_uploaders)))
        self.hold("student", backbone, freeze=False)  # the plain model copies its recipe
        if self.hparams["mix"]:
            plain_bb = backbone.fresh()  # its structure now (so a saved DecRS loads); its
            plain_bb.build(spec)  # weights come from training in prepare
            self.hold("plain", Method(plain_bb), persistent=True)  # saved with DecRS

    def prepare(self, dataset: Dataset, ctx: bk.RunContext) -> None:
        self.confounder.prior_mean.copy_(torch.as_tensor(dataset.prior_mean))
        if not self.hparams["mix"]:
            return
        assert dataset.video_uploader is not None and dataset.music_genre is not None
        train = dataset.splits["train"]
        time = dataset.video_columns.get("time")
        if time is not None:
            train = train[np.argsort(np.asarray(time)[train], kind="stable")]
        self._order = "time" if time is not None else "row order"
        eta = drift_weights(
            np.maximum(dataset.music_genre[dataset.video_music[train]], 0),
            dataset.video_uploader[train],
            dataset.n_uploaders,
            dataset.n_genres,
            self.hparams["a"],
            self.hparams["smoothing"],
        )
        self.uploader_eta.copy_(torch.as_tensor(eta, dtype=torch.float32))
        self._eta_mean = float(eta[dataset.video_uploader[dataset.splits["train"]]].mean())
        fresh = self.held("student").fresh()
        torch.manual_seed(ctx.seed)
        plain = Method.assemble(fresh, (), dataset.spec(), ctx.device)
        ctx.log("DecRS: training the plain model it mixes with")
        ctx.train(plain, dataset, desc="decrs plain")
        self.held("plain").load_state_dict(plain.state_dict())

    def adjust_video(self, video: bk.Latent, rows: bk.Batch | None) -> bk.Latent:
        training = self.training and rows is not None
        d = self.confounder.distribution(None if rows is None else rows.prior, training)
        e = self.confounder.embedding.weight
        return video.map(lambda z: z + fm_mediator(z, d, e))

    def adjust_score(self, scores: Tensor, rows: bk.Batch | bk.Query, music: Tensor) -> Tensor:
        if not isinstance(rows, bk.Query) or "plain" not in self._held:
            return scores
        if rows.video_features is None or rows.music_features is None:
            raise ConfigError("decrs mixes with its plain model: the query must carry features")
        model = self.held("plain")
        plain = model.backbone.score(
            model.video_codes(rows.video_features.float()),
            model.music_codes(rows.music_features.float()),
        )
        eta = torch.zeros(scores.shape[0], 1, device=scores.device)
        if rows.uploader_idx is not None:
            known = (rows.uploader_idx >= 0) & (rows.uploader_idx < self.uploader_eta.numel())
            eta[known, 0] = self.uploader_eta[rows.uploader_idx[known]]
        return eta * torch.sigmoid(scores) + (1 - eta) * torch.sigmoid(plain)

    def report(self) -> dict[str, Any]:
        if not self.hparams["mix"]:
            return {"mix": False}
        return {"drift_order": self._order, "eta_mean": getattr(self, "_eta_mean", None)}


@hookimpl
def register_strategies(register: Any) -> None:
    register(DecRS)
