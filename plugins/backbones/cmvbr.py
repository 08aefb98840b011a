"""CMVBR = CBVMR (Hong, Im & Yang, ICMR 2018, "Content-based video–music retrieval using soft
intra-modal structure constraint"). docs/methods.md.

Music: FC 2048 → ReLU/dropout → FC 1024 → ReLU/dropout → FC D → BN → L2; video: FC 2048 →
ReLU/dropout → FC D → BN → L2 (D replaces the original 512 to match the other backbones).
Distance d = −cos.

- Cross-modal triplet on the K hardest in-batch negatives:
  L_xy = mean [δ + d(x_i, y_i) − d(x_i, y_k)]_+ with x = music anchors (as in the VM-NET code,
  where X is the music network), L_yx the same with video anchors; other copies of the anchor's
  music are not negatives (the release masks positives with its affinity matrix).
- Soft intra-modal structure: for each anchor a and neighbouring batch columns j, j+1,
  c = sgn(d_in(a,j) − d_in(a,j+1)) − sgn(d_emb(a,j) − d_emb(a,j+1)) with d_in = −cos of the raw
  features, and L_s = mean c·(d_emb(a,j+1) − d_emb(a,j)): non-zero only where the embedding order
  disagrees with the input order.
- L = 3 L_xy + 1 L_yx + 0.2 L_s(music) + 0.2 L_s(video); δ = 0.1, K = 100 (capped at B − 1),
  Adam lr 3e-4, keep-probability 0.9. The release's adversarial modality classifier is not part of
  the card and is left out.

Loss granularity: ``cell`` (triplet cells); the structure terms are per anchor.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchkit import hookimpl
from benchkit import interfaces as bk
from benchkit.nn import UnitCodes, hinge_pair, mlp


def structure_loss(raw: Tensor, emb: Tensor) -> Tensor:
    """Per-anchor soft structure loss between raw-feature and embedding distance orders."""
    with torch.no_grad():
        raw_n = F.normalize(raw, dim=1)
        d_in = -(raw_n @ raw_n.T)
        order_in = torch.sign(d_in[:, :-1] - d_in[:, 1:])
    d_emb = -(emb @ emb.T)
    step = d_emb[:, 1:] - d_emb[:, :-1]
    coeff = order_in - torch.sign(-step.detach())
    return (coeff * step).mean(dim=1)


class CMVBR(UnitCodes, bk.Backbone):
    name = "cmvbr"
    description = "CMVBR/CBVMR (Hong et al. 2018): triplet loss + soft intra-modal structure loss"
    loss_granularity = "cell"
    params = {
        **bk.tower_params(128, music_hidden=(2048, 1024), video_hidden=(2048,)),
        "dropout": bk.Param(0.1, bk.PROBABILITY, bk.Space.uniform(0.0, 0.5)),
        "margin": bk.Param(0.1, bk.NON_NEGATIVE, bk.Space.uniform(0.01, 0.3)),
        "hard_negatives": bk.Param(100, bk.AT_LEAST_ONE),
        "music_anchor_weight": bk.Param(3.0, bk.NON_NEGATIVE),
        "video_anchor_weight": bk.Param(1.0, bk.NON_NEGATIVE),
        "structure_weight": bk.Param(0.2, bk.NON_NEGATIVE, bk.Space.uniform(0.0, 1.0)),
        **bk.training_params(3e-4, 0.0, 1024, 50, search=bk.LR_SEARCH),
    }

    def build(self, spec: bk.DataSpec) -> None:
        hp, d = self.hparams, self.hparams["embed_dim"]
        self.spec = spec
        p = hp["dropout"]
        self.music_net = nn.Sequential(
            mlp([spec.music_dim, *hp["music_hidden"], d], dropout=p), nn.BatchNorm1d(d)
        )
        self.video_net = nn.Sequential(
            mlp([spec.video_dim, *hp["video_hidden"], d], dropout=p), nn.BatchNorm1d(d)
        )

    def loss_terms(self, batch: bk.Batch, out: bk.Output) -> dict[str, bk.LossTerm]:
        hp = self.hparams
        s, same = out.scores, batch.same_music
        video_anchor, music_anchor = hinge_pair(s, same, hp["margin"], hp["hard_negatives"])
        w = hp["structure_weight"]
        return {
            "triplet_music": music_anchor.scaled(hp["music_anchor_weight"]),
            "triplet_video": video_anchor.scaled(hp["video_anchor_weight"]),
            "structure_music": bk.LossTerm(structure_loss(batch.music, out.music.code), coef=w),
            "structure_video": bk.LossTerm(structure_loss(batch.video, out.video.code), coef=w),
        }


@hookimpl
def register_backbones(register: Any) -> None:
    register(CMVBR)
