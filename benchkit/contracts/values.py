"""The data that flows through a model: what hooks receive and return.

Conventions: a training batch holds B matched pairs; pair i is video i with its music i. The
in-batch score matrix is ``S[i, j] = score(video_i, music_j)`` (rows are videos).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from torch import Tensor

__all__ = ["REQUIREMENTS", "Batch", "DataSpec", "Latent", "LossTerm", "Output", "Query", "Weights"]

# Named here without importing them, so that the ground floor stays the ground: the in-memory data
# (``benchkit.data.Dataset``), the loaded plugins (``benchkit.plugins.Plugins``) and a run's
# training recipe (``benchkit.train.Trainer``).
Dataset = Any
Plugins = Any
Trainer = Any

REQUIREMENTS = frozenset({"genres", "uploaders", "pgc", "truth"})
"""What a method may require of the data."""


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
