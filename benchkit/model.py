"""A trained method as a self-describing package on disk, and loading it back to use it.

    benchkit run --backbone cmvae --debias debcm --save model/
    rec = benchkit.load("model/")
    ids, scores = rec.recommend(new_video_features, k=25)

A package is a folder:

- ``card.json``: what the model is — the backbone and every strategy with their resolved
  hyperparameters and the plugin (distribution, version) each came from, the run's spec, the data's
  shape and fingerprint, the feature preprocessing, the protocol and the test metrics, the benchkit
  and torch versions — and the SHA-256 of every other file;
- ``weights.pt``: the method's state (backbone, strategies, companions needed at inference such as
  DecRS's plain model, the deconfounder's d̄), loaded with ``torch.load(weights_only=True)``;
- ``preprocess.npz``: the fitted feature preprocessing (z-score statistics), applied to new videos;
- ``pool.npz``: the music pool it ranks by default (preprocessed features, genres, ids);
- ``uploaders.npz``: each training uploader's genre history d_u and d̄, for calibration and
  per-uploader strategies at inference.

Loading checks every file against its checksum (a tampered or foreign file is refused in one line)
and refuses a package whose plugins are not installed, naming them. Inference follows the paper's
§4.5: infer z_v for each new video, the (deconfounded) music codes with d̄, rank the pool, keep the
top K — with exactly the scoring pipeline the evaluation uses (:mod:`benchkit.topk`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchkit.data.dataset import Dataset
from benchkit.data.features import apply_feature_norm
from benchkit.device import select_device
from benchkit.errors import DataError
from benchkit.files import atomic_file, write_text
from benchkit.interfaces import DataSpec
from benchkit.method import Method
from benchkit.model_card import (
    CARD,
    FILES,
    FORMAT,
    check_dims_bounded,
    check_genres,
    check_pool,
    check_preprocess,
    check_shapes,
    check_target,
    check_uploaders,
    check_weights,
    read_arrays,
    read_card,
    seal,
    sha256,
)
from benchkit.plugins import Plugins, get_plugins
from benchkit.topk import Pool, refuse_non_finite, score_all, top_k
from benchkit.version import __version__

__all__ = ["FORMAT", "Recommender", "check_target", "load", "save_model"]


def _origin(plugins: Plugins, registry: Any, name: str) -> dict[str, str]:
    entry = registry.entry(name)
    info = plugins.info.get(entry.plugin)
    return {
        "plugin": entry.plugin,
        "distribution": info.distribution if info else "?",
        "version": info.version if info else "?",
    }


def save_model(
    folder: Path | str,
    method: Method,
    dataset: Dataset,
    record: dict[str, Any],
    plugins: Plugins | None = None,
) -> Path:
    """Write ``method`` (trained on ``dataset``, described by the run's ``record``) to ``folder``.
    Each file is written atomically; the card, written last, names their checksums."""
    plugins = plugins or get_plugins()
    out = check_target(folder)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in method.state_dict().items()}
    with atomic_file(out / "weights.pt") as tmp:
        torch.save(state, tmp)
    norm = dataset.meta.get("features_norm", {"kind": "none"})
    with atomic_file(out / "preprocess.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **{str(k): np.asarray(v) for k, v in norm.items()})  # type: ignore[arg-type]
    genre = dataset.music_genre if dataset.music_genre is not None else np.full(dataset.n_music, -1)
    with atomic_file(out / "pool.npz") as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            features=np.asarray(dataset.music_features, dtype=np.float32),
            genre=np.asarray(genre, dtype=np.int64),
            ids=dataset.ids("music"),
        )
    uploaders = _uploader_priors(dataset)
    with atomic_file(out / "uploaders.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **uploaders)  # type: ignore[arg-type]
    spec = dataset.spec()
    card = {
        "format": FORMAT,
        "benchkit": __version__,
        "torch": torch.__version__,
        "backbone": {
            "name": method.backbone.name,
            "hparams": dict(method.backbone.hparams),
            **_origin(plugins, plugins.backbones, method.backbone.name),
        },
        "strategies": [
            {
                "name": s.name,
                "hparams": dict(s.hparams),
                **_origin(plugins, plugins.strategies, s.name),
            }
            for s in method.strategy_list
        ],
        "data_spec": {
            "video_dim": spec.video_dim,
            "music_dim": spec.music_dim,
            "n_genres": spec.n_genres,
            "n_music": spec.n_music,
            "n_uploaders": spec.n_uploaders,
        },
        "genre_names": list(dataset.genre_names),
        "features_norm": str(norm["kind"]),
        "run": record,
        "files": {name: sha256(out / name) for name in FILES},
    }
    write_text(out / CARD, json.dumps(seal(card), indent=1, sort_keys=True))
    return out


def _uploader_priors(dataset: Dataset) -> dict[str, np.ndarray]:
    """d_u per uploader from the training split (what calibration and DecRS read at inference)."""
    if not dataset.has("uploaders") or dataset.video_uploader is None:
        return {
            "prior": np.zeros((0, max(1, dataset.n_genres)), np.float32),
            "mean": np.zeros(0, np.float32),
            "ids": np.zeros(0, np.int64),
        }
    return {
        "prior": dataset.uploader_prior,
        "mean": dataset.prior_mean.astype(np.float32),
        "ids": dataset.ids("uploader"),
    }


class Recommender:
    """A loaded model package: embed videos and music, score them, recommend the top K."""

    def __init__(
        self,
        folder: Path,
        card: dict[str, Any],
        method: Method,
        stats: dict[str, Any],
        pool: Pool,
        priors: dict[str, np.ndarray],
        device: torch.device,
    ) -> None:
        self.folder, self.card, self.method = folder, card, method
        self.stats, self.pool, self.priors, self.device = stats, pool, priors, device

    # -- inputs --------------------------------------------------------------------------------

    def _features(self, x: Any, modality: str, what: str) -> np.ndarray:
        """Raw features of new videos or music → checked, preprocessed like the training data."""
        a = np.asarray(x)
        dim = self.card["data_spec"][f"{modality}_dim"]
        if a.ndim != 2:
            raise DataError(f"{what}: expected a 2-d array (rows × features), got shape {a.shape}")
        if a.shape[0] == 0:
            raise DataError(f"{what}: no rows")
        if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
            raise DataError(f"{what}: expected real numbers, got dtype {a.dtype}")
        if a.shape[1] != dim:
            raise DataError(
                f"{what}: {a.shape[1]} features per row, but the model was trained on {dim}"
            )
        _refuse_rows(~np.isfinite(a).all(axis=1), what, "NaN or inf")
        with np.errstate(over="ignore", invalid="ignore"):
            a = a.astype(np.float32, copy=False)
        _refuse_rows(~np.isfinite(a).all(axis=1), what, "values beyond float32's range")
        with np.errstate(over="ignore", invalid="ignore"):
            x = apply_feature_norm(a, self.stats, modality)
        _refuse_rows(~np.isfinite(x).all(axis=1), what, "values that overflow the preprocessing")
        return x

    def music_pool(
        self, features: Any = None, genre: Any = None, ids: Any = None, what: str = "music pool"
    ) -> Pool:
        """The package's own pool, or one of raw ``features`` (genres and ids optional)."""
        if features is None:
            return self.pool
        x = self._features(features, "music", what)
        n = x.shape[0]
        g = np.full(n, -1, dtype=np.int64) if genre is None else np.asarray(genre)
        if g.shape != (n,):
            raise DataError(f"{what}: {g.size} genres for {n} music")
        if g.dtype.kind not in "iu":
            raise DataError(f"{what}: genres must be integer genre ids, got dtype {g.dtype}")
        check_genres(g.astype(np.int64), int(self.card["data_spec"]["n_genres"]), f"{what} genres")
        i = np.arange(n) if ids is None else np.asarray(ids)
        if i.shape != (n,):
            raise DataError(f"{what}: {i.size} ids for {n} music")
        return Pool(x, g.astype(np.int64), i)

    def uploader_index(self, uploaders: Any, n: int) -> np.ndarray:
        """The model's index of each row's uploader, from the user's uploader ids (the training
        data's ids; ``None`` or an empty id: a new uploader, who gets the population mix d̄). An
        id the model never saw is refused with its row: a typo must not pass for a new uploader."""
        if uploaders is None:
            return np.full(n, -1, dtype=np.int64)
        given = np.asarray(uploaders, dtype=object)
        if given.shape != (n,):
            raise DataError(f"uploaders: {given.size} entries for {n} videos")
        known = {str(u): i for i, u in enumerate(self.priors["ids"].tolist())}
        out = np.full(n, -1, dtype=np.int64)
        for row, value in enumerate(given.tolist()):
            if value is None or value == "" or (isinstance(value, float) and np.isnan(value)):
                continue
            index = known.get(str(value))
            if index is None:
                raise DataError(
                    f"uploaders: row {row} names uploader {value!r}, which the model never saw "
                    f"({len(known):,} known); leave it empty for a new uploader"
                )
            out[row] = index
        return out

    def _uploader_rows(
        self, index: np.ndarray | None, n: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(uploader index per row, −1 unknown; their d_u, d̄ for unknown ones)."""
        idx = np.full(n, -1, dtype=np.int64) if index is None else np.asarray(index)
        prior, mean = self.priors["prior"], self.priors["mean"]
        if mean.size == 0:
            return idx, None
        known = (idx >= 0) & (idx < prior.shape[0])
        rows = np.tile(mean, (n, 1)).astype(np.float32)
        rows[known] = prior[idx[known]]
        return np.where(known, idx, -1), rows

    # -- outputs -------------------------------------------------------------------------------

    def embed_videos(self, features: Any) -> np.ndarray:
        """(n, D) codes of new videos (the means of their posteriors, deconfounded)."""
        x = torch.from_numpy(self._features(features, "video", "videos")).to(self.device)
        codes = self.method.video_codes(x)
        refuse_non_finite(codes, 0, "codes")
        return codes.cpu().numpy()

    def embed_music(self, features: Any) -> np.ndarray:
        """(n, D) codes of music (means, deconfounded with d̄)."""
        x = torch.from_numpy(self._features(features, "music", "music")).to(self.device)
        codes = self.method.music_codes(x)
        refuse_non_finite(codes, 0, "codes", "music")
        return codes.cpu().numpy()

    def score(self, videos: Any, music: Any = None, uploaders: Any = None) -> np.ndarray:
        """(n videos, n music) scores, exactly as the evaluation scores (re-rankers included);
        ``uploaders``: each video's uploader id, as in the training data."""
        pool = self.music_pool(music)
        x = self._features(videos, "video", "videos")
        idx, prior = self._uploader_rows(self.uploader_index(uploaders, x.shape[0]), x.shape[0])
        return score_all(self.method, x, pool, idx, prior, self.device)

    def recommend(
        self,
        videos: Any,
        k: int = 25,
        uploaders: Any = None,
        pool: Pool | None = None,
        rerank_pool: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` music ids (the data's own) and scores per video (rows in order), over
        ``pool`` (default: the package's). ``uploaders``: each video's uploader id, as in the
        training data (per-uploader strategies read their histories). A re-ranking strategy sees
        the ``rerank_pool`` best candidates (default: the whole pool up to 50,000 music, else
        5,000)."""
        pool = pool or self.pool
        if not 1 <= k <= pool.features.shape[0]:
            raise DataError(f"k = {k}, but the pool holds {pool.features.shape[0]} music")
        x = self._features(videos, "video", "videos")
        idx, prior = self._uploader_rows(self.uploader_index(uploaders, x.shape[0]), x.shape[0])
        cols, scores = top_k(self.method, x, pool, k, idx, prior, self.device, rerank_pool)
        return pool.ids[cols], scores


def _refuse_rows(bad: np.ndarray, what: str, problem: str) -> None:
    if bad.any():
        raise DataError(
            f"{what}: {problem} in {int(bad.sum())} row(s), e.g. row "
            f"{int(np.flatnonzero(bad)[0])}; clean or drop them"
        )


def load(folder: Path | str, device: str = "auto", plugins: Plugins | None = None) -> Recommender:
    """A model package written by ``benchkit run --save`` (or :func:`save_model`), every part of it
    checked before use (:mod:`benchkit.model_card`)."""
    root = Path(folder)
    card = read_card(root)
    spec_values = card["data_spec"]
    pool_arrays = read_arrays(root, "pool.npz")
    check_pool(pool_arrays, spec_values, f"{root / 'pool.npz'}")
    stats: dict[str, Any] = read_arrays(root, "preprocess.npz")
    check_preprocess(stats, spec_values, card["features_norm"], f"{root / 'preprocess.npz'}")
    stats["kind"] = str(stats["kind"])
    priors = read_arrays(root, "uploaders.npz")
    check_uploaders(priors, spec_values, f"{root / 'uploaders.npz'}")
    if "ids" not in priors:  # a package from before ids were kept: the index is the id
        priors["ids"] = np.arange(priors["prior"].shape[0])
    plugins = plugins or get_plugins()
    backbone_cls = _component(plugins, plugins.backbones, card["backbone"], "backbone")
    strategy_classes = [
        _component(plugins, plugins.strategies, s, "strategy") for s in card["strategies"]
    ]
    where = f"model package {root}: weights.pt"
    try:
        state = torch.load(root / "weights.pt", map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{where} cannot be loaded ({_first_line(exc)})") from None
    if not isinstance(state, dict):
        raise DataError(f"{where} holds no state dict")
    check_weights(state, where)

    def build() -> Method:
        spec = DataSpec(**spec_values)
        backbone = backbone_cls(**card["backbone"]["hparams"])
        strategies = [
            cls(**entry["hparams"])
            for cls, entry in zip(strategy_classes, card["strategies"], strict=True)
        ]
        return Method.assemble(backbone, strategies, spec)

    expected = _shapes_without_memory(build)
    if expected is None:
        check_dims_bounded(spec_values, state, where)
    else:
        check_shapes(expected, state, where)
    torch_device = select_device(device)
    method = build()
    try:
        method.load_state_dict(state)
    except Exception as exc:
        raise DataError(f"{where} cannot be loaded ({_first_line(exc)})") from None
    method.to(torch_device).eval()
    pool = Pool(pool_arrays["features"], pool_arrays["genre"], pool_arrays["ids"])
    return Recommender(root, card, method, stats, pool, priors, torch_device)


def _shapes_without_memory(build: Callable[[], Method]) -> dict[str, tuple[int, ...]] | None:
    """The state-dict shapes the card's model has, built on the ``meta`` device (no memory): a
    card whose dimensions disagree with its weights is refused before anything is allocated.
    ``None`` when a plugin cannot be built there."""
    try:
        with torch.device("meta"):
            method = build()
    except Exception:
        return None
    return {k: tuple(v.shape) for k, v in method.state_dict().items()}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _component(plugins: Plugins, registry: Any, entry: dict[str, Any], kind: str) -> Any:
    name = entry["name"]
    if name not in registry:
        raise DataError(
            f"the model needs {kind} {name!r} from plugin {entry.get('plugin')!r} "
            f"({entry.get('distribution')} {entry.get('version')}), which is not installed"
        )
    return registry.get(name)
