"""The contracts between the harness and its plugins.

The harness (training loop, evaluation, CLI) only ever talks to these types; every method is a
plugin that fills them in. A backbone encodes both modalities and says what its loss is made of,
*before* reduction, so that a strategy can re-weight anchors (IPS) or cells (DU), move the music
code (deconfounders), add terms (distillation) or re-rank at evaluation (Calibration) without the
loop knowing which method it runs.

Conventions: a training batch holds B matched pairs; pair i is video i with its music i. The
in-batch score matrix is ``S[i, j] = score(video_i, music_j)`` (rows are videos).
"""

from __future__ import annotations

import copy
import math
from abc import ABC, ABCMeta, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from benchkit.errors import ConfigError

if TYPE_CHECKING:
    from benchkit.data.dataset import Dataset
    from benchkit.plugins import Plugins
    from benchkit.train import Trainer

REQUIREMENTS = frozenset({"genres", "uploaders", "pgc", "truth"})


# --------------------------------------------------------------------------------------------
# Hyperparameters


def _coerce(name: str, default: Any, value: Any, owner: str) -> Any:
    """Make an override take the type of its default (CLI values arrive as str/int/float)."""
    if default is None or value is None:
        return value
    kind = type(default)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "false", "1", "0", "yes", "no"}:
            return value.lower() in {"true", "1", "yes"}
        raise ConfigError(f"{owner}: hyperparameter {name!r} is a boolean, got {value!r}")
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{owner}: hyperparameter {name!r} must be finite, got {value!r}")
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind in (tuple, list) and isinstance(value, (tuple, list)):
        return kind(value)
    if isinstance(value, kind):
        return value
    raise ConfigError(
        f"{owner}: hyperparameter {name!r} expects {kind.__name__} (default {default!r}), "
        f"got {value!r}"
    )


@dataclass(frozen=True)
class Range:
    """The values a numeric hyperparameter may take (each element, for a tuple of numbers)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (
            self.high is not None and (value >= self.high if self.high_open else value > self.high)
        )

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '≥'} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.high_open else '≤'} {self.high:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


POSITIVE = Range(0.0, low_open=True)
NON_NEGATIVE = Range(0.0)
AT_LEAST_ONE = Range(1.0)
AT_LEAST_TWO = Range(2.0)
UNIT = Range(0.0, 1.0)
PROBABILITY = Range(0.0, 1.0, high_open=True)  # a dropout rate, say: 1 would drop everything
# What every trained backbone's optimisation hyperparameters may be.
TRAINING_RANGES: dict[str, Range | tuple[str, ...]] = {
    "lr": POSITIVE,
    "weight_decay": NON_NEGATIVE,
    "batch_size": AT_LEAST_TWO,
    "epochs": AT_LEAST_ONE,
}


@dataclass(frozen=True)
class Space:
    """Where a hyperparameter search may look for one value (``benchkit tune``): ``log`` and
    ``uniform`` floats in [low, high], ``int`` integers in [low, high], or one of ``choices``."""

    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple[Any, ...] = ()

    KINDS: ClassVar[tuple[str, ...]] = ("log", "uniform", "int", "choice")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ConfigError(
                f"a search space is one of {', '.join(self.KINDS)}, not {self.kind!r}"
            )
        if self.kind == "choice":
            if not self.choices:
                raise ConfigError("a choice space needs at least one value")
        elif not self.low < self.high or (self.kind == "log" and self.low <= 0):
            raise ConfigError(
                f"an empty or invalid range [{self.low}, {self.high}] for a {self.kind} space"
            )

    @staticmethod
    def log(low: float, high: float) -> Space:
        return Space("log", low, high)

    @staticmethod
    def uniform(low: float, high: float) -> Space:
        return Space("uniform", low, high)

    @staticmethod
    def integer(low: int, high: int) -> Space:
        return Space("int", low, high)

    @staticmethod
    def choice(*values: Any) -> Space:
        return Space("choice", choices=tuple(values))


def _out_of_range(value: Any, allowed: Range | tuple[str, ...]) -> str | None:
    """Why ``value`` is not allowed (``None`` when it is)."""
    if isinstance(allowed, tuple):
        if value not in allowed:
            return f"must be one of {', '.join(map(str, allowed))}, not {value!r}"
        return None
    values = value if isinstance(value, (tuple, list)) else (value,)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not allowed.contains(v):
            return f"must be {allowed}, got {value!r}"
    return None


class Configurable:
    """Scikit-learn hygiene: the constructor only stores validated hyperparameters.

    ``defaults`` holds every hyperparameter with the value its method card gives; overrides must
    name one of them, and take its type. ``ranges`` declares what each may be: a :class:`Range` for
    a number (or each number of a tuple), a tuple of allowed strings for a choice. Every value —
    the defaults included — is checked against it, so a bad ``--set`` fails in one line before
    anything runs (``benchkit.testing.check_hparams`` asks a plugin to declare one per default).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    defaults: ClassVar[Mapping[str, Any]] = {}
    ranges: ClassVar[Mapping[str, Range | tuple[str, ...]]] = {}
    search_space: ClassVar[Mapping[str, Space]] = {}  # what ``benchkit tune`` searches by default

    hparams: dict[str, Any]

    def _set_hparams(self, overrides: Mapping[str, Any]) -> None:
        owner = f"{type(self).__name__}({self.name!r})"
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            valid = ", ".join(sorted(self.defaults)) or "none"
            raise ConfigError(
                f"{owner}: unknown hyperparameter(s) {', '.join(unknown)}; valid: {valid}"
            )
        merged = dict(self.defaults)
        for key, value in overrides.items():
            merged[key] = _coerce(key, self.defaults[key], value, owner)
        for key, allowed in self.ranges.items():
            if key not in merged:  # a range shared by several owners (protocols, say)
                continue
            problem = _out_of_range(merged[key], allowed)
            if problem:
                raise ConfigError(f"{owner}: hyperparameter {key!r} {problem}")
        self.hparams = merged

    def get_params(self) -> dict[str, Any]:
        return dict(self.hparams)


# --------------------------------------------------------------------------------------------
# Data that flows through a model


@dataclass(frozen=True)
class DataSpec:
    """What a model must know about the data to build its layers (``build(spec)`` receives it).

    Example::

        spec = DataSpec(video_dim=2048, music_dim=256, n_genres=6, n_music=400, n_uploaders=600)
        layer = torch.nn.Linear(spec.video_dim, 64)
    """

    video_dim: int
    """Width of a video's feature row."""
    music_dim: int
    """Width of a music's feature row."""
    n_genres: int
    """Number of music genres (0 when the data has none)."""
    n_music: int
    """Number of music in the training data's pool."""
    n_uploaders: int
    """Number of uploaders (0 when the data has none)."""


@dataclass
class Latent:
    """An encoder's output: what ``encode_video`` / ``encode_music`` return and what
    ``adjust_video`` / ``adjust_music`` receive and return.

    Example::

        latent = Latent(mu=torch.randn(4, 16), logvar=torch.zeros(4, 16))
        moved = latent.map(lambda z: z - z.mean(dim=0))  # a deconfounder moving the codes
    """

    mu: Tensor
    """(n, D) the codes (a Gaussian encoder's means)."""
    logvar: Tensor | None = None
    """(n, D) log-variances of a Gaussian encoder; ``None`` for a deterministic one."""
    z: Tensor | None = None
    """(n, D) the code used in the loss: a reparametrised sample in training (the harness draws
    it), the mean otherwise; ``None`` until sampled."""

    @property
    def code(self) -> Tensor:
        return self.mu if self.z is None else self.z

    def map(self, fn: Any) -> Latent:
        """Apply ``fn`` to the mean and the sample (a deconfounder moving the music code)."""
        return Latent(mu=fn(self.mu), logvar=self.logvar, z=None if self.z is None else fn(self.z))


@dataclass
class Batch:
    """B matched training pairs, all tensors on the training device: pair i is video i with the
    music its uploader chose. ``loss_terms``, ``weights``, ``extra_loss`` and the ``adjust_*``
    hooks receive it in training. Uploader and genre fields are ``None`` when the data has none.

    Example::

        batch = Batch(
            video=torch.randn(4, 8), music=torch.randn(4, 6),
            video_idx=torch.arange(4), music_idx=torch.tensor([0, 1, 1, 2]),
        )
        batch.same_music  # (4, 4) bool: pairs 1 and 2 share their music
    """

    video: Tensor
    """(B, video dim) float32: the videos' preprocessed features."""
    music: Tensor
    """(B, music dim) float32: the chosen music's preprocessed features."""
    video_idx: Tensor
    """(B,) int64: each video's row in the dataset."""
    music_idx: Tensor
    """(B,) int64: each chosen music's row in the dataset (also the columns' music)."""
    uploader_idx: Tensor | None = None
    """(B,) int64: each video's uploader."""
    genre: Tensor | None = None
    """(B,) int64: the genre of each pair's music (−1 unknown)."""
    prior: Tensor | None = None
    """(B, G) float32: the uploader's genre history d_u, from the training split only."""
    propensity: Tensor | None = None
    """(B,) float32: a selection propensity the data supplies (the release layout's column)."""

    @property
    def size(self) -> int:
        return int(self.video.shape[0])

    @property
    def column_music_idx(self) -> Tensor:
        """The music of each column of the in-batch score matrix."""
        return self.music_idx

    @cached_property
    def same_music(self) -> Tensor:
        """(B, B) bool: cell (i, j) pairs a video with its own music (false negatives if i != j)."""
        return self.music_idx[:, None] == self.music_idx[None, :]


@dataclass
class Query:
    """Rows scored at inference — test videos, or new videos to recommend music for — against a
    pool of music columns; ``adjust_score`` (at inference), ``score_rows`` and ``rerank`` receive
    it. The features and the pool's genres travel with it, so that a strategy never needs the
    training data at inference.

    Example::

        query = Query(video_idx=torch.tensor([-1, -1]), column_music_idx=torch.arange(5))
        query.video_idx.eq(-1).all()  # two new videos, scored against music 0 … 4
    """

    video_idx: Tensor
    """(rows,) int64: each row's video in the data; −1 for a video the data has never seen."""
    column_music_idx: Tensor
    """(columns,) int64, or (rows, candidates) in ``rerank``: the music of each column."""
    uploader_idx: Tensor | None = None
    """(rows,) int64: each row's uploader; −1 for one the model has not seen."""
    prior: Tensor | None = None
    """(rows, G) float32: each row's uploader genre history d_u (d̄ for unknown uploaders)."""
    video_features: Tensor | None = None
    """(rows, video dim) float32: the rows' preprocessed features."""
    music_features: Tensor | None = None
    """(columns, music dim) float32: the columns' preprocessed features, in column order."""
    music_genre: Tensor | None = None
    """(pool,) int64: the genre of each music id of the pool, −1 unknown."""


@dataclass
class Output:
    """What the harness computes for a batch before asking the backbone for its loss terms;
    ``loss_terms`` and ``extra_loss`` receive it. Regularisers (KL, distillation, intra-modal
    structure) use the posteriors; matching and cross-generation use the scored codes.

    Example::

        codes = Latent(mu=torch.randn(4, 16))
        out = Output(codes, codes, codes, codes, score_fn=lambda on_means: codes.mu @ codes.mu.T)
        out.scores.shape  # (4, 4): video i against music j
    """

    video: Latent
    """The video encoder's posterior (sampled in training)."""
    music: Latent
    """The music encoder's posterior (sampled in training)."""
    video_scored: Latent
    """The video codes after the strategies' ``adjust_video`` (``video`` when none moved them)."""
    music_scored: Latent
    """The music codes after the strategies' ``adjust_music`` (``music`` when none moved them)."""
    score_fn: Callable[[bool], Tensor] = field(repr=False)
    """The method's in-batch scoring (strategies' score terms included); read :attr:`scores` and
    :attr:`mean_scores` instead of calling it."""

    @cached_property
    def scores(self) -> Tensor:
        """(B, B) in-batch scores S[i, j] = s(video_i, music_j) on the codes the backbone scores in
        training (sampled, or the means), strategies' score terms added."""
        return self.score_fn(False)

    @cached_property
    def mean_scores(self) -> Tensor:
        """(B, B) in-batch scores on the posterior means: what the method ranks by at inference."""
        return self.score_fn(True)


@dataclass
class LossTerm:
    """One unreduced loss term: ``loss_terms`` and ``extra_loss`` return a dict of them, by name.
    The harness reduces each one (:func:`benchkit.method.reduce_term`), with the strategies'
    weights, and adds them up.

    Example::

        hinge = torch.rand(4)  # one value per pair
        LossTerm(hinge)  # kind "anchor": IPS-style weights can reach it
        LossTerm(torch.rand(4, 4), kind="cell", valid=~torch.eye(4, dtype=torch.bool))
    """

    value: Tensor
    """The values: a 0-d tensor (``scalar``), (B,) (``anchor``) or (B, C) (``cell``)."""
    kind: str = "anchor"
    """``scalar`` (already reduced; no weight reaches it), ``anchor`` (one value per pair,
    reduced as Σ a_i v_i / Σ a_i) or ``cell`` (row i = pair i's anchor, column c = another
    pair)."""
    coef: float = 1.0
    """The term's coefficient in the total loss."""
    cols: Tensor | None = None
    """(B, C) int64, ``cell`` only: the pair of each column (``None``: dense, C == B)."""
    valid: Tensor | None = None
    """(B, C) bool, ``cell`` only: the cells that count."""
    transposed: bool = False
    """``cell`` only: the anchor of row i is pair i's *music* (cell (i, j) is video j with music
    i)."""
    row_reduce: str = "mean"
    """``cell`` only: each row is the ``mean`` or the ``sum`` of its valid cells; rows are then
    averaged."""

    def __post_init__(self) -> None:
        if self.kind not in {"scalar", "anchor", "cell"}:
            raise ValueError(f"LossTerm kind must be scalar, anchor or cell, not {self.kind!r}")
        if self.row_reduce not in {"mean", "sum"}:
            raise ValueError(f"LossTerm row_reduce must be mean or sum, not {self.row_reduce!r}")

    def scaled(self, coef: float) -> LossTerm:
        return replace(self, coef=self.coef * coef)


@dataclass
class Weights:
    """Loss weights from a strategy's ``weights(batch)``. Several strategies' weights multiply.
    They are self-normalised in the batch (anchor weights to mean 1 over the anchors, cell
    weights to mean 1 over a term's valid cells), so only their *relative* sizes matter: a
    constant weight changes nothing.

    Example::

        propensity = torch.tensor([0.5, 0.1, 0.2, 0.5])
        Weights(anchor=1 / propensity)  # IPS: rare choices count more
    """

    anchor: Tensor | None = None
    """(B,) positive, finite: one weight per pair."""
    cell: Tensor | None = None
    """(B, B) positive, finite: cell (i, j) = video i with music j."""

    def combine(self, other: Weights | None) -> Weights:
        if other is None:
            return self
        return Weights(
            anchor=_mul(self.anchor, other.anchor),
            cell=_mul(self.cell, other.cell),
        )


def _mul(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    if a is None:
        return b
    if b is None:
        return a
    return a * b


# --------------------------------------------------------------------------------------------
# Components


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
        from benchkit.contract import check_returns

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
        from benchkit.contract import check_returns

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
        from benchkit.contract import HOOK_POINTS

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


def _silent(_message: str) -> None:
    return None


def _default_cache() -> Path:
    from benchkit.files import cache_root

    return cache_root()


@dataclass
class RunContext:
    """What a strategy's ``prepare`` receives beside the dataset: the run's device, seed, plugins,
    trainer and protocol, a logger and the cache folder.

    Example::

        ctx = RunContext(device=torch.device("cpu"), seed=1234, plugins=load_plugins())
        ctx.log(f"preparing on {ctx.device} with seed {ctx.seed}")
    """

    device: torch.device
    """Where the run trains: put what ``prepare`` makes here."""
    seed: int
    """The run's seed."""
    plugins: Plugins
    """The loaded plugins (to build a companion backbone by name)."""
    trainer: Trainer | None = None
    """The run's own training recipe (loop, early stopping, precision); ``ctx.train`` uses it."""
    protocol: Protocol | None = None
    """The protocol that selects the run's epochs."""
    log: Callable[[str], None] = _silent
    """Say something on the run's log (silent under ``--quiet``)."""
    cache_dir: Path = field(default_factory=_default_cache)
    """benchkit's cache folder (teachers are kept there)."""
    split: str = "test"
    """The split the run is scored on (to report a companion beside the student)."""

    def train(self, method: Any, dataset: Dataset, pairs: Any = None, desc: str = "train") -> Any:
        """Train a companion ``method`` with the run's own recipe (the loop, early stopping on
        ``dataset``'s validation split under the run's protocol, the precision) and return the
        trainer's :class:`benchkit.train.FitResult`. ``pairs`` default to ``dataset``'s training
        pairs."""
        if self.trainer is None:
            raise ConfigError("this RunContext has no trainer: companions cannot be trained")
        return self.trainer.fit(method, dataset, self.protocol, pairs=pairs, desc=desc)


class DatasetProvider(ABC):
    """Builds or loads a :class:`benchkit.data.Dataset` on demand."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    @abstractmethod
    def load(self, **options: Any) -> Dataset: ...


# --------------------------------------------------------------------------------------------
# Evaluation


@dataclass
class EvalTask:
    """The rows of one evaluation: each test video, its positive music, its candidate music
    (``None`` = the whole pool) and its weight (the weights sum to 1)."""

    video_idx: np.ndarray
    positive: np.ndarray
    candidates: np.ndarray | None
    weights: np.ndarray


@dataclass
class RankInfo:
    """Where each row's positive landed: ``n_greater`` candidates scored strictly above it and
    ``n_equal`` other candidates tied with it; ``n_candidates`` per row. ``per_row`` holds each
    row's value of the row-averaged (oracle and bias) metrics, for paired tests on them;
    ``clusters`` each row's uploader (−1 unknown; ``None`` when the data has no uploaders), the
    unit a bootstrap resamples test videos in."""

    n_greater: np.ndarray
    n_equal: np.ndarray
    weights: np.ndarray
    n_candidates: int
    tie_policy: str = "expected"
    per_row: dict[str, np.ndarray] = field(default_factory=dict)
    clusters: np.ndarray | None = None


class Metric(ABC):
    """A ranking metric at cut-off K, from where the positives landed."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    @abstractmethod
    def __call__(self, ranks: RankInfo, k: int) -> float: ...


class Protocol(Configurable, ABC):
    """How a split is turned into ranking tasks, which metrics at which K, and the tie policy.

    A protocol's ``fingerprint`` hashes its name and settings; results carry it and tables refuse to
    mix protocols.
    """

    selection_metric: ClassVar[str] = "recall@25"

    def __init__(self, **hparams: Any) -> None:
        self._set_hparams(hparams)
        if "ks" in self.hparams and "metrics" in self.hparams:
            name, _, k = self.selection_metric.partition("@")
            if name not in self.metrics or int(k) not in self.ks:
                raise ConfigError(
                    f"protocol {self.name!r}: epochs are selected on validation "
                    f"{self.selection_metric}, which ks={list(self.ks)} and "
                    f"metrics={list(self.metrics)} leave out; keep it, e.g. --set "
                    f"protocol.ks=[{', '.join(map(str, sorted({*self.ks, int(k)})))}]"
                )

    @abstractmethod
    def task(self, dataset: Dataset, split: str) -> EvalTask: ...

    @property
    def ks(self) -> tuple[int, ...]:
        return tuple(self.hparams["ks"])

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(self.hparams["metrics"])

    @property
    def tie_policy(self) -> str:
        return str(self.hparams["tie"])

    def fingerprint(self) -> str:
        from benchkit.hashing import stable_hash

        return stable_hash({"protocol": self.name, **self.hparams})[:16]
