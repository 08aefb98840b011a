"""The in-memory dataset every method trains and is evaluated on.

One row per UGC video: its features, the music its uploader chose, the uploader. Music have features
and a genre. Named splits are arrays of video rows. PGC pairs (professionally matched clips, with
their own features) and, on the synthetic world, the hidden truth travel with it.

Uploader genre histories d_u are computed from the training split only, so nothing about a test
video's choice leaks into what a method sees — and, by default, leave-one-out for the training
video they describe, so that a row's own label is not inside its confounder (``prior_kind``;
``in-sample``, the DebCM release's form, stays available).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np

from benchkit.data.checks import check_dataset, check_ids, id_array
from benchkit.data.priors import GenreHistory
from benchkit.data.truth import Truth
from benchkit.errors import DataError
from benchkit.hashing import array_digest
from benchkit.interfaces import DataSpec
from benchkit.spec import PRIOR_KINDS


@dataclass(eq=False)
class PGC:
    """Professionally generated content: pairs of PGC video and PGC music, matched on content."""

    video_features: np.ndarray
    music_features: np.ndarray
    pairs: np.ndarray  # (n, 2): [pgc video row, pgc music row]
    splits: dict[str, np.ndarray]  # rows of ``pairs``: "train", "val"
    music_genre: np.ndarray | None = None  # (n_pgc_music,), -1 = unknown

    def __post_init__(self) -> None:
        self.video_features = _features(self.video_features, "pgc.video_features")
        self.music_features = _features(self.music_features, "pgc.music_features")
        self.pairs = np.asarray(self.pairs, dtype=np.int64)
        if self.pairs.ndim != 2 or self.pairs.shape[1] != 2:
            raise DataError(f"pgc.pairs must be (n, 2) [video, music], got {self.pairs.shape}")
        for col, n, what in (
            (0, self.video_features.shape[0], "video"),
            (1, self.music_features.shape[0], "music"),
        ):
            check_ids(self.pairs[:, col], n, "pgc.pairs", what)
        for name in ("train", "val"):
            if self.splits.get(name) is None or np.asarray(self.splits[name]).size == 0:
                raise DataError(f"pgc: split {name!r} is missing or empty")
        self.splits = {k: np.asarray(v, dtype=np.int64) for k, v in self.splits.items()}

    @cached_property
    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for a in (self.video_features, self.music_features, self.pairs, *self.splits.values()):
            array_digest(h, a)
        return h.hexdigest()[:16]


def _features(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2:
        raise DataError(f"{what}: expected a 2-d array (rows × features), got shape {a.shape}")
    if a.dtype not in (np.float32, np.float16):
        a = a.astype(np.float32)
    return np.ascontiguousarray(a)


@dataclass(eq=False)
class Dataset:
    """A UGC matching dataset. See the module docstring for the meaning of each part."""

    name: str
    video_features: np.ndarray  # (Nv, Fv) float32 (or float16 storage)
    music_features: np.ndarray  # (Nm, Fm)
    video_music: np.ndarray  # (Nv,) the chosen music of each video
    splits: dict[str, np.ndarray]  # name -> video rows; train / val / test at least
    video_uploader: np.ndarray | None = None  # (Nv,)
    music_genre: np.ndarray | None = None  # (Nm,)
    genre_names: tuple[str, ...] = ()
    pgc: PGC | None = None
    truth: Truth | None = None
    given_prior: np.ndarray | None = None  # (Nv, G) uploader priors supplied by the data
    propensity: np.ndarray | None = None  # (Nv,) selection propensity supplied by the data
    negatives: dict[str, np.ndarray] = field(default_factory=dict)  # split -> (n, 100) stored
    eval_weights: dict[str, np.ndarray] = field(default_factory=dict)  # split -> (n,) stored
    video_columns: dict[str, np.ndarray] = field(default_factory=dict)  # extra per-video columns
    content_id: str | None = None  # a cheap identity for the arrays (e.g. the synth config hash)
    meta: dict[str, Any] = field(default_factory=dict)
    prior_kind: str = "loo"  # uploader priors of training rows: leave-one-out, or in-sample
    # The user's own ids (strings or integers) of each video row, music row and uploader index;
    # ``None``: the row numbers are the ids (the synthetic world, the release layout).
    video_ids: np.ndarray | None = None  # (Nv,)
    music_ids: np.ndarray | None = None  # (Nm,)
    uploader_ids: np.ndarray | None = None  # (n_uploaders,)

    def __post_init__(self) -> None:
        self.video_features = _features(self.video_features, "video_features")
        self.music_features = _features(self.music_features, "music_features")
        self.video_music = np.asarray(self.video_music, dtype=np.int64)
        self.splits = {k: np.asarray(v, dtype=np.int64) for k, v in self.splits.items()}
        if self.video_uploader is not None:
            self.video_uploader = np.asarray(self.video_uploader, dtype=np.int64)
        if self.music_genre is not None:
            self.music_genre = np.asarray(self.music_genre, dtype=np.int64)
        self.video_ids = id_array(self.video_ids, self.n_videos, f"{self.name}: video_ids")
        self.music_ids = id_array(self.music_ids, self.n_music, f"{self.name}: music_ids")
        self.uploader_ids = id_array(
            self.uploader_ids, self.n_uploaders, f"{self.name}: uploader_ids"
        )
        self.validate()

    # -- shape ---------------------------------------------------------------------------------

    @property
    def n_videos(self) -> int:
        return int(self.video_features.shape[0])

    @property
    def n_music(self) -> int:
        return int(self.music_features.shape[0])

    @property
    def n_genres(self) -> int:
        if self.music_genre is None:
            return 0
        return max(len(self.genre_names), int(self.music_genre.max()) + 1)

    @property
    def n_uploaders(self) -> int:
        return 0 if self.video_uploader is None else int(self.video_uploader.max()) + 1

    def ids(self, kind: str) -> np.ndarray:
        """The user's ids of every ``video``, ``music`` or ``uploader`` row, in row order (the row
        numbers where the data gave none)."""
        given = {"video": self.video_ids, "music": self.music_ids, "uploader": self.uploader_ids}
        if kind not in given:
            raise ValueError(f"ids of video, music or uploader, not {kind!r}")
        n = {"video": self.n_videos, "music": self.n_music, "uploader": self.n_uploaders}[kind]
        found = given[kind]
        return np.arange(n) if found is None else found

    def spec(self) -> DataSpec:
        return DataSpec(
            video_dim=int(self.video_features.shape[1]),
            music_dim=int(self.music_features.shape[1]),
            n_genres=self.n_genres,
            n_music=self.n_music,
            n_uploaders=self.n_uploaders,
        )

    def has(self, requirement: str) -> bool:
        """Whether the data supports a strategy requirement (genres, uploaders, pgc, truth)."""
        if requirement == "genres":
            return self.music_genre is not None
        if requirement == "uploaders":
            return self.music_genre is not None and (
                self.video_uploader is not None or self.given_prior is not None
            )
        if requirement == "pgc":
            return self.pgc is not None
        if requirement == "truth":
            return self.truth is not None
        raise ValueError(f"unknown requirement {requirement!r}")

    def validate(self) -> None:
        """Raise :class:`DataError` naming the field and the fix for any inconsistency."""
        check_dataset(self)

    # -- identity ------------------------------------------------------------------------------

    @cached_property
    def content_fingerprint(self) -> str:
        if self.content_id is not None:
            return self.content_id
        h = hashlib.sha256()
        for a in (self.video_features, self.music_features, self.video_music):
            array_digest(h, a)
        for optional in (self.video_uploader, self.music_genre, self.given_prior, self.propensity):
            if optional is not None:
                array_digest(h, optional)
        for name in sorted(self.negatives):
            array_digest(h, self.negatives[name])
        return h.hexdigest()

    @cached_property
    def fingerprint(self) -> str:
        """Hash of the data and its splits; stamped on every result."""
        h = hashlib.sha256(self.content_fingerprint.encode())
        if self.prior_kind != "loo":
            h.update(f"priors:{self.prior_kind}".encode())
        for name in sorted(self.splits):
            h.update(name.encode())
            array_digest(h, self.splits[name])
        if self.pgc is not None:
            h.update(self.pgc.fingerprint.encode())
        return h.hexdigest()[:16]

    def eval_fingerprint(self, split: str) -> str:
        """The identity of what an evaluation of ``split`` compares on: the data's content, the
        split's videos and their music. Two runs that share it rank the same test videos against
        the same positives, so they can be paired video by video (a control trained on other
        labels keeps it)."""
        h = hashlib.sha256(str(self.meta.get("eval_content", self.content_fingerprint)).encode())
        rows = self.splits[split]
        array_digest(h, rows)
        array_digest(h, self.video_music[rows])
        return h.hexdigest()[:16]

    def with_splits(self, splits: dict[str, np.ndarray], name: str | None = None) -> Dataset:
        """The same data with other splits (a test-set protocol); arrays are shared, not copied."""
        return replace(
            self, splits=dict(splits), name=name or self.name, negatives={}, eval_weights={}
        )

    # -- derived statistics (training split only) ----------------------------------------------

    @cached_property
    def music_popularity(self) -> np.ndarray:
        """Videos per music over the whole dataset: the popularity that evaluation weights undo."""
        return np.bincount(self.video_music, minlength=self.n_music)

    @cached_property
    def train_popularity(self) -> np.ndarray:
        """Videos per music in the training split: the popularity a method may use."""
        return np.bincount(self.video_music[self.splits["train"]], minlength=self.n_music)

    def with_priors(self, kind: str) -> Dataset:
        """The same data with uploader priors of the training rows computed ``loo`` (each
        training video's d_u from its uploader's *other* training videos: its own label is not in
        its confounder) or ``in-sample`` (the DebCM release's form, a row's own label included).
        Data that ships its priors (the release layout without uploader ids) keeps them."""
        if kind not in PRIOR_KINDS:
            raise DataError(f"uploader priors are {' or '.join(PRIOR_KINDS)}, not {kind!r}")
        if kind == self.prior_kind:
            return self
        return replace(self, prior_kind=kind)

    @cached_property
    def _history(self) -> GenreHistory:
        if self.music_genre is None or self.video_uploader is None:
            raise DataError(f"{self.name}: uploader priors need music genres and uploader ids")
        return GenreHistory.of(
            self.music_genre,
            self.video_music,
            self.video_uploader,
            self.splits["train"],
            (self.n_uploaders, self.n_genres),
        )

    @cached_property
    def uploader_prior(self) -> np.ndarray:
        """(U, G) float32: each uploader's genre distribution over their training history."""
        return self._history.uploader_prior()

    @cached_property
    def video_prior(self) -> np.ndarray:
        """(Nv, G) float32: each video's d_u from the training split, leave-one-out for training
        rows under ``prior_kind="loo"`` (:mod:`benchkit.data.priors`); the data's own if given."""
        if self.given_prior is not None:
            return np.asarray(self.given_prior, dtype=np.float32)
        return self._history.video_prior(loo=self.prior_kind == "loo")

    @cached_property
    def prior_mean(self) -> np.ndarray:
        """d̄: the mean of d_u over training rows (what a batch mean estimates)."""
        return self.video_prior[self.splits["train"]].mean(axis=0).astype(np.float32)
