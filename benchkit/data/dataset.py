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

from benchkit.data.truth import Truth
from benchkit.errors import DataError
from benchkit.hashing import array_digest
from benchkit.interfaces import DataSpec
from benchkit.spec import FEATURE_DTYPES, FEATURE_NORMS, PRIOR_KINDS

REQUIRED_SPLITS = ("train", "val", "test")


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
            _check_ids(self.pairs[:, col], n, "pgc.pairs", what)
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
        self.video_ids = _id_array(self.video_ids, self.n_videos, f"{self.name}: video_ids")
        self.music_ids = _id_array(self.music_ids, self.n_music, f"{self.name}: music_ids")
        self.uploader_ids = _id_array(
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

    # -- validation ----------------------------------------------------------------------------

    def validate(self) -> None:
        """Raise :class:`DataError` naming the field and the fix for any inconsistency."""
        nv, nm = self.n_videos, self.n_music
        for what, a in (
            ("video_features", self.video_features),
            ("music_features", self.music_features),
        ):
            if not np.isfinite(a).all():
                bad = int((~np.isfinite(a)).any(axis=1).sum())
                raise DataError(
                    f"{self.name}: {what} has NaN or inf in {bad} row(s); clean or drop them"
                )
        if self.video_music.shape != (nv,):
            raise DataError(
                f"{self.name}: video_music must have one entry per video ({nv}), got "
                f"{self.video_music.shape}"
            )
        _check_ids(self.video_music, nm, f"{self.name}: video_music", "music")
        if self.video_uploader is not None and self.video_uploader.shape != (nv,):
            raise DataError(f"{self.name}: video_uploader must have one entry per video ({nv})")
        if self.music_genre is not None:
            if self.music_genre.shape != (nm,):
                raise DataError(f"{self.name}: music_genre must give one genre per music ({nm})")
            if (self.music_genre < -1).any():
                raise DataError(
                    f"{self.name}: music_genre has negative genre ids (only -1, unknown, is allowed)"
                )
        if self.pgc is not None:
            for what, ugc, pgc in (
                ("video", self.video_features, self.pgc.video_features),
                ("music", self.music_features, self.pgc.music_features),
            ):
                if ugc.shape[1] != pgc.shape[1]:
                    raise DataError(
                        f"{self.name}: PGC {what} features have {pgc.shape[1]} dimensions but "
                        f"the UGC ones {ugc.shape[1]}; a teacher trained on one cannot read the "
                        f"other — extract both with the same model"
                    )
        for name in REQUIRED_SPLITS:
            if name not in self.splits:
                raise DataError(
                    f"{self.name}: missing split {name!r}; splits present: "
                    f"{', '.join(sorted(self.splits)) or 'none'}"
                )
        for name, rows in self.splits.items():
            if rows.size == 0:
                raise DataError(f"{self.name}: split {name!r} is empty")
            _check_ids(rows, nv, f"{self.name}: split {name!r}", "video")
            if np.unique(rows).size != rows.size:
                raise DataError(f"{self.name}: split {name!r} lists a video twice")
        train = set(self.splits["train"].tolist())
        for name in ("val", "test"):
            overlap = train.intersection(self.splits[name].tolist())
            if overlap:
                raise DataError(
                    f"{self.name}: {len(overlap)} video(s) are in both 'train' and {name!r}"
                )
        for name, negs in self.negatives.items():
            stored_rows = self.splits.get(name)
            if stored_rows is None or negs.ndim != 2 or negs.shape[0] != stored_rows.size:
                raise DataError(
                    f"{self.name}: stored negatives of {name!r} must have one row per "
                    f"video of that split"
                )
            _check_ids(negs, nm, f"{self.name}: negatives of {name!r}", "music")
            hits = negs == self.video_music[stored_rows][:, None]
            if hits.any():
                bad = int(hits.any(axis=1).sum())
                raise DataError(
                    f"{self.name}: stored negatives of split {name!r} contain the "
                    f"positive music in {bad} row(s)"
                )
        for name, w in self.eval_weights.items():
            weighted_rows = self.splits.get(name)
            if weighted_rows is None or w.shape != (weighted_rows.size,):
                raise DataError(
                    f"{self.name}: stored weights of {name!r} must have one value per "
                    f"video of that split"
                )
            if not np.isfinite(w).all() or (w < 0).any():
                raise DataError(
                    f"{self.name}: stored weights of {name!r} must be finite and non-negative"
                )
            if abs(float(w.sum()) - 1.0) > 1e-6:
                raise DataError(
                    f"{self.name}: stored weights of {name!r} sum to {w.sum():.6g}, "
                    f"not 1; rerun with --normalise-weights to rescale them"
                )
        check_side_columns(self)

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

    def with_training_labels(
        self, music: np.ndarray, tag: str, splits: tuple[str, ...] = ("train",)
    ) -> Dataset:
        """The same data with the music of the videos of ``splits`` replaced (a control: what a
        method learns from other choices). By default only the training labels: early stopping
        then reads the observed validation choices, as a real method's does. Everything a method
        or a metric reads besides those labels stays as it was: the uploaders' histories d_u,
        the test videos' music, their popularity weights and sampled negatives."""
        music = np.asarray(music, dtype=np.int64)
        _check_ids(music, self.n_music, f"{self.name}: training labels", "music")
        labels = self.video_music.copy()
        for split in splits:
            rows = self.splits[split]
            labels[rows] = music[rows]
        from benchkit.data.eval_rows import row_weights

        weights = dict(self.eval_weights)
        kept = [name for name in ("val", "test") if name not in splits]
        for name in kept:  # the evaluation weights of the observed choices, whatever the labels
            if name not in weights:
                weights[name] = row_weights(self, self.splits[name], "inverse_popularity")
        return replace(
            self,
            name=f"{self.name}+{tag}-labels",
            video_music=labels,
            given_prior=self.video_prior if self.has("uploaders") else self.given_prior,
            negatives={k: v for k, v in self.negatives.items() if k not in splits},
            eval_weights={k: v for k, v in weights.items() if k in kept},
            content_id=f"{self.content_fingerprint}:{tag}-labels",
            meta={
                **self.meta,
                "eval_content": self.meta.get("eval_content", self.content_fingerprint),
            },
        )

    def with_normalised_features(self, kind: str) -> Dataset:
        """The same data with its features preprocessed — ``zscore`` (each dimension centred and
        scaled by the mean and standard deviation of the training videos, and of the music they
        use), ``l2`` (each row to unit length) or ``none``. The PGC clips are z-scored by the
        statistics of *all* the UGC videos and music (features only, no label): close to the
        training statistics, and independent of how the UGC videos are split, so that a world's
        PGC teacher is the same for every test set and is trained once (its domain shift stays:
        PGC is not centred on itself). The fitted training statistics travel in
        ``meta["features_norm"]`` (a saved model keeps them, to preprocess new videos the same
        way); the fingerprint records the choice."""
        if kind not in FEATURE_NORMS:
            raise DataError(
                f"feature normalisation must be one of {', '.join(FEATURE_NORMS)}, not {kind!r}"
            )
        if kind == "none":
            return self
        train = self.splits["train"]
        music_rows = np.unique(self.video_music[train])
        stats = fit_feature_norm(kind, self.video_features, train, self.music_features, music_rows)
        pgc = self.pgc
        if pgc is not None:
            everything = fit_feature_norm(
                kind,
                self.video_features,
                np.arange(self.n_videos),
                self.music_features,
                np.arange(self.n_music),
            )
            pgc = replace(
                pgc,
                video_features=apply_feature_norm(pgc.video_features, everything, "video"),
                music_features=apply_feature_norm(pgc.music_features, everything, "music"),
            )
        return replace(
            self,
            video_features=apply_feature_norm(self.video_features, stats, "video"),
            music_features=apply_feature_norm(self.music_features, stats, "music"),
            pgc=pgc,
            content_id=f"{self.content_fingerprint}:{kind}",
            meta={**self.meta, "features_norm": stats},
        )

    def with_feature_dtype(self, dtype: str) -> Dataset:
        """The same data with features stored as ``float32`` or ``float16`` (half the memory; a
        batch is cast back to float32 when it is gathered). The fingerprint records the choice."""
        if dtype not in FEATURE_DTYPES:
            raise DataError(
                f"feature storage must be one of {', '.join(FEATURE_DTYPES)}, not {dtype!r}"
            )
        if self.video_features.dtype == np.dtype(dtype):
            return self
        pgc = self.pgc
        if pgc is not None:
            pgc = replace(
                pgc,
                video_features=pgc.video_features.astype(dtype),
                music_features=pgc.music_features.astype(dtype),
            )
        return replace(
            self,
            video_features=self.video_features.astype(dtype),
            music_features=self.music_features.astype(dtype),
            pgc=pgc,
            content_id=f"{self.content_fingerprint}:{dtype}",
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
    def _genre_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(per-uploader genre counts over the training rows, each training row's genre or −1)."""
        if self.music_genre is None or self.video_uploader is None:
            raise DataError(f"{self.name}: uploader priors need music genres and uploader ids")
        train = self.splits["train"]
        genre = self.music_genre[self.video_music[train]]
        known = genre >= 0  # a music of unknown genre says nothing about a taste
        counts = np.zeros((self.n_uploaders, self.n_genres), dtype=np.float64)
        np.add.at(counts, (self.video_uploader[train][known], genre[known]), 1)
        return counts, genre

    @cached_property
    def uploader_prior(self) -> np.ndarray:
        """(U, G) float32: each uploader's genre distribution over their whole training history
        (an uploader without one gets the mean over training rows): what a new video of theirs,
        outside the training data, is described by."""
        counts, _ = self._genre_counts
        totals = counts.sum(axis=1, keepdims=True)
        prior_u = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        assert self.video_uploader is not None
        row_mean = prior_u[self.video_uploader[self.splits["train"]]].mean(axis=0)
        prior_u[totals[:, 0] == 0] = row_mean
        return prior_u.astype(np.float32)

    @cached_property
    def video_prior(self) -> np.ndarray:
        """(Nv, G) float32: each video's uploader genre distribution d_u from the training split —
        leave-one-out for the training rows (``prior_kind``), the whole history for the others.
        Where nothing is left (an uploader's only training video, or no history), the mean over
        training rows."""
        if self.given_prior is not None:
            return np.asarray(self.given_prior, dtype=np.float32)
        prior_u = self.uploader_prior
        assert self.video_uploader is not None
        out = prior_u[self.video_uploader].astype(np.float64)
        if self.prior_kind == "loo":
            counts, genre = self._genre_counts
            train = self.splits["train"]
            own = counts[self.video_uploader[train]].copy()
            known = genre >= 0
            own[np.flatnonzero(known), genre[known]] -= 1
            left = own.sum(axis=1, keepdims=True)
            fallback = prior_u[self.video_uploader[train]].mean(axis=0)
            out[train] = np.where(left > 0, own / np.maximum(left, 1), fallback)
        return out.astype(np.float32)

    @cached_property
    def prior_mean(self) -> np.ndarray:
        """d̄: the mean of d_u over training rows (what a batch mean estimates)."""
        return self.video_prior[self.splits["train"]].mean(axis=0).astype(np.float32)

    def describe(self) -> dict[str, Any]:
        """Table 2's statistics (and a few more): sizes, videos per music, genres, uploaders."""
        counts = self.music_popularity
        out: dict[str, Any] = {
            "name": self.name,
            "fingerprint": self.fingerprint,
            "music": self.n_music,
            "videos": self.n_videos,
            "videos_per_music_mean": float(counts.mean()),
            "videos_per_music_std": float(counts.std()),
            "videos_per_music_min": int(counts.min()),
            "videos_per_music_max": int(counts.max()),
            "uploaders": self.n_uploaders,
            "splits": {k: int(v.size) for k, v in self.splits.items()},
            "pgc_pairs": 0 if self.pgc is None else int(self.pgc.pairs.shape[0]),
        }
        if self.music_genre is not None:
            names = self.genre_names or tuple(str(i) for i in range(self.n_genres))
            gc = np.bincount(self.music_genre[self.music_genre >= 0], minlength=self.n_genres)
            out["genres"] = {names[i]: int(gc[i]) for i in range(self.n_genres)}
        if self.music_genre is not None and self.video_uploader is not None:
            from benchkit.data.splits import genre_entropy

            h = genre_entropy(
                np.maximum(self.music_genre[self.video_music], 0),
                self.video_uploader,
                self.n_uploaders,
                self.n_genres,
            )
            h = h[np.isfinite(h)]
            out["uploader_entropy_mean"] = float(h.mean())
            out["uploader_entropy_std"] = float(h.std())
        if self.video_uploader is not None:
            test_upl = self.video_uploader[self.splits["test"]]
            shares = np.bincount(test_upl) / test_upl.size
            out["test_uploaders"] = int((shares > 0).sum())
            out["test_largest_uploader_share"] = float(shares.max())
        choice = None if self.truth is None else self.truth.choice
        if choice is not None:
            from benchkit.data.synth import taste_at

            taste = taste_at(
                choice.taste0[choice.video_uploader],
                choice.taste1[choice.video_uploader],
                choice.video_time,
            )
            entropy = -(taste * np.log(taste)).sum(axis=1)
            out["test_true_taste_entropy"] = float(entropy[self.splits["test"]].mean())
            out["random_split_true_taste_entropy"] = float(entropy.mean())
        return out


ROWS_PER_CHUNK_ELEMENTS = 2**20  # elements of one chunk of rows: 4 MB of float32, in the cache


def _chunk_rows(width: int) -> int:
    return max(1, ROWS_PER_CHUNK_ELEMENTS // max(1, width))


def _column_moments(a: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) standard deviation of each column over ``rows``, in float64, two
    passes over chunks of rows: a float64 copy of a paper-scale feature matrix was 2.4 GB and
    most of a run's start-up."""
    step = _chunk_rows(a.shape[1])
    total = np.zeros(a.shape[1])
    for s in range(0, rows.size, step):
        total += a[rows[s : s + step]].sum(axis=0, dtype=np.float64)
    mean = total / max(1, rows.size)
    squares = np.zeros(a.shape[1])
    for s in range(0, rows.size, step):
        centred = a[rows[s : s + step]].astype(np.float64) - mean
        squares += np.einsum("ij,ij->j", centred, centred)
    return mean, np.sqrt(squares / max(1, rows.size))


def fit_feature_norm(
    kind: str,
    video: np.ndarray,
    video_rows: np.ndarray,
    music: np.ndarray,
    music_rows: np.ndarray,
) -> dict[str, Any]:
    """The statistics of a feature normalisation, fitted on the given rows of each modality."""
    stats: dict[str, Any] = {"kind": kind}
    if kind == "zscore":
        for name, a, rows in (("video", video, video_rows), ("music", music, music_rows)):
            mean, std = _column_moments(a, rows)
            stats[f"{name}_mean"] = mean.astype(np.float32)
            stats[f"{name}_std"] = np.maximum(std, 1e-6).astype(np.float32)
    return stats


def apply_feature_norm(x: np.ndarray, stats: dict[str, Any], modality: str) -> np.ndarray:
    """Preprocess ``x`` (rows of ``modality`` = video or music features) with fitted ``stats``
    (:meth:`Dataset.with_normalised_features`), in float32, kept in ``x``'s storage dtype —
    chunk by chunk of rows into one new array (whole-matrix temporaries were four 1.2 GB arrays at
    the paper's scale)."""
    kind = stats["kind"]
    if kind not in FEATURE_NORMS:
        raise DataError(f"unknown feature normalisation {kind!r}")
    out = np.empty(x.shape, dtype=x.dtype)
    step = _chunk_rows(x.shape[1])
    for s in range(0, x.shape[0], step):
        part = x[s : s + step].astype(np.float32)
        if kind == "zscore":
            part -= stats[f"{modality}_mean"]
            part /= stats[f"{modality}_std"]
        elif kind == "l2":
            part /= np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-12)
        out[s : s + part.shape[0]] = part
    return out


def _id_array(ids: Any, n: int, what: str) -> np.ndarray | None:
    """The user's ids as a plain (non-object) array of ``n`` distinct strings or integers."""
    if ids is None:
        return None
    a = np.asarray(ids)
    if a.dtype == object:
        a = a.astype(str)
    if a.dtype.kind not in "iuU":
        raise DataError(f"{what}: ids must be strings or integers, got dtype {a.dtype}")
    if a.shape != (n,):
        raise DataError(f"{what}: {a.size} ids for {n} rows")
    uniq, counts = np.unique(a, return_counts=True)
    if (counts > 1).any():
        raise DataError(f"{what}: duplicate id {uniq[counts > 1][0].item()!r}")
    return a


def check_side_columns(ds: Dataset) -> None:
    """The optional per-video and per-music fields: their lengths, finite values, and ids that
    cannot size an allocation beyond what the data declares (genres: the genre names, else the
    priors' width, else :data:`benchkit.data.checks.MAX_GENRES`; uploaders: the videos)."""
    from benchkit.data.checks import MAX_GENRES, MAX_ID, MAX_PRIOR_CELLS, bounded, finite, per_video

    nv, name = ds.n_videos, ds.name
    if ds.music_genre is not None:
        limit, why = len(ds.genre_names), "the genre names"
        if not limit and ds.given_prior is not None:
            limit, why = np.shape(ds.given_prior)[-1], "the width of the uploaders' priors"
        if not limit:
            limit, why = MAX_GENRES, "genre ids without genre names"
        bounded(ds.music_genre, -1, limit, f"{name}: music_genre", why)
    if ds.video_uploader is not None and ds.video_uploader.size:
        bounded(ds.video_uploader, 0, MAX_ID, f"{name}: video_uploader", "ids are non-negative")
        n_uploaders = int(ds.video_uploader.max()) + 1
        if n_uploaders > nv and n_uploaders * max(1, ds.n_genres) > MAX_PRIOR_CELLS:
            raise DataError(
                f"{name}: video_uploader has ids up to {n_uploaders - 1:,} for {nv:,} videos: "
                f"renumber the uploaders 0, 1, … (their genre histories would not fit in memory)"
            )
    if ds.given_prior is not None:
        prior = np.asarray(ds.given_prior)
        if prior.ndim != 2 or prior.shape[0] != nv:
            raise DataError(f"{name}: given_prior must be (videos, genres), got {prior.shape}")
        finite(prior, f"{name}: given_prior (the uploaders' genre priors)", low=0.0)
    if ds.propensity is not None:
        p = per_video(ds.propensity, nv, f"{name}: propensity")
        known = p[~np.isnan(p)]
        if known.size:
            finite(known, f"{name}: propensity (where given)", low=0.0, strict=True)
    for key, column in ds.video_columns.items():
        per_video(column, nv, f"{name}: video column {key!r}")
    if ds.pgc is not None and ds.pgc.music_genre is not None:
        n_pgc = ds.pgc.music_features.shape[0]
        if np.shape(ds.pgc.music_genre) != (n_pgc,):
            raise DataError(f"{name}: pgc.music_genre must give one genre per PGC music ({n_pgc})")


def _check_ids(ids: np.ndarray, n: int, what: str, kind: str) -> None:
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        bad = ids[(ids < 0) | (ids >= n)][:5].tolist()
        raise DataError(f"{what}: {kind} ids out of range [0, {n}): e.g. {bad}")
