"""The two kinds of method: a backbone (encoders, score, loss terms) and a debias strategy (hooks).

A backbone says what its loss is made of *before* reduction, so that a strategy can re-weight
anchors (IPS) or cells (DU), move the music code (deconfounders), add terms (distillation) or
re-rank at evaluation (Calibration) without the training loop knowing which method it runs.
"""

from __future__ import annotations

import copy
from abc import ABCMeta, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from benchkit.contracts.params import AT_LEAST_ONE, AT_LEAST_TWO, Configurable, Param
from benchkit.contracts.returns import HOOK_POINTS, check_returns
from benchkit.contracts.run import RunContext
from benchkit.contracts.values import (
    Batch,
    Dataset,
    DataSpec,
    Latent,
    LossTerm,
    Output,
    Query,
    Weights,
)

__all__ = ["SCORING_HOOKS", "TRAINING_HOOKS", "Backbone", "Scorer", "StackAlias", "Strategy"]


class Backbone(nn.Module, Configurable, metaclass=ABCMeta):
    """A cross-modal matching model: two encoders into one space, a score, and its loss terms.

    Subclasses set ``name``, ``description``, ``defaults`` (the card's hyperparameters, including the
    optimisation ones: ``lr``, ``weight_decay``, ``batch_size``, ``epochs``) and
    ``loss_granularity`` — the finest granularity of their matching terms: ``"anchor"`` (per pair;
    IPS can weight it) or ``"cell"`` (per in-batch cell; DU can weight it too).

    ``score_on_sample``: the in-batch scores use the sampled codes (``True``, VAE-style) or the means.
    ``closed_form``: the model is fitted by :meth:`fit_closed_form` instead of gradient steps
    (then ``loss_granularity`` is ``"none"`` and training-time strategies are refused).
    ``requires``: what the data must hold (e.g. ``genres`` for label-space losses).
    """

    loss_granularity: ClassVar[str] = "anchor"
    variational: ClassVar[bool] = False
    score_on_sample: ClassVar[bool] = True
    closed_form: ClassVar[bool] = False
    requires: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, **hparams: Any) -> None:
        nn.Module.__init__(self)
        self._set_hparams(hparams)
        self.spec: DataSpec | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        check_returns(cls, "backbone")

    def build(self, spec: DataSpec) -> None:
        """Create the layers for data of this shape. Called once before training (and when a
        saved model is loaded).

        Example::

            def build(self, spec):
                self.video = torch.nn.Linear(spec.video_dim, 32)
                self.music = torch.nn.Linear(spec.music_dim, 32)
                self.music_bias = torch.nn.Parameter(torch.zeros(spec.n_music))
        """
        raise NotImplementedError

    @abstractmethod
    def encode_video(self, x: Tensor) -> Latent:
        """Encode (n, video dim) preprocessed video features into their codes.

        Example::

            def encode_video(self, x):
                return Latent(torch.nn.functional.normalize(self.video(x), dim=1))
        """

    @abstractmethod
    def encode_music(self, x: Tensor) -> Latent:
        """Encode (n, music dim) preprocessed music features into their codes.

        Example::

            def encode_music(self, x):
                return Latent(torch.nn.functional.normalize(self.music(x), dim=1))
        """

    def sample(self, latent: Latent) -> Latent:
        """The code used in the loss: a reparametrised sample in training, the mean otherwise."""
        if latent.logvar is None or not self.training:
            return Latent(latent.mu, latent.logvar, latent.mu)
        eps = torch.randn_like(latent.mu)
        return Latent(latent.mu, latent.logvar, latent.mu + eps * torch.exp(0.5 * latent.logvar))

    def score(self, video: Tensor, music: Tensor) -> Tensor:
        """(Nv, Nm) matching scores between (Nv, D) video codes and (Nm, D) music codes (the dot
        product unless overridden), in training and at inference.

        Example::

            def score(self, video, music):
                return video @ music.T / 0.1  # cosine similarity at temperature 0.1
        """
        return video @ music.T

    def score_rows(self, video: Tensor, music: Tensor, rows: Query) -> Tensor:
        """Scores at inference, where the rows' video ids and the columns' music ids are known
        (``rows``). Defaults to :meth:`score`; a backbone that scores by identity rather than by
        content (an oracle, a popularity model) overrides this.

        Example::

            def score_rows(self, video, music, rows):
                # a learned per-music bias, looked up by the columns' music ids
                return self.score(video, music) + self.music_bias[rows.column_music_idx]
        """
        return self.score(video, music)

    @abstractmethod
    def loss_terms(self, batch: Batch, out: Output) -> dict[str, LossTerm]:
        """The unreduced loss terms of this batch, by name: per anchor or per cell, so that the
        strategies' weights can reach them.

        Example::

            def loss_terms(self, batch, out):
                s = out.scores  # (B, B): video i against music j
                hardest = s.masked_fill(batch.same_music, float("-inf")).max(dim=1).values
                return {"hinge": LossTerm((0.2 - s.diagonal() + hardest).clamp_min(0))}
        """

    def requirements(self) -> frozenset[str]:
        """What the data must hold for these hyperparameters (``requires`` unless overridden)."""
        return self.requires

    def fit_closed_form(self, pairs: Any) -> None:
        """Fit from all training pairs at once (``closed_form`` backbones only)."""
        raise NotImplementedError(f"{type(self).__name__} is trained by gradient steps")

    def configure_optimizer(self, params: Any) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            params,
            lr=self.hparams["lr"],
            weight_decay=self.hparams.get("weight_decay", 0.0),
            fused=True,  # one kernel for all parameters, on the CPU as on a GPU
        )

    def fresh(self) -> Backbone:
        """An unbuilt copy with the same hyperparameters (for teachers and plain companions)."""
        return type(self)(**copy.deepcopy(self.hparams))


class Scorer(Backbone):
    """A backbone that scores by identity, not by learned codes (chance, popularity, an oracle):
    fitted in closed form, no loss terms, one-dimensional zero codes. A subclass overrides
    :meth:`score_rows` (and :meth:`fit_closed_form` where it reads the training data)."""

    loss_granularity: ClassVar[str] = "none"
    closed_form: ClassVar[bool] = True
    params: ClassVar[dict[str, Param]] = {
        "batch_size": Param(1024, AT_LEAST_TWO),
        "epochs": Param(1, AT_LEAST_ONE),
    }

    def build(self, spec: DataSpec) -> None:
        self.spec = spec

    def encode_video(self, x: Tensor) -> Latent:
        return Latent(torch.zeros(x.shape[0], 1, device=x.device))

    def encode_music(self, x: Tensor) -> Latent:
        return Latent(torch.zeros(x.shape[0], 1, device=x.device))

    def fit_closed_form(self, pairs: Any) -> None:
        """Nothing to fit."""

    def loss_terms(self, batch: Batch, out: Output) -> dict[str, LossTerm]:
        return {}


class Strategy(nn.Module, Configurable):
    """A debias method: implements any of the hook points below; the defaults do nothing.

    ``requires`` names what the dataset must hold (``genres``, ``uploaders``, ``pgc``, ``truth``);
    ``requires_cells`` says the backbone must expose cell-level terms; :meth:`check_backbone` can
    refuse a backbone for any other reason. All are checked before training, so a run that cannot
    work fails with one line instead of a traceback. Parameters a strategy creates in ``build`` are
    trained jointly with the backbone; frozen modules (teachers) must set ``requires_grad=False``.
    """

    requires: ClassVar[frozenset[str]] = frozenset()
    requires_cells: ClassVar[bool] = False
    # A strategy that changes nothing — the same loss, gradients and scores as ``none`` — fails
    # ``benchkit.testing.check_strategy`` unless it says here, in one line, why that is on purpose.
    no_op_reason: ClassVar[str] = ""
    # The dataset a run hands over is shared with other runs and read-only; a strategy that must
    # write into it declares so and gets a private copy (at the memory cost of one).
    writes_dataset: ClassVar[bool] = False

    def __init__(self, **hparams: Any) -> None:
        nn.Module.__init__(self)
        self._set_hparams(hparams)
        self._held: dict[str, Any] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        check_returns(cls, "strategy")

    # -- companions ------------------------------------------------------------------------------

    def hold(self, name: str, value: Any, *, freeze: bool = True, persistent: bool = False) -> None:
        """Keep a companion this strategy uses but does not train: a PGC teacher, DecRS's plain
        model, feature tensors, or (``freeze=False``) a reference to the student's backbone.

        A module held with ``freeze=True`` gets ``requires_grad=False`` and stays in eval mode
        (its BatchNorm statistics never move). ``persistent=True`` registers it as a submodule,
        so it is saved with the method (a model needed at inference); otherwise it is neither a
        parameter nor in the state dict (a teacher, cached apart). Held modules and tensors move
        with the strategy (``.to(device)``). Read it back with :meth:`held`.
        """
        if freeze and isinstance(value, nn.Module):
            for p in value.parameters():
                p.requires_grad_(False)
            value.eval()
        if persistent:
            if not isinstance(value, nn.Module):
                raise TypeError(f"only modules can be held persistently, not {type(value)}")
            self.add_module(name, value)
        self._held[name] = (value, freeze)

    def held(self, name: str) -> Any:
        """A companion kept by :meth:`hold`."""
        return self._held[name][0]

    def train(self, mode: bool = True) -> Strategy:
        super().train(mode)
        for value, freeze in self._held.values():
            if freeze and isinstance(value, nn.Module):
                value.eval()
        return self

    def _apply(self, fn: Any, recurse: bool = True) -> Strategy:
        super()._apply(fn, recurse)
        for name, (value, freeze) in list(self._held.items()):
            if isinstance(value, Tensor):
                self._held[name] = (fn(value), freeze)
            elif isinstance(value, nn.Module) and name not in self._modules and freeze:
                value._apply(fn)
        return self

    def requirements(self) -> frozenset[str]:
        """What the data must hold for these hyperparameters (``requires`` unless overridden)."""
        return self.requires

    def check_backbone(self, backbone: Backbone) -> str | None:
        """Why this strategy cannot work with ``backbone`` (``None`` when it can): checked before
        training, so a run that cannot work fails in one line.

        Example::

            def check_backbone(self, backbone):
                return None if backbone.variational else "needs a Gaussian encoder"
        """
        return None

    def build(self, spec: DataSpec, backbone: Backbone) -> None:
        """Create parameters (e.g. genre embeddings) once the data and backbone are known; they
        train jointly with the backbone.

        Example::

            def build(self, spec, backbone):
                self.genre_bias = torch.nn.Parameter(torch.zeros(max(1, spec.n_genres)))
        """

    def prepare(self, dataset: Dataset, ctx: RunContext) -> None:
        """Before training: compute statistics from the training split, train a companion with
        ``ctx.train``, fetch the PGC teacher, ...

        Example::

            def prepare(self, dataset, ctx):
                pop = torch.as_tensor(dataset.train_popularity, dtype=torch.float32)
                self.register_buffer("log_pop", torch.log1p(pop).to(ctx.device), persistent=False)
        """

    def weights(self, batch: Batch) -> Weights | None:
        """Per-anchor / per-cell loss weights for this batch (IPS, DU); ``None``: no weights.

        Example::

            def weights(self, batch):
                taste = batch.prior.gather(1, batch.genre.clamp_min(0)[:, None]).squeeze(1)
                return Weights(anchor=1 / taste.clamp_min(0.05))  # IPS by the uploader's taste
        """
        return None

    def adjust_music(self, music: Latent, rows: Batch | None) -> Latent:
        """Move the music codes (deconfounders): in training ``rows`` is the batch, at inference
        ``None`` (the codes of the whole pool).

        Example::

            def adjust_music(self, music, rows):
                return music.map(lambda z: z - 0.1 * z.mean(dim=0, keepdim=True))
        """
        return music

    def adjust_video(self, video: Latent, rows: Batch | None) -> Latent:
        """Move the video (query) codes — a deconfounder on the uploader's side, such as DecRS's.
        ``rows`` is ``None`` at inference.

        Example::

            def adjust_video(self, video, rows):
                return video.map(lambda z: torch.nn.functional.normalize(z, dim=1))
        """
        return video

    def adjust_score(self, scores: Tensor, rows: Batch | Query, music: Tensor) -> Tensor:
        """Change the (rows × columns) score matrix, in training (``rows`` is the batch) and at
        inference (a :class:`Query`); ``music`` holds the columns' (D-dimensional) music codes.

        Example::

            def adjust_score(self, scores, rows, music):
                return scores - 0.05 * music.norm(dim=1)[None, :]
        """
        return scores

    def extra_loss(self, batch: Batch, out: Output) -> dict[str, LossTerm]:
        """Additional loss terms (distillation, regularisers), by name; added to the backbone's.

        Example::

            def extra_loss(self, batch, out):
                return {"norm": LossTerm(out.video.mu.pow(2).sum(dim=1), coef=1e-3)}
        """
        return {}

    def rerank(self, scores: Tensor, items: Tensor, rows: Query) -> Tensor:
        """Re-score each row's (rows, candidates) best candidates at evaluation and in
        recommendation (Calibration); ``items`` are their music ids, ``rows`` the query.

        Example::

            def rerank(self, scores, items, rows):
                genre = rows.music_genre[items] if rows.music_genre is not None else items * 0
                return scores - 0.01 * (genre == 0).float()  # a little less of genre 0
        """
        return scores

    def report(self) -> dict[str, Any]:
        """Figures this strategy reports about itself after training (a teacher's scores, which
        history order it used, ...); they land in the run's record under ``training.strategies``.

        Example::

            def report(self):
                return {"genre_bias_norm": float(self.genre_bias.detach().norm())}
        """
        return {}

    @classmethod
    def hook_points(cls) -> frozenset[str]:
        """The hook points this strategy overrides (what it changes, and when)."""
        return frozenset(h for h in HOOK_POINTS if getattr(cls, h) is not getattr(Strategy, h))


TRAINING_HOOKS = frozenset(
    {"weights", "adjust_music", "adjust_video", "adjust_score", "extra_loss"}
)
SCORING_HOOKS = frozenset({"adjust_music", "adjust_video", "adjust_score"})


@dataclass(frozen=True)
class StackAlias:
    """A named stack of strategies, declared by the plugin that owns it (e.g. ``debcm``).

    A member written ``name?`` is optional: it is dropped, not refused, when the data lacks what it
    needs (DebCM's distillation applies only when PGC data is present).
    """

    name: str
    members: tuple[str, ...]
    description: str = ""
