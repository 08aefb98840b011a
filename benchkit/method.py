"""A method = one backbone + a stack of strategies, trained and scored as one module.

This is the only place where the strategy hook points are called, in a fixed order:
encode → sample → ``adjust_music`` → scores (+ ``adjust_score``) → backbone terms + ``extra_loss``
→ reduction with ``weights``. At inference: music codes (``adjust_music`` without rows) → scores
(+ ``adjust_score``) → ``rerank`` on the candidates.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from benchkit.interfaces import Backbone, Batch, LossTerm, Output, Query, Strategy, Weights


def reduce_term(term: LossTerm, weights: Weights | None) -> Tensor:
    """Reduce one term to a scalar: rows are weighted means over their valid cells (cell weights),
    then rows are self-normalised by the anchor weights (SNIPS); unweighted, both are plain means."""
    if term.kind == "scalar":
        return term.value
    anchor = weights.anchor if weights is not None else None
    if term.kind == "anchor":
        rows = term.value
    else:
        value = term.value
        valid = term.valid if term.valid is not None else torch.ones_like(value, dtype=torch.bool)
        mass = valid.to(value.dtype)
        if weights is not None and weights.cell is not None:
            cell = weights.cell.T if term.transposed else weights.cell
            mass = mass * (cell if term.cols is None else cell.gather(1, term.cols))
        num = (mass * value.masked_fill(~valid, 0.0)).sum(dim=1)
        den = mass.sum(dim=1)
        rows = torch.where(den > 0, num / den.clamp_min(1e-12), torch.zeros_like(num))
    if anchor is None:
        return rows.mean()
    return (anchor * rows).sum() / anchor.sum().clamp_min(1e-12)


class Method(nn.Module):
    """Backbone and strategies composed; the training loop and the evaluation see only this."""

    def __init__(self, backbone: Backbone, strategies: list[Strategy] | tuple[Strategy, ...] = ()):
        super().__init__()
        self.backbone = backbone
        self.strategies = nn.ModuleList(strategies)

    def _strategies(self) -> list[Strategy]:
        return list(self.strategies)  # type: ignore[arg-type]

    # -- identity ------------------------------------------------------------------------------

    @property
    def identity(self) -> dict[str, Any]:
        return {"backbone": self.backbone.name, "strategies": [s.name for s in self._strategies()]}

    @property
    def hparams(self) -> dict[str, Any]:
        return {
            "backbone": dict(self.backbone.hparams),
            "strategies": {s.name: dict(s.hparams) for s in self._strategies()},
        }

    # -- training ------------------------------------------------------------------------------

    def forward(self, batch: Batch) -> tuple[Output, dict[str, LossTerm]]:
        bb = self.backbone
        video = bb.sample(bb.encode_video(batch.video))
        music = bb.sample(bb.encode_music(batch.music))
        scored = music
        for s in self._strategies():
            scored = s.adjust_music(scored, batch)
        out = Output(
            video=video,
            music=music,
            music_scored=scored,
            scorer=bb.score,
            strategies=self._strategies(),
            batch=batch,
        )
        terms = dict(bb.loss_terms(batch, out))
        for s in self._strategies():
            for key, term in s.extra_loss(batch, out).items():
                terms[f"{s.name}.{key}"] = term
        return out, terms

    def weights(self, batch: Batch) -> Weights | None:
        combined: Weights | None = None
        for s in self._strategies():
            w = s.weights(batch)
            if w is not None:
                combined = w if combined is None else combined.combine(w)
        return combined

    def loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Total loss and its reduced parts (detached), for logging."""
        _, terms = self(batch)
        weights = self.weights(batch)
        total = torch.zeros((), device=batch.video.device)
        parts: dict[str, Tensor] = {}
        for key, term in terms.items():
            reduced = reduce_term(term, weights)
            total = total + term.coef * reduced
            parts[key] = reduced.detach()
        return total, parts

    # -- inference -----------------------------------------------------------------------------

    @torch.no_grad()
    def music_codes(self, features: Tensor) -> Tensor:
        """The codes music are ranked by (encoder means, moved by the deconfounders)."""
        latent = self.backbone.encode_music(features)
        for s in self._strategies():
            latent = s.adjust_music(latent, None)
        return latent.mu

    @torch.no_grad()
    def video_codes(self, features: Tensor) -> Tensor:
        return self.backbone.encode_video(features).mu

    @torch.no_grad()
    def score(self, video_codes: Tensor, music_codes: Tensor, query: Query) -> Tensor:
        scores = self.backbone.score(video_codes, music_codes)
        for s in self._strategies():
            scores = s.adjust_score(scores, query)
        return scores

    @torch.no_grad()
    def rerank(self, scores: Tensor, items: Tensor, query: Query) -> Tensor:
        for s in self._strategies():
            scores = s.rerank(scores, items, query)
        return scores
