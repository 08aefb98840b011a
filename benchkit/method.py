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

from benchkit.contracts.methods import Backbone, Strategy
from benchkit.contracts.values import Batch, DataSpec, Latent, LossTerm, Output, Query, Weights
from benchkit.faults import broke
from benchkit.hookspecs import hookimpl


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


# -- what plugins hand back, checked where it enters: a wrong shape is one line naming the plugin,
# never a broadcast that silently computes something else, nor a traceback deep in the harness.


def _shape(x: Any) -> str:
    return f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else f"a {type(x).__name__}"


def latent(owner: Any, hook: str, value: Any, rows: int) -> Latent:
    """``value`` if it is a :class:`Latent` whose codes have one row per input row."""
    mu = getattr(value, "mu", None)
    if not isinstance(value, Latent) or not isinstance(mu, Tensor):
        raise broke(owner, hook, f"returned {_shape(value)}, not a benchkit.interfaces.Latent")
    for part in (value.mu, value.logvar, value.z):
        if part is not None and (part.dim() != 2 or part.shape[0] != rows):
            raise broke(
                owner, hook, f"returned codes of {_shape(part)}; expected ({rows}, latent dim)"
            )
    return value


def scores_of(owner: Any, hook: str, value: Any, shape: tuple[int, ...]) -> Tensor:
    """``value`` if it is a score matrix of ``shape`` (rows × columns)."""
    if not isinstance(value, Tensor) or tuple(value.shape) != tuple(shape):
        raise broke(owner, hook, f"returned scores of {_shape(value)}; expected {tuple(shape)}")
    return value


def weights_of(owner: Any, value: Any, rows: int) -> Weights | None:
    """``value`` if it is ``None`` or :class:`Weights` of (B,) anchors and (B, B) cells."""
    if value is None:
        return None
    if not isinstance(value, Weights):
        raise broke(owner, "weights", f"returned {_shape(value)}, not benchkit.interfaces.Weights")
    for part, shape in ((value.anchor, (rows,)), (value.cell, (rows, rows))):
        if part is not None and (not isinstance(part, Tensor) or tuple(part.shape) != shape):
            raise broke(owner, "weights", f"returned weights of {_shape(part)}; expected {shape}")
    return value


def loss_terms(owner: Any, hook: str, value: Any, rows: int) -> dict[str, LossTerm]:
    """``value`` if it maps names to :class:`LossTerm` s of the shapes their kinds promise."""
    if not isinstance(value, dict):
        raise broke(owner, hook, f"returned {_shape(value)}, not a dict of LossTerm")
    for key, term in value.items():
        if not isinstance(term, LossTerm) or not isinstance(term.value, Tensor):
            raise broke(owner, hook, f"term {key!r} is {_shape(term)}, not a LossTerm")
        v = term.value
        if term.kind == "scalar":
            ok, want = v.dim() == 0, "a 0-d tensor"
        elif term.kind == "anchor":
            ok, want = tuple(v.shape) == (rows,), f"({rows},): one value per pair"
        else:
            width = rows if term.cols is None else v.shape[-1]
            ok = v.dim() == 2 and tuple(v.shape) == (rows, width)
            ok = ok and all(
                m is None or (isinstance(m, Tensor) and m.shape == v.shape)
                for m in (term.cols, term.valid)
            )
            want = f"({rows}, {'columns' if term.cols is not None else rows}), with cols and valid alike"
        if not ok:
            raise broke(owner, hook, f"{term.kind} term {key!r} has {_shape(v)}; expected {want}")
    return value


class Method(nn.Module):
    """Backbone and strategies composed; the training loop and the evaluation see only this."""

    def __init__(self, backbone: Backbone, strategies: list[Strategy] | tuple[Strategy, ...] = ()):
        super().__init__()
        self.backbone = backbone
        self.strategies = nn.ModuleList(strategies)

    @classmethod
    def assemble(
        cls,
        backbone: Backbone,
        strategies: list[Strategy] | tuple[Strategy, ...] = (),
        spec: DataSpec | None = None,
        device: torch.device | str | None = None,
    ) -> Method:
        """Build ``backbone``'s layers, then each strategy's, for data of shape ``spec``, and
        compose them (on ``device``, where given): the one way a method is made (a run, a PGC teacher, a saved
        model, DecRS's plain model, the conformance kit)."""
        if spec is not None:
            backbone.build(spec)
            for s in strategies:
                s.build(spec, backbone)
        method = cls(backbone, strategies)
        return method if device is None else method.to(device)

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
        n = batch.size
        video = bb.sample(latent(bb, "encode_video", bb.encode_video(batch.video), n))
        music = bb.sample(latent(bb, "encode_music", bb.encode_music(batch.music), n))
        video_scored, music_scored = video, music
        for s in self.strategy_list:
            video_scored = latent(s, "adjust_video", s.adjust_video(video_scored, batch), n)
            music_scored = latent(s, "adjust_music", s.adjust_music(music_scored, batch), n)
        out = Output(
            video=video,
            music=music,
            video_scored=video_scored,
            music_scored=music_scored,
            score_fn=lambda on_means: self._batch_scores(
                batch, video_scored, music_scored, on_means
            ),
        )
        terms = dict(loss_terms(bb, "loss_terms", bb.loss_terms(batch, out), n))
        for s in self.strategy_list:
            for key, term in loss_terms(s, "extra_loss", s.extra_loss(batch, out), n).items():
                terms[f"{s.name}.{key}"] = term
        return out, terms

    def _batch_scores(self, batch: Batch, video: Latent, music: Latent, on_means: bool) -> Tensor:
        """(B, B) in-batch scores on the sampled codes (or the means), strategies' terms added."""
        bb = self.backbone
        sampled = bb.score_on_sample and not on_means
        v, m = (video.code, music.code) if sampled else (video.mu, music.mu)
        shape = (v.shape[0], m.shape[0])
        scores = scores_of(bb, "score", bb.score(v, m), shape)
        for s in self.strategy_list:
            scores = scores_of(s, "adjust_score", s.adjust_score(scores, batch, m), shape)
        return scores

    def weights(self, batch: Batch) -> Weights | None:
        combined: Weights | None = None
        for s in self.strategy_list:
            w = weights_of(s, s.weights(batch), batch.size)
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

    def music_codes(self, features: Tensor) -> Tensor:
        """The codes music are ranked by (encoder means, moved by the deconfounders)."""
        return self._codes("music", features)

    def video_codes(self, features: Tensor) -> Tensor:
        """The codes videos are ranked with (encoder means, moved by the deconfounders)."""
        return self._codes("video", features)

    @torch.no_grad()
    def _codes(self, modality: str, features: Tensor) -> Tensor:
        n, bb = features.shape[0], self.backbone
        encode, adjust = f"encode_{modality}", f"adjust_{modality}"
        code = latent(bb, encode, getattr(bb, encode)(features), n)
        for s in self.strategy_list:
            code = latent(s, adjust, getattr(s, adjust)(code, None), n)
        return code.mu

    @torch.no_grad()
    def score(self, video_codes: Tensor, music_codes: Tensor, query: Query) -> Tensor:
        shape = (video_codes.shape[0], music_codes.shape[0])
        bb = self.backbone
        scores = scores_of(bb, "score_rows", bb.score_rows(video_codes, music_codes, query), shape)
        for s in self.strategy_list:
            scores = scores_of(s, "adjust_score", s.adjust_score(scores, query, music_codes), shape)
        return scores

    @torch.no_grad()
    def rerank(self, scores: Tensor, items: Tensor, query: Query) -> Tensor:
        shape = tuple(scores.shape)
        for s in self.strategy_list:
            scores = scores_of(s, "rerank", s.rerank(scores, items, query), shape)
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
