"""The plugin module named by the ``benchkit`` entry point: it defines one backbone and one
strategy and registers them through benchkit's hooks."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from benchkit import hookimpl
from benchkit import interfaces as bk
from benchkit.data import Dataset
from benchkit.nn import mlp


class InfoNCE(bk.Backbone):
    """Two MLP towers, L2-normalised codes, and a symmetric InfoNCE loss over in-batch negatives
    (other copies of a pair's own music are not negatives). One term per anchor and direction."""

    name = "infonce"
    description = "two-tower MLP with a symmetric InfoNCE (CLIP-style) loss — example plugin"
    loss_granularity = "anchor"
    params = {
        "embed_dim": bk.Param(64, bk.AT_LEAST_ONE),
        "hidden": bk.Param(256, bk.AT_LEAST_ONE),
        "temperature": bk.Param(0.1, bk.POSITIVE),
        **bk.training_params(lr=1e-3, weight_decay=0.0, batch_size=512, epochs=20),
    }

    def build(self, spec: bk.DataSpec) -> None:
        hp = self.hparams
        self.video_net = mlp([spec.video_dim, hp["hidden"], hp["embed_dim"]])
        self.music_net = mlp([spec.music_dim, hp["hidden"], hp["embed_dim"]])

    def encode_video(self, x: Tensor) -> bk.Latent:
        return bk.Latent(F.normalize(self.video_net(x), dim=1))

    def encode_music(self, x: Tensor) -> bk.Latent:
        return bk.Latent(F.normalize(self.music_net(x), dim=1))

    def loss_terms(self, batch: bk.Batch, out: bk.Output) -> dict[str, bk.LossTerm]:
        logits = out.scores / self.hparams["temperature"]
        others = batch.same_music & ~torch.eye(batch.size, dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(others, float("-inf"))
        target = torch.arange(batch.size, device=logits.device)
        return {
            "video_to_music": bk.LossTerm(F.cross_entropy(logits, target, reduction="none")),
            "music_to_video": bk.LossTerm(F.cross_entropy(logits.T, target, reduction="none")),
        }


class PopularityPenalty(bk.Strategy):
    """At inference, score − β·log(1 + n_m) with n_m the music's training popularity: popular
    music lose some of the head start that the observed choices gave them."""

    name = "popularity_penalty"
    description = "inference-time penalty of β·log(1 + training popularity) — example plugin"
    params = {
        "beta": bk.Param(0.05, bk.NON_NEGATIVE),
    }

    log_pop: Tensor

    def prepare(self, dataset: Dataset, ctx: bk.RunContext) -> None:
        pop = torch.as_tensor(dataset.train_popularity, dtype=torch.float32)
        self.register_buffer("log_pop", torch.log1p(pop).to(ctx.device), persistent=False)

    def adjust_score(self, scores: Tensor, rows: bk.Batch | bk.Query, music: Tensor) -> Tensor:
        if not isinstance(rows, bk.Query):  # training is left alone
            return scores
        return scores - self.hparams["beta"] * self.log_pop[rows.column_music_idx]


@hookimpl
def register_backbones(register: Any) -> None:
    register(InfoNCE)


@hookimpl
def register_strategies(register: Any) -> None:
    register(PopularityPenalty)
