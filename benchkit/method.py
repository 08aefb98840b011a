"""A method = one backbone + a stack of strategies, trained and scored as one module.

This is the only place where the strategy hook points are called, in a fixed order:
encode → sample → ``adjust_video`` / ``adjust_music`` → scores (+ ``adjust_score``) → backbone
terms + ``extra_loss`` → reduction with ``weights``. At inference: codes (``adjust_video`` /
``adjust_music`` without rows) → scores (+ ``adjust_score``) → ``rerank`` on the candidates.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from benchkit import hookimpl
from benchkit.interfaces import (
    Backbone,
    Batch,
    Latent,
    LossTerm,
    Output,
    Query,
    Strategy,
    Weights,
)


def reduce_term(term: LossTerm, weights: Weights | None) -> Tensor:
    """Reduce one term to a scalar.

    Unweighted, a term reduces its own way: an anchor term to its mean, a cell term to the mean over
    rows of the mean (``row_reduce="mean"``) or sum (``"sum"``) over each row's valid cells.
    Weights are self-normalised in the batch, each kind apart: anchor weights to mean 1 over the
    anchors (for an anchor term, Σ a_i ℓ_i / Σ a_i: SNIPS), cell weights to mean 1 over the term's
    valid cells; a cell then counts with its anchor's weight times its own. So IPS is SNIPS over
    anchors, and DU normalises its positive (anchor) and negative (cell) propensities apart.
    """
    if term.kind == "scalar":
        return term.value
    anchor = weights.anchor if weights is not None else None
    cell = weights.cell if weights is not None else None
    value = term.value
    if term.kind == "anchor":
        if anchor is None:
            return value.mean()
        return (anchor * value).sum() / anchor.sum().clamp_min(1e-12)
    valid = term.valid if term.valid is not None else torch.ones_like(value, dtype=torch.bool)
    value = value.masked_fill(~valid, 0.0)
    if anchor is not None:
        value = value * (anchor / anchor.mean().clamp_min(1e-12))[:, None]
    if cell is not None:
        oriented = cell.T if term.transposed else cell
        w = oriented if term.cols is None else oriented.gather(1, term.cols)
        w = w.masked_fill(~valid, 0.0)
        mean_w = w.sum() / valid.sum().clamp_min(1)
        value = value * w / mean_w.clamp_min(1e-12)
    rows = value.sum(dim=1)
    if term.row_reduce == "mean":
        rows = rows / valid.sum(dim=1).clamp_min(1)
    return rows.mean()


class Method(nn.Module):
    """Backbone and strategies composed; the training loop and the evaluation see only this."""

    def __init__(self, backbone: Backbone, strategies: list[Strategy] | tuple[Strategy, ...] = ()):
        super().__init__()
        self.backbone = backbone
        self.strategies = nn.ModuleList(strategies)

    @property
    def strategy_list(self) -> list[Strategy]:
        """The strategies, in stack order."""
        return list(self.strategies)  # type: ignore[arg-type]

    # -- identity ------------------------------------------------------------------------------

    @property
    def hparams(self) -> dict[str, Any]:
        return {
            "backbone": dict(self.backbone.hparams),
            "strategies": {s.name: dict(s.hparams) for s in self.strategy_list},
        }

    # -- training ------------------------------------------------------------------------------

    def forward(self, batch: Batch) -> tuple[Output, dict[str, LossTerm]]:
        bb = self.backbone
        video = bb.sample(bb.encode_video(batch.video))
        music = bb.sample(bb.encode_music(batch.music))
        video_scored, music_scored = video, music
        for s in self.strategy_list:
            video_scored = s.adjust_video(video_scored, batch)
            music_scored = s.adjust_music(music_scored, batch)
        out = Output(
            video=video,
            music=music,
            video_scored=video_scored,
            music_scored=music_scored,
            score_fn=lambda on_means: self._batch_scores(
                batch, video_scored, music_scored, on_means
            ),
        )
        terms = dict(bb.loss_terms(batch, out))
        for s in self.strategy_list:
            for key, term in s.extra_loss(batch, out).items():
                terms[f"{s.name}.{key}"] = term
        return out, terms

    def _batch_scores(self, batch: Batch, video: Latent, music: Latent, on_means: bool) -> Tensor:
        """(B, B) in-batch scores on the sampled codes (or the means), strategies' terms added."""
        bb = self.backbone
        sampled = bb.score_on_sample and not on_means
        v, m = (video.code, music.code) if sampled else (video.mu, music.mu)
        scores = bb.score(v, m)
        for s in self.strategy_list:
            scores = s.adjust_score(scores, batch, m)
        return scores

    def weights(self, batch: Batch) -> Weights | None:
        combined: Weights | None = None
        for s in self.strategy_list:
            w = s.weights(batch)
            if w is not None:
                combined = w if combined is None else combined.combine(w)
        return combined

    def loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Total loss and each term's contribution to it (coefficient included, detached)."""
        _, terms = self(batch)
        weights = self.weights(batch)
        total = torch.zeros((), device=batch.video.device)
        parts: dict[str, Tensor] = {}
        for key, term in terms.items():
            contribution = term.coef * reduce_term(term, weights)
            total = total + contribution
            parts[key] = contribution.detach()
        return total, parts

    # -- inference -----------------------------------------------------------------------------

    @torch.no_grad()
    def music_codes(self, features: Tensor) -> Tensor:
        """The codes music are ranked by (encoder means, moved by the deconfounders)."""
        latent = self.backbone.encode_music(features)
        for s in self.strategy_list:
            latent = s.adjust_music(latent, None)
        return latent.mu

    @torch.no_grad()
    def video_codes(self, features: Tensor) -> Tensor:
        """The codes videos are ranked with (encoder means, moved by the deconfounders)."""
        latent = self.backbone.encode_video(features)
        for s in self.strategy_list:
            latent = s.adjust_video(latent, None)
        return latent.mu

    @torch.no_grad()
    def score(self, video_codes: Tensor, music_codes: Tensor, query: Query) -> Tensor:
        scores = self.backbone.score_rows(video_codes, music_codes, query)
        for s in self.strategy_list:
            scores = s.adjust_score(scores, query, music_codes)
        return scores

    @torch.no_grad()
    def rerank(self, scores: Tensor, items: Tensor, query: Query) -> Tensor:
        for s in self.strategy_list:
            scores = s.rerank(scores, items, query)
        return scores


class NoDebias(Strategy):
    """``none``: the backbone trained on the observed (biased) choices as they are.

    The harness's own (every plain run and the teacher's recipe need it), so blocking plugins can
    never remove it.
    """

    name = "none"
    description = "no debiasing: the backbone alone, trained on the observed choices"
    no_op_reason = "no debiasing is the baseline every strategy is measured against"


@hookimpl
def register_strategies(register: Any) -> None:
    register(NoDebias)
