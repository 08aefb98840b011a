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
from benchkit.interfaces import (
    AT_LEAST_ONE,
    NON_NEGATIVE,
    PROBABILITY,
    TRAINING_RANGES,
    Backbone,
    Batch,
    DataSpec,
    Latent,
    LossTerm,
    Output,
    Space,
)
from benchkit.nn import hinge_pair, mlp


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


class CMVBR(Backbone):
    name = "cmvbr"
    description = "CMVBR/CBVMR (Hong et al. 2018): triplet loss + soft intra-modal structure loss"
    loss_granularity = "cell"
    defaults = {
        "embed_dim": 128,
        "music_hidden": (2048, 1024),
        "video_hidden": (2048,),
        "dropout": 0.1,
        "margin": 0.1,
        "hard_negatives": 100,
        "music_anchor_weight": 3.0,
        "video_anchor_weight": 1.0,
        "structure_weight": 0.2,
        "lr": 3e-4,
        "weight_decay": 0.0,
        "batch_size": 1024,
        "epochs": 50,
    }
    ranges = {
        **TRAINING_RANGES,
        "embed_dim": AT_LEAST_ONE,
        "music_hidden": AT_LEAST_ONE,
        "video_hidden": AT_LEAST_ONE,
        "dropout": PROBABILITY,
        "margin": NON_NEGATIVE,
        "hard_negatives": AT_LEAST_ONE,
        "music_anchor_weight": NON_NEGATIVE,
        "video_anchor_weight": NON_NEGATIVE,
        "structure_weight": NON_NEGATIVE,
    }
    search_space = {
        "lr": Space.log(1e-4, 1e-2),
        "dropout": Space.uniform(0.0, 0.5),
        "margin": Space.uniform(0.01, 0.3),
        "structure_weight": Space.uniform(0.0, 1.0),
    }

    def build(self, spec: DataSpec) -> None:
        hp, d = self.hparams, self.hparams["embed_dim"]
        self.spec = spec
        p = hp["dropout"]
        self.music_net = nn.Sequential(
            mlp([spec.music_dim, *hp["music_hidden"], d], dropout=p), nn.BatchNorm1d(d)
        )
        self.video_net = nn.Sequential(
            mlp([spec.video_dim, *hp["video_hidden"], d], dropout=p), nn.BatchNorm1d(d)
        )

    def encode_video(self, x: Tensor) -> Latent:
        return Latent(F.normalize(self.video_net(x), dim=1))

    def encode_music(self, x: Tensor) -> Latent:
        return Latent(F.normalize(self.music_net(x), dim=1))

    def loss_terms(self, batch: Batch, out: Output) -> dict[str, LossTerm]:
        hp = self.hparams
        s, same = out.scores, batch.same_music
        video_anchor, music_anchor = hinge_pair(s, same, hp["margin"], hp["hard_negatives"])
        w = hp["structure_weight"]
        return {
            "triplet_music": music_anchor.scaled(hp["music_anchor_weight"]),
            "triplet_video": video_anchor.scaled(hp["video_anchor_weight"]),
            "structure_music": LossTerm(structure_loss(batch.music, out.music.code), coef=w),
            "structure_video": LossTerm(structure_loss(batch.video, out.video.code), coef=w),
        }


@hookimpl
def register_backbones(register: Any) -> None:
    register(CMVBR)
