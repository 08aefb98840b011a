"""DSCMR (Zhen et al., CVPR 2019, "Deep supervised cross-modal retrieval"). docs/methods.md.

Per modality Linear(d_in → 2048) + ReLU, then a *weight-shared* Linear(2048 → D) into the common
space and a shared linear classifier P = Linear(D → C). The score is the cosine of the common
representations u (video) and t (music). With y the one-hot genre and θ(a, b) = cos(a, b)/2:

- J1 = mean ‖P u_i − y_i‖₂ + mean ‖P t_i − y_i‖₂ (the L2 norm, not squared; P has no softmax);
- J2 = Σ over (uu, ut, tt) of mean_ij [log(1 + e^θ_ij) − S_ij θ_ij] with S = Y Yᵀ (the ut cells
  use the method's in-batch scores, so a score-adjusting strategy trains through them);
- J3 = mean ‖u_i − t_i‖₂;
- L = J1 + α J2 + β J3, α = 1e-3, β = 0.1; Adam lr 1e-4, betas (0.5, 0.999).

Adapted to this task: the label of a pair is its music's genre, used for both sides (videos carry no
label of their own). Pairs whose genre is unknown (``genre < 0``, e.g. pooled PGC clips without
genres) contribute only to J3 and to the cross-modal J2 cells of labelled pairs. Loss granularity:
``cell`` (the cross-modal J2 cells); J1, J3 and the intra-modal J2 rows are per anchor.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchkit import hookimpl
from benchkit import interfaces as bk


def _theta(a: Tensor, b: Tensor) -> Tensor:
    return 0.5 * F.normalize(a, dim=1) @ F.normalize(b, dim=1).T


def _pair_nll(theta: Tensor, same: Tensor) -> Tensor:
    """log(1 + e^θ) − S θ, elementwise (softplus keeps it stable)."""
    return F.softplus(theta) - same * theta


class DSCMR(bk.Backbone):
    name = "dscmr"
    description = "DSCMR (Zhen et al. 2019): weight-shared common space with label-space losses"
    loss_granularity = "cell"
    requires = frozenset({"genres"})
    params = {
        "embed_dim": bk.Param(128, bk.AT_LEAST_ONE),
        "hidden": bk.Param(2048, bk.AT_LEAST_ONE),
        "alpha": bk.Param(1e-3, bk.NON_NEGATIVE, bk.Space.log(1e-4, 1.0)),
        "beta": bk.Param(0.1, bk.NON_NEGATIVE, bk.Space.log(1e-2, 1.0)),
        **bk.training_params(1e-4, 0.0, 1024, 50, search={"lr": bk.Space.log(1e-5, 1e-2)}),
        "betas": bk.Param((0.5, 0.999), bk.Range(0.0, 1.0, high_open=True)),
    }

    def build(self, spec: bk.DataSpec) -> None:
        hp = self.hparams
        self.spec = spec
        self.video_in = nn.Sequential(nn.Linear(spec.video_dim, hp["hidden"]), nn.ReLU())
        self.music_in = nn.Sequential(nn.Linear(spec.music_dim, hp["hidden"]), nn.ReLU())
        self.shared = nn.Linear(hp["hidden"], hp["embed_dim"])
        self.classifier = nn.Linear(hp["embed_dim"], max(1, spec.n_genres))

    def encode_video(self, x: Tensor) -> bk.Latent:
        return bk.Latent(self.shared(self.video_in(x)))

    def encode_music(self, x: Tensor) -> bk.Latent:
        return bk.Latent(self.shared(self.music_in(x)))

    def score(self, video: Tensor, music: Tensor) -> Tensor:
        return F.normalize(video, dim=1) @ F.normalize(music, dim=1).T

    def configure_optimizer(self, params: Any) -> torch.optim.Optimizer:
        hp = self.hparams
        return torch.optim.Adam(
            params, lr=hp["lr"], betas=tuple(hp["betas"]), weight_decay=hp["weight_decay"]
        )

    def loss_terms(self, batch: bk.Batch, out: bk.Output) -> dict[str, bk.LossTerm]:
        hp = self.hparams
        assert batch.genre is not None, "DSCMR needs genres (checked before training)"
        u, t = out.video.code, out.music_scored.code
        known = batch.genre >= 0
        y = F.one_hot(batch.genre.clamp_min(0), self.classifier.out_features).to(u.dtype)
        y = y * known[:, None]
        same = (y @ y.T).clamp(max=1.0)
        label_mask = known[:, None] & known[None, :]
        j1 = (self.classifier(u) - y).norm(dim=1) + (self.classifier(t) - y).norm(dim=1)
        # The cross-modal cells are the run's own scores (cosines, plus any strategy's score
        # terms), so that a score-adjusting strategy trains through them.
        j2_ut = _pair_nll(0.5 * out.scores, same)
        rows_uu = (_pair_nll(_theta(u, u), same) * label_mask).sum(1) / label_mask.sum(1).clamp_min(
            1
        )
        rows_tt = (_pair_nll(_theta(t, t), same) * label_mask).sum(1) / label_mask.sum(1).clamp_min(
            1
        )
        alpha = hp["alpha"]
        return {
            "label": bk.LossTerm(j1 * known),
            "pair_ut": bk.LossTerm(j2_ut, kind="cell", coef=alpha, valid=label_mask),
            "pair_uu": bk.LossTerm(rows_uu, coef=alpha),
            "pair_tt": bk.LossTerm(rows_tt, coef=alpha),
            "invariance": bk.LossTerm((u - t).norm(dim=1), coef=hp["beta"]),
        }


@hookimpl
def register_backbones(register: Any) -> None:
    register(DSCMR)
