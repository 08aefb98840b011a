"""``cca``: linear canonical correlation analysis between video and music features, in closed form.

A floor for the deep backbones: on real micro-video features a 16-dimensional CCA is a strong
baseline. With centred training features X (videos) and Y (their music), ridge-regularised
covariances C_xx + r·tr(C_xx)/p·I and C_yy + r·tr(C_yy)/q·I, and the SVD
C_xx^{-1/2} C_xy C_yy^{-1/2} = U S Vᵀ, the codes are x ↦ (x − μ_x) C_xx^{-1/2} U_k S_k^{1/2} and
y ↦ (y − μ_y) C_yy^{-1/2} V_k S_k^{1/2}, so each canonical pair counts by its correlation. The
score is their cosine (``score="cosine"``, the usual retrieval rule in a canonical space) or their
dot product (``"dot"``, which favours music with long codes). Hyperparameters: ``dim`` (k),
``ridge`` (r), ``score``. Fitted once on all training pairs; no gradient steps, so training-time
strategies do not apply.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from benchkit import hookimpl
from benchkit import interfaces as bk


def _inv_sqrt(cov: Tensor, ridge: float) -> Tensor:
    p = cov.shape[0]
    reg = cov + ridge * torch.trace(cov) / p * torch.eye(p, dtype=cov.dtype, device=cov.device)
    vals, vecs = torch.linalg.eigh(reg)
    return (vecs * vals.clamp_min(1e-12).rsqrt()) @ vecs.T


class CCA(bk.Backbone):
    name = "cca"
    description = "linear CCA between video and music features (closed form): a strong floor"
    loss_granularity = "none"
    closed_form = True
    params = {
        "dim": bk.Param(16, bk.AT_LEAST_ONE),
        "ridge": bk.Param(1e-3, bk.NON_NEGATIVE),
        "score": bk.Param("cosine", ("cosine", "dot")),
        "batch_size": bk.Param(1024, bk.AT_LEAST_TWO),
        "epochs": bk.Param(1, bk.AT_LEAST_ONE),
    }

    video_mean: Tensor
    music_mean: Tensor
    video_proj: Tensor
    music_proj: Tensor
    correlations: Tensor

    def build(self, spec: bk.DataSpec) -> None:
        self.spec = spec
        k = min(self.hparams["dim"], spec.video_dim, spec.music_dim)
        self.register_buffer("video_mean", torch.zeros(spec.video_dim))
        self.register_buffer("music_mean", torch.zeros(spec.music_dim))
        self.register_buffer("video_proj", torch.zeros(spec.video_dim, k))
        self.register_buffer("music_proj", torch.zeros(spec.music_dim, k))
        self.register_buffer("correlations", torch.zeros(k))

    def fit_closed_form(self, pairs: Any) -> None:
        x, y = pairs.matched_features()  # every pair, pooled sources included
        n = x.shape[0]
        mx, my = x.mean(0), y.mean(0)
        x, y = x - mx, y - my
        cxx = (x.T @ x).double() / n
        cyy = (y.T @ y).double() / n
        cxy = (x.T @ y).double() / n
        wx, wy = _inv_sqrt(cxx, self.hparams["ridge"]), _inv_sqrt(cyy, self.hparams["ridge"])
        u, s, vt = torch.linalg.svd(wx @ cxy @ wy, full_matrices=False)
        k = self.video_proj.shape[1]
        scale = s[:k].sqrt()
        self.video_mean.copy_(mx)
        self.music_mean.copy_(my)
        self.video_proj.copy_((wx @ u[:, :k] * scale).float())
        self.music_proj.copy_((wy @ vt.T[:, :k] * scale).float())
        self.correlations.copy_(s[:k].float())

    def encode_video(self, x: Tensor) -> bk.Latent:
        return bk.Latent((x - self.video_mean) @ self.video_proj)

    def encode_music(self, x: Tensor) -> bk.Latent:
        return bk.Latent((x - self.music_mean) @ self.music_proj)

    def score(self, video: Tensor, music: Tensor) -> Tensor:
        if self.hparams["score"] == "cosine":
            video, music = F.normalize(video, dim=1), F.normalize(music, dim=1)
        return video @ music.T

    def loss_terms(self, batch: bk.Batch, out: bk.Output) -> dict[str, bk.LossTerm]:
        return {}


@hookimpl
def register_backbones(register: Any) -> None:
    register(CCA)
