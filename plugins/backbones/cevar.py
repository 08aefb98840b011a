"""CEVAR (Surís et al., ECCV-W 2018, "Cross-modal embeddings for video and audio retrieval").
docs/methods.md.

Two MLP branches — music FC 450 → 250 → E, video FC 2000 → 700 → E, a ReLU after every layer —
whose outputs are L2-normalised; the score is their cosine. Each pair becomes a negative with
probability ``p_neg`` by swapping in another pair's music (a swap onto the same music stays a
positive). Per pair: ℓ = (1 − n)(1 − cos) + n·[cos − μ]_+ / (1 − μ).

The optional shared genre classifier (λ·√CE, on both embeddings) is off by default, as in the
paper's comparison ("dismissed for applicable comparisons"); with ``label_weight > 0`` it needs
music genres. Adapted to precomputed features: the original's YouTube-8M inputs are replaced by the
dataset's features, and E = 128 to match the other backbones. Loss granularity: ``anchor`` (one
pointwise term per pair, so IPS weights it directly; DU has no cells to weight).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchkit import hookimpl
from benchkit import interfaces as bk
from benchkit.nn import UnitCodes, mlp


class CEVAR(UnitCodes, bk.Backbone):
    name = "cevar"
    description = "CEVAR (Surís et al. 2018): two MLPs, cosine loss with swapped negatives"
    loss_granularity = "anchor"
    params = {
        **bk.tower_params(128, music_hidden=(450, 250), video_hidden=(2000, 700)),
        "mu": bk.Param(0.2, bk.PROBABILITY, bk.Space.uniform(0.0, 0.6)),
        "p_neg": bk.Param(0.6, bk.UNIT, bk.Space.uniform(0.3, 0.8)),
        "label_weight": bk.Param(0.0, bk.NON_NEGATIVE),
        **bk.training_params(1e-3, 0.0, 1024, 50, search=bk.LR_SEARCH),
    }

    def requirements(self) -> frozenset[str]:
        return frozenset({"genres"}) if self.hparams["label_weight"] > 0 else frozenset()

    def build(self, spec: bk.DataSpec) -> None:
        hp, e = self.hparams, self.hparams["embed_dim"]
        self.spec = spec
        self.music_net = mlp([spec.music_dim, *hp["music_hidden"], e], last_activation=True)
        self.video_net = mlp([spec.video_dim, *hp["video_hidden"], e], last_activation=True)
        if hp["label_weight"] > 0:
            self.classifier = nn.Linear(e, spec.n_genres)

    def loss_terms(self, batch: bk.Batch, out: bk.Output) -> dict[str, bk.LossTerm]:
        hp = self.hparams
        b = batch.size
        rows = torch.arange(b, device=batch.video.device)
        swap = torch.rand(b, device=rows.device) < hp["p_neg"]
        partner = (rows + torch.randint(1, b, (b,), device=rows.device)) % b
        cols = torch.where(swap, partner, rows)
        negative = (swap & (batch.music_idx[cols] != batch.music_idx)).to(out.scores.dtype)
        cos = out.scores.gather(1, cols[:, None]).squeeze(1)
        mu = hp["mu"]
        loss = (1 - negative) * (1 - cos) + negative * (cos - mu).clamp_min(0) / (1 - mu)
        terms = {"match": bk.LossTerm(loss)}
        if hp["label_weight"] > 0:
            assert batch.genre is not None
            logits = torch.cat([self.classifier(out.video.code), self.classifier(out.music.code)])
            ce = F.cross_entropy(logits, batch.genre.repeat(2))
            terms["label"] = bk.LossTerm(ce.sqrt(), kind="scalar", coef=hp["label_weight"])
        return terms


@hookimpl
def register_backbones(register: Any) -> None:
    register(CEVAR)
