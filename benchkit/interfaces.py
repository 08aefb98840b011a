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
    """What a model must know about the data to build its layers."""

    video_dim: int
    music_dim: int
    n_genres: int
    n_music: int
    n_uploaders: int


@dataclass
class Latent:
    """An encoder's output. ``logvar`` is ``None`` for deterministic encoders; ``z`` is the code used
    in the loss (a reparametrised sample in training, the mean otherwise)."""

    mu: Tensor
    logvar: Tensor | None = None
    z: Tensor | None = None

    @property
    def code(self) -> Tensor:
        return self.mu if self.z is None else self.z

    def map(self, fn: Any) -> Latent:
        """Apply ``fn`` to the mean and the sample (a deconfounder moving the music code)."""
        return Latent(mu=fn(self.mu), logvar=self.logvar, z=None if self.z is None else fn(self.z))


@dataclass
class Batch:
    """B matched pairs, all tensors on the training device.

    ``prior`` is the uploader's genre distribution d_u computed on the training split; ``genre`` is
    the genre of each pair's music; both are ``None`` when the dataset has no genres / uploaders.
    """

    video: Tensor
    music: Tensor
    video_idx: Tensor
    music_idx: Tensor
    uploader_idx: Tensor | None = None
    genre: Tensor | None = None
    prior: Tensor | None = None
    propensity: Tensor | None = None

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
    pool of music columns. ``video_idx`` are the rows' ids in the data (−1: a video the data has
    never seen); ``column_music_idx`` the columns' music ids; ``uploader_idx`` (−1: an uploader the
    model has not seen) and ``prior`` (their d_u) where known. The rows' and columns' (preprocessed)
    features and the pool's genres travel with the query, so that a strategy never needs the
    training data at inference."""

    video_idx: Tensor
    column_music_idx: Tensor
    uploader_idx: Tensor | None = None
    prior: Tensor | None = None
    video_features: Tensor | None = None  # (rows, video dim)
    music_features: Tensor | None = None  # (columns, music dim), in column order
    music_genre: Tensor | None = None  # (pool,): the genre of each music id, −1 unknown


@dataclass
class Output:
    """What the harness computes for a batch before asking the backbone for its loss terms.

    ``video`` / ``music`` are the encoders' posteriors; ``video_scored`` / ``music_scored`` are the
    codes after the strategies' ``adjust_video`` / ``adjust_music`` (the same objects when none
    moved them). Regularisers (KL, distillation, intra-modal structure) use the posteriors;
    matching and cross-generation use the scored codes. :attr:`scores` and :attr:`mean_scores` are
    computed on first use by the method (:class:`benchkit.method.Method`), strategies' score terms
    included.
    """

    video: Latent
    music: Latent
    video_scored: Latent
    music_scored: Latent
    score_fn: Callable[[bool], Tensor] = field(repr=False)

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
    """One unreduced loss term.

    ``kind``:
      - ``"scalar"``: already reduced; strategies cannot weight it (e.g. a weight-decay-like term).
      - ``"anchor"``: shape (B,), one value per pair; reduced as Σ a_i v_i / Σ a_i.
      - ``"cell"``: shape (B, C), row i = pair i's anchor, column c = the other pair ``cols[i, c]``
        (dense when ``cols`` is None and C == B); ``valid`` masks cells that count. Each row is the
        mean (``row_reduce="mean"``) or the sum (``"sum"``) of its valid cells; rows are averaged.
        ``transposed`` says the anchor of row i is pair i's *music* (the music-to-video direction),
        so cell (i, j) concerns video j with music i.

    See :func:`benchkit.method.reduce_term` for how strategy weights enter.
    """

    value: Tensor
    kind: str = "anchor"
    coef: float = 1.0
    cols: Tensor | None = None
    valid: Tensor | None = None
    transposed: bool = False
    row_reduce: str = "mean"

    def __post_init__(self) -> None:
        if self.kind not in {"scalar", "anchor", "cell"}:
            raise ValueError(f"LossTerm kind must be scalar, anchor or cell, not {self.kind!r}")
        if self.row_reduce not in {"mean", "sum"}:
            raise ValueError(f"LossTerm row_reduce must be mean or sum, not {self.row_reduce!r}")

    def scaled(self, coef: float) -> LossTerm:
        return replace(self, coef=self.coef * coef)


@dataclass
class Weights:
    """Loss weights from a strategy. ``anchor``: (B,) per pair; ``cell``: (B, B) for cell (i, j) =
    video i with music j. Several strategies' weights multiply."""

    anchor: Tensor | None = None
    cell: Tensor | None = None

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

    def build(self, spec: DataSpec) -> None:
        """Create the layers for data of this shape. Called once before training."""
        raise NotImplementedError

    @abstractmethod
    def encode_video(self, x: Tensor) -> Latent: ...

    @abstractmethod
    def encode_music(self, x: Tensor) -> Latent: ...

    def sample(self, latent: Latent) -> Latent:
        """The code used in the loss: a reparametrised sample in training, the mean otherwise."""
        if latent.logvar is None or not self.training:
            return Latent(latent.mu, latent.logvar, latent.mu)
        eps = torch.randn_like(latent.mu)
        return Latent(latent.mu, latent.logvar, latent.mu + eps * torch.exp(0.5 * latent.logvar))

    def score(self, video: Tensor, music: Tensor) -> Tensor:
        """(Nv, Nm) matching scores between video codes and music codes (dot product here)."""
        return video @ music.T

    def score_rows(self, video: Tensor, music: Tensor, rows: Query) -> Tensor:
        """Scores at inference, where the rows' video ids and the columns' music ids are known
        (``rows``). Defaults to :meth:`score`; a backbone that scores by identity rather than by
        content (an oracle, a popularity model) overrides this."""
        return self.score(video, music)

    @abstractmethod
    def loss_terms(self, batch: Batch, out: Output) -> dict[str, LossTerm]:
        """The unreduced loss terms of this batch, by name."""

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
    # The dataset a run hands over is shared with other runs and read-only; a strategy that must
    # write into it declares so and gets a private copy (at the memory cost of one).
    writes_dataset: ClassVar[bool] = False

    def __init__(self, **hparams: Any) -> None:
        nn.Module.__init__(self)
        self._set_hparams(hparams)
        self._held: dict[str, Any] = {}

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
        """Why this strategy cannot work with ``backbone`` (``None`` when it can)."""
        return None

    def build(self, spec: DataSpec, backbone: Backbone) -> None:
        """Create parameters (e.g. genre embeddings) once the data and backbone are known."""

    def prepare(self, dataset: Dataset, ctx: RunContext) -> None:
        """Before training: compute statistics, train a teacher on PGC, ..."""

    def weights(self, batch: Batch) -> Weights | None:
        """Per-anchor / per-cell loss weights for this batch (IPS, DU)."""
        return None

    def adjust_music(self, music: Latent, rows: Batch | None) -> Latent:
        """Move the music code (deconfounders). ``rows`` is ``None`` at inference."""
        return music

    def adjust_video(self, video: Latent, rows: Batch | None) -> Latent:
        """Move the video (query) code — a deconfounder on the uploader's side, such as DecRS's.
        ``rows`` is ``None`` at inference."""
        return video

    def adjust_score(self, scores: Tensor, rows: Batch | Query, music: Tensor) -> Tensor:
        """Change the (rows × columns) score matrix, in training (``rows`` is the batch) and at
        inference (a :class:`Query`); ``music`` holds the columns' music codes."""
        return scores

    def extra_loss(self, batch: Batch, out: Output) -> dict[str, LossTerm]:
        """Additional loss terms (distillation)."""
        return {}

    def rerank(self, scores: Tensor, items: Tensor, rows: Query) -> Tensor:
        """Re-score candidates at evaluation (Calibration); ``items`` are their music ids."""
        return scores

    def report(self) -> dict[str, Any]:
        """Figures this strategy reports about itself after training (a teacher's scores, which
        history order it used, ...); they land in the run's record under ``training.strategies``."""
        return {}

    @classmethod
    def hook_points(cls) -> frozenset[str]:
        """The hook points this strategy overrides (what it changes, and when)."""
        hooks = (
            "prepare",
            "weights",
            "adjust_music",
            "adjust_video",
            "adjust_score",
            "extra_loss",
            "rerank",
        )
        return frozenset(h for h in hooks if getattr(cls, h) is not getattr(Strategy, h))


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
    from benchkit.data.cache import cache_root

    return cache_root()


@dataclass
class RunContext:
    """What a strategy's ``prepare`` may use: the device, the run's seed, the plugins (to build a
    teacher backbone by name), the trainer (the run's own recipe: loop, early stopping, precision),
    the protocol that selects epochs, a logger, the cache folder (teachers are kept there), and the
    split the run is scored on (to report a companion beside the student)."""

    device: torch.device
    seed: int
    plugins: Plugins
    trainer: Trainer | None = None
    protocol: Protocol | None = None
    log: Callable[[str], None] = _silent
    cache_dir: Path = field(default_factory=_default_cache)
    split: str = "test"  # the split the run is scored on

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
