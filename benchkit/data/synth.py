"""The synthetic world: a causal simulator shaped like TT-150k-genre, with the truth exposed.

Causal story (every arrow is a knob of :class:`SynthConfig`; U = the uploader, V = the video,
M = the music, Y = the choice):

- Music and videos live in a hidden *content space*. Each music has a genre; its content is the
  genre's centre plus individual variation. The **true compatibility** of a video and a music is the
  scaled inner product of their contents.
- **Uploaders** have power-law activity and a genre **taste** (Dirichlet): most are concentrated
  (``taste_concentration``), a share ``eclectic_share`` is eclectic (``eclectic_concentration``),
  so that "the most diverse uploaders" (T_diverse) are a real group. A share ``drift_share`` of
  them drifts: their taste moves from one draw to another over the video's ``time`` (written as a
  per-video column), the interest drift DecRS's η is built to detect.
- U → V: part of an uploader's videos have content drawn from their taste
  (``taste_content_coupling``), and every video carries its uploader's **style** — their centred
  log-taste mapped into a style space (``style_strength``) plus per-video noise — which the video
  features show but which does not decide what fits. A model of the observed choices can use the
  style as a shortcut to the uploader's taste: the spurious correlation a deconfounder must break.
- U → M (exposure): an uploader considers only a share ``consideration_share`` of the pool, drawn
  ∝ taste^``exposure_taste``: the "limited knowledge of uploaders" that PGC does not share.
- U → Y: the choice maximises ``content_strength·compat + taste_strength·log taste(t)[genre] +
  popularity + Gumbel`` over the consideration set. Music left with fewer than the minimum videos
  take them from the videos that rate them highest (the real dataset was filtered the same way).
- **Popularity** is a property of the music: per-music offsets fitted (iterative proportional
  fitting) so that the *unbiased* choices (no taste, the whole pool) follow Table 2's shape — mean
  n_videos/n_music, coefficient of variation ``popularity_skew`` (57/49), within
  ``popularity_range`` (3 … 219).
- The **counterfactual choice** re-uses the same Gumbel noise with the taste off and the whole pool
  in view (do(taste = uniform)): the music this video would have had without the uploader's bias.
  The whole choice model is recorded (:mod:`benchkit.data.truth`), so the interventional
  distributions are exact, not one draw.
- **Views** grow with how well a video's music fits (``views_strength``): an observable column for
  the T_matching test set.
- **Features** are noisy views of the latents: 2048-d non-negative "ResNet-like" video features
  (content, nuisance, style) and 128 "VGGish-like" + 128 normalised "OpenSMILE-like" music features.
  ``feature_map="realistic"`` makes them look like real extractors' output: a nonlinear (two-layer)
  map, post-ReLU heavy tails and per-dimension scales spread over two orders of magnitude for the
  video, and 8-bit quantised VGGish values (0 … 255) for the music.
- **PGC**: separate professional clips (own videos, own music) matched on content alone over their
  whole pool (``pgc_quality`` sets how sharply), in a professional style ``pgc_shift`` away from the
  uploaders' (a domain shift: what the teacher learns transfers, imperfectly).

The default knobs were chosen from the controls alone (README, "The synthetic world"): the smallest
change from a neutral world at which CMVAE trained on the counterfactual choices beats CMVAE trained
on the observed ones by at least 5 points of expected cf_recall@25 on every seed, on the random split
and on T_diverse — before looking at how any debiasing method ranks.

Deterministic per (config, seed); cached on disk by their hash (``$BENCHKIT_CACHE`` or
``~/.cache/benchkit``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
from scipy.special import ndtri

from benchkit.data.cache import load_npz, save_npz
from benchkit.data.dataset import PGC, Dataset
from benchkit.data.splits import random_splits
from benchkit.data.truth import ChoiceModel, Truth
from benchkit.errors import ConfigError, DataError
from benchkit.files import cache_root
from benchkit.hashing import stable_hash
from benchkit.hookspecs import hookimpl
from benchkit.interfaces import DatasetProvider
from benchkit.options import physical_memory

GENERATOR_VERSION = 3
GENRES = ("hiphop", "jazz", "classical", "reggae", "pop", "metal")
FEATURE_MAPS = ("linear", "realistic")
GENRE_COUNTS = (651, 665, 1330, 311, 42, 4)  # TT-150k-genre, paper Table 2


@dataclass(frozen=True)
class SynthConfig:
    """Size and causal strengths of a synthetic world. Presets: ``tiny``, ``small``, ``paper``."""

    n_music: int
    n_videos: int
    n_uploaders: int
    n_pgc_pairs: int
    n_pgc_music: int
    video_dim: int = 2048
    music_dims: tuple[int, int] = (128, 128)
    content_dim: int = 16
    nuisance_dim: int = 16
    genre_spread: float = 0.6  # within-genre variation of content, relative to the centres
    video_spread: float = 0.8  # how far a video's content strays from its genre centre
    content_strength: float = 3.0
    style_dim: int = 8
    taste_strength: float = 2.0
    taste_concentration: float = 0.3  # Dirichlet α per genre: small = concentrated tastes
    eclectic_share: float = 0.3  # share of uploaders with near-uniform (eclectic) tastes
    eclectic_concentration: float = 8.0  # their Dirichlet α per genre
    taste_floor: float = 0.02  # every genre keeps this share of an uploader's taste
    taste_content_coupling: float = 0.3  # share of a video's genre drawn from the taste
    style_strength: float = 1.0  # how strongly the taste marks the uploader's video style
    style_noise: float = 0.5  # per-video variation of that style
    consideration_share: float = 0.25  # share of the pool an uploader considers
    exposure_taste: float = 1.0  # how strongly the taste shapes what an uploader considers
    drift_share: float = 0.2  # share of uploaders whose taste drifts over time
    popularity_skew: float = 57 / 49  # coefficient of variation of videos per music (Table 2)
    popularity_range: tuple[int, int] = (3, 219)  # min / max videos per music (Table 2)
    views_strength: float = 0.5  # how much a good match raises a video's views
    activity_skew: float = 1.1  # Zipf exponent of uploader activity
    pgc_quality: float = 6.0
    pgc_shift: float = 1.0  # the professional style of PGC clips, away from the uploaders'
    feature_noise: float = 0.5
    feature_map: str = "linear"  # or "realistic": nonlinear maps, heavy tails, mixed scales
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)

    def key(self, seed: int) -> str:
        return stable_hash({"v": GENERATOR_VERSION, "seed": seed, **asdict(self)})[:16]


PRESETS: dict[str, SynthConfig] = {
    "tiny": SynthConfig(
        n_music=120,
        n_videos=3000,
        n_uploaders=150,
        n_pgc_pairs=600,
        n_pgc_music=100,
        video_dim=128,
        music_dims=(32, 32),
        nuisance_dim=8,
    ),
    "small": SynthConfig(
        n_music=400,
        n_videos=10000,
        n_uploaders=600,
        n_pgc_pairs=2000,
        n_pgc_music=200,
    ),
    "paper": SynthConfig(
        n_music=3003,
        n_videos=146351,
        n_uploaders=12000,
        n_pgc_pairs=12000,
        n_pgc_music=1500,
    ),
}


def genre_counts(n_music: int) -> np.ndarray:
    """Table 2's genre shares scaled to ``n_music`` (largest remainder), every genre at least one."""
    shares = np.asarray(GENRE_COUNTS, dtype=np.float64) / sum(GENRE_COUNTS)
    raw = shares * n_music
    counts = np.floor(raw).astype(np.int64)
    for i in np.argsort(-(raw - counts))[: n_music - counts.sum()]:
        counts[i] += 1
    while (counts == 0).any() and n_music >= len(counts):
        counts[np.argmax(counts)] -= 1
        counts[np.argmin(counts)] += 1
    return counts


def _gumbel_argmax(rng: np.random.Generator, *bases: np.ndarray) -> list[np.ndarray]:
    """Row-wise argmax of ``base + G`` for each base, with one shared draw of Gumbel noise G: the
    choices of the same units in different worlds (the factual and a counterfactual)."""
    g = rng.gumbel(size=bases[0].shape).astype(np.float32)
    return [np.argmax(base + g, axis=1) for base in bases]


def popularity_targets(n_music: int, n_videos: int, cv: float, lo: float, hi: float) -> np.ndarray:
    """Sorted target videos-per-music: log-normal quantiles, clipped to [lo, hi], rescaled to mean
    n_videos / n_music, with σ chosen by bisection so that their coefficient of variation is ``cv``."""
    mean = n_videos / n_music
    lo, hi = min(lo, mean), max(hi, mean)
    z = ndtri((np.arange(n_music) + 0.5) / n_music)

    def shaped(sigma: float) -> np.ndarray:
        x = np.exp(sigma * z)
        for _ in range(100):
            x = np.clip(x * mean / x.mean(), lo, hi)
        return x

    a, b = 1e-3, 4.0
    for _ in range(60):
        mid = 0.5 * (a + b)
        a, b = (mid, b) if shaped(mid).std() / mean < cv else (a, mid)
    return shaped(0.5 * (a + b))


def _softmax_colsum(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z.sum(axis=0)


def _repair_support(
    choice: np.ndarray, n_music: int, lo: int, hi: int, column_logits: Any, row_logits: Any
) -> int:
    """Keep every music's video count within [lo, hi] (in place), as the real dataset's filtering
    did: a music short of ``lo`` takes the videos that rate it highest (from music that can spare
    them); a music over ``hi`` sends its lowest-rating videos to their next-best music with room.
    Returns how many videos moved (a small share; reported in the world's metadata)."""
    counts = np.bincount(choice, minlength=n_music)
    moved = 0
    for m in np.flatnonzero(counts > hi):
        mine = np.flatnonzero(choice == m)
        worst = mine[np.argsort(column_logits(m)[mine])][: counts[m] - hi]
        alternatives = row_logits(worst)
        for v, row in zip(worst, alternatives, strict=True):
            row[counts >= hi] = -np.inf
            row[m] = -np.inf
            choice[v] = int(np.argmax(row))
            counts[m] -= 1
            counts[choice[v]] += 1
            moved += 1
    for m in np.flatnonzero(counts < lo):
        column = column_logits(m)
        for v in np.argsort(-column):
            if counts[m] >= lo or not np.isfinite(column[v]):
                break
            if choice[v] != m and counts[choice[v]] > lo:
                counts[choice[v]] -= 1
                choice[v] = m
                counts[m] += 1
                moved += 1
    return moved


class _Content:
    """Genre centres and the content/feature maps shared by UGC and PGC clips."""

    def __init__(
        self, cfg: SynthConfig, rng: np.random.Generator, r_map: np.random.Generator
    ) -> None:
        k, g = cfg.content_dim, len(GENRES)
        self.cfg = cfg
        self.centres = rng.standard_normal((g, k)).astype(np.float32)
        nz, st = cfg.nuisance_dim, cfg.style_dim
        fan_in = k + nz + st
        self.w_video = rng.standard_normal((fan_in, cfg.video_dim)).astype(np.float32)
        self.w_video /= np.sqrt(fan_in)
        self.b_video = rng.normal(-0.3, 0.3, size=cfg.video_dim).astype(np.float32)
        d1, d2 = cfg.music_dims
        self.w_vggish = rng.standard_normal((k + nz, d1)).astype(np.float32) / np.sqrt(k + nz)
        self.w_smile = rng.standard_normal((k + nz, d2)).astype(np.float32) / np.sqrt(k + nz)
        # Uploader style: a direction in style space per genre (log-taste → style).
        self.style_map = rng.standard_normal((g, st)).astype(np.float32) / np.sqrt(g)
        self.pgc_style = rng.standard_normal(st).astype(np.float32)
        self.pgc_style /= max(float(np.linalg.norm(self.pgc_style)), 1e-9) / np.sqrt(max(st, 1))
        self.compat_scale = 1.0
        if cfg.feature_map == "realistic":  # its own stream: the linear world's draws stay put
            hidden = 256
            self.v1 = r_map.standard_normal((fan_in, hidden)).astype(np.float32) / np.sqrt(fan_in)
            self.v2 = r_map.standard_normal((hidden, cfg.video_dim)).astype(np.float32)
            self.v2 /= np.sqrt(hidden)
            self.v2_bias = r_map.normal(-0.5, 0.5, size=cfg.video_dim).astype(np.float32)
            # Heterogeneous, heavy-tailed scales across feature dimensions (pooled CNN features).
            self.v_scale = np.exp(r_map.normal(0.0, 1.0, size=cfg.video_dim)).astype(np.float32)
            self.m1 = r_map.standard_normal((k + nz, hidden)).astype(np.float32) / np.sqrt(k + nz)
            self.m2 = r_map.standard_normal((hidden, d1)).astype(np.float32) / np.sqrt(hidden)

    def music_content(self, rng: np.random.Generator, genre: np.ndarray) -> np.ndarray:
        noise = rng.standard_normal((genre.size, self.cfg.content_dim)).astype(np.float32)
        return self.centres[genre] + self.cfg.genre_spread * noise

    def video_content(self, rng: np.random.Generator, genre: np.ndarray) -> np.ndarray:
        noise = rng.standard_normal((genre.size, self.cfg.content_dim)).astype(np.float32)
        return self.centres[genre] + self.cfg.video_spread * noise

    def uploader_style(self, taste: np.ndarray) -> np.ndarray:
        """The style an uploader's videos share: their centred log-taste mapped into style space,
        so that a concentrated taste leaves a mark on the video and an eclectic one almost none."""
        log_taste = np.log(taste)
        centred = log_taste - log_taste.mean(axis=1, keepdims=True)
        return (self.cfg.style_strength * centred @ self.style_map).astype(np.float32)

    def compat(self, video: np.ndarray, music: np.ndarray) -> np.ndarray:
        return (video @ music.T) / np.sqrt(self.cfg.content_dim) / self.compat_scale

    def video_features(
        self, rng: np.random.Generator, content: np.ndarray, style: np.ndarray
    ) -> np.ndarray:
        out = np.empty((content.shape[0], self.cfg.video_dim), dtype=np.float32)
        for s in range(0, content.shape[0], 8192):
            c = content[s : s + 8192]
            z = np.concatenate(
                [
                    c,
                    rng.standard_normal((c.shape[0], self.cfg.nuisance_dim), dtype=np.float32),
                    style[s : s + 8192],
                ],
                axis=1,
            )
            if self.cfg.feature_map == "realistic":
                h = np.maximum(z @ self.v1, 0.0)
                x = h @ self.v2 + self.v2_bias
                x += self.cfg.feature_noise * rng.standard_normal(x.shape, dtype=np.float32)
                out[s : s + 8192] = np.maximum(x, 0.0) ** 1.5 * self.v_scale
            else:
                x = z @ self.w_video + self.b_video
                x += self.cfg.feature_noise * rng.standard_normal(x.shape, dtype=np.float32)
                out[s : s + 8192] = np.maximum(x, 0.0)
        return out

    def music_features(self, rng: np.random.Generator, content: np.ndarray) -> np.ndarray:
        n = content.shape[0]
        z = np.concatenate(
            [content, rng.standard_normal((n, self.cfg.nuisance_dim), dtype=np.float32)], axis=1
        )
        noise = self.cfg.feature_noise
        vggish = z @ self.w_vggish + noise * rng.standard_normal(
            (n, self.w_vggish.shape[1]), dtype=np.float32
        )
        if self.cfg.feature_map == "realistic":  # VGGish's released form: 8-bit quantised
            h = np.maximum(z @ self.m1, 0.0) @ self.m2 + 0.5 * vggish
            vggish = np.clip(np.round(128 + 48 * np.tanh(h)), 0, 255)
        smile = np.tanh(z @ self.w_smile) + noise * rng.standard_normal(
            (n, self.w_smile.shape[1]), dtype=np.float32
        )
        smile = (smile - smile.mean(axis=0)) / (smile.std(axis=0) + 1e-6)
        return np.concatenate([vggish, smile], axis=1).astype(np.float32)


def _tastes(cfg: SynthConfig, rng: np.random.Generator, g: int) -> tuple[np.ndarray, ...]:
    """(taste at t = 0, taste at t = 1, eclectic flags, drifting flags) per uploader."""
    u = cfg.n_uploaders
    eclectic = rng.random(u) < cfg.eclectic_share
    alpha = np.where(eclectic, cfg.eclectic_concentration, cfg.taste_concentration)

    def draw() -> np.ndarray:
        t = np.stack([rng.dirichlet(np.full(g, a)) for a in alpha])
        return (1 - cfg.taste_floor * g) * t + cfg.taste_floor

    taste0 = draw()
    drifting = rng.random(u) < cfg.drift_share
    taste1 = np.where(drifting[:, None], draw(), taste0)
    return taste0, taste1, eclectic, drifting


def taste_at(taste0: np.ndarray, taste1: np.ndarray, time: np.ndarray) -> np.ndarray:
    """Each row's taste at its time: geometric interpolation from ``taste0`` (t = 0) to
    ``taste1`` (t = 1), renormalised."""
    log = (1 - time[:, None]) * np.log(taste0) + time[:, None] * np.log(taste1)
    out = np.exp(log - log.max(axis=1, keepdims=True))
    return out / out.sum(axis=1, keepdims=True)


def _consideration(
    cfg: SynthConfig,
    rng: np.random.Generator,
    taste: np.ndarray,
    music_genre: np.ndarray,
) -> np.ndarray:
    """(U, M) bool: the music each uploader sees. A share ``consideration_share`` of the pool,
    drawn without replacement (Gumbel top-k) ∝ taste[genre] ** exposure_taste. (Popularity needs no
    second say here: it already weighs each choice.)"""
    u, m = taste.shape[0], music_genre.size
    if cfg.consideration_share >= 1.0:
        return np.ones((u, m), dtype=bool)
    k = max(1, round(cfg.consideration_share * m))
    keys = cfg.exposure_taste * np.log(taste[:, music_genre])
    keys = keys + rng.gumbel(size=keys.shape)
    top = np.argpartition(-keys, k - 1, axis=1)[:, :k]
    out = np.zeros((u, m), dtype=bool)
    np.put_along_axis(out, top, True, axis=1)
    return out


def generate(cfg: SynthConfig, seed: int = 0, name: str = "synth", step: Any = None) -> Dataset:
    """Simulate one world. Every component draws from its own stream, so changing one knob (say
    the PGC size) leaves the others' draws unchanged. ``step(stage)`` hears each stage end."""
    if cfg.n_music < 2 or cfg.n_videos < 10 or cfg.n_uploaders < 1:
        raise ConfigError("synthetic world too small: need ≥ 2 music, ≥ 10 videos, ≥ 1 uploader")
    _check_config(cfg)
    rows = cfg.n_videos + cfg.n_pgc_pairs
    need = 4 * (rows * cfg.video_dim + (cfg.n_music + cfg.n_pgc_music) * sum(cfg.music_dims))
    need += 8 * cfg.n_uploaders * (len(GENRES) + 4)  # each uploader's taste and activity
    if need > physical_memory():
        raise ConfigError(
            f"synthetic world too large: its features and uploaders alone take "
            f"{need / 2**30:.1f} GiB, more than this machine's {physical_memory() / 2**30:.1f} GiB"
        )
    try:
        world = _simulate(cfg, seed, name, step or (lambda _stage: None))
    except MemoryError:
        raise ConfigError(
            f"synthetic world too large for this machine's memory (n_videos {cfg.n_videos:,}, "
            f"n_music {cfg.n_music:,}, video_dim {cfg.video_dim})"
        ) from None
    assert world.truth is not None
    if not all(np.isfinite(a).all() for a in world.truth.arrays().values() if a.dtype.kind == "f"):
        raise ConfigError(
            "synthetic world: the knobs overflow the choice model (its truth is not finite); "
            "use smaller strengths"
        )
    return world


def _simulate(cfg: SynthConfig, seed: int, name: str, step: Any) -> Dataset:
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(11)]
    r_space, r_music, r_upl, r_video, r_choice, r_feat, r_pgc, r_split, r_expo, r_style = streams[
        :10
    ]
    g = len(GENRES)
    space = _Content(cfg, r_space, streams[10])

    # Music: genres in Table 2's shares, content; popularity targets in random order.
    counts = genre_counts(cfg.n_music)
    music_genre = r_music.permutation(np.repeat(np.arange(g), counts))
    music_content = space.music_content(r_music, music_genre)
    lo, hi = cfg.popularity_range
    target = r_music.permutation(
        popularity_targets(cfg.n_music, cfg.n_videos, cfg.popularity_skew, lo, hi)
    )

    # Uploaders: Zipf activity, Dirichlet tastes (eclectic or concentrated), some drifting.
    activity = (np.arange(cfg.n_uploaders) + 1.0) ** (-cfg.activity_skew)
    taste0, taste1, eclectic, drifting = _tastes(cfg, r_upl, g)
    video_uploader = r_upl.choice(cfg.n_uploaders, size=cfg.n_videos, p=activity / activity.sum())
    consider = _consideration(cfg, r_expo, taste0, music_genre)
    up_style = space.uploader_style(taste0)

    # Videos: a time, content near a genre centre drawn (for a coupled share) from the uploader's
    # taste at that time, and the uploader's style plus noise.
    video_time = r_video.random(cfg.n_videos)
    taste_v = taste_at(taste0[video_uploader], taste1[video_uploader], video_time)
    mix = counts / counts.sum()
    coupled = r_video.random(cfg.n_videos) < cfg.taste_content_coupling
    cum = np.cumsum(taste_v, axis=1)
    from_taste = (r_video.random((cfg.n_videos, 1)) > cum).sum(axis=1).clip(max=g - 1)
    video_genre = np.where(coupled, from_taste, r_video.choice(g, size=cfg.n_videos, p=mix))
    video_content = space.video_content(r_video, video_genre)
    video_style = up_style[video_uploader] + cfg.style_noise * r_style.standard_normal(
        (cfg.n_videos, cfg.style_dim)
    ).astype(np.float32)

    # Standardise compatibility so that the strengths are in logit units.
    probe = r_space.choice(cfg.n_videos, size=min(cfg.n_videos, 512), replace=False)
    space.compat_scale = float(space.compat(video_content[probe], music_content).std()) or 1.0

    log_taste_v = (cfg.taste_strength * np.log(taste_v)).astype(np.float32)
    mask = np.where(consider, 0.0, -np.inf).astype(np.float32)
    chunks = [slice(s, min(s + 4096, cfg.n_videos)) for s in range(0, cfg.n_videos, 4096)]

    def logits(rows: Any, offsets: np.ndarray, factual: bool = True) -> np.ndarray:
        out = cfg.content_strength * space.compat(video_content[rows], music_content) + offsets
        if factual:  # the uploader's taste, over the music they consider
            out += log_taste_v[rows][:, music_genre] + mask[video_uploader[rows]]
        return out.astype(np.float32)

    step("music, uploaders and videos")

    # Popularity offsets: iterative proportional fitting of the expected *unbiased* choices (no
    # taste, the whole pool in view) to the targets. Popularity is then a property of the music,
    # and the observed choices carry the uploaders' bias on top of it.
    offsets = np.zeros(cfg.n_music, dtype=np.float32)
    for _ in range(12):
        expected = sum(_softmax_colsum(logits(rows, offsets, factual=False)) for rows in chunks)
        offsets += np.log(target / np.maximum(expected, 1e-9)).astype(np.float32)
    step("popularity fitted")

    # Selection, and the counterfactual with the same noise, no taste and the whole pool in view.
    video_music = np.empty(cfg.n_videos, dtype=np.int64)
    counterfactual = np.empty(cfg.n_videos, dtype=np.int64)
    for rows in chunks:
        video_music[rows], counterfactual[rows] = _gumbel_argmax(
            r_choice, logits(rows, offsets), logits(rows, offsets, factual=False)
        )

    def column(m: int) -> np.ndarray:
        one = music_content[m : m + 1]
        return (
            cfg.content_strength * space.compat(video_content, one)[:, 0]
            + offsets[m]
            + log_taste_v[:, music_genre[m]]
            + mask[video_uploader, m]
        )

    mean = cfg.n_videos / cfg.n_music
    moved = _repair_support(
        video_music,
        cfg.n_music,
        int(min(lo, mean)),
        int(max(hi, mean)),
        column,
        lambda videos: logits(videos, offsets),
    )

    step("choices drawn")

    # Views: better-matched videos are watched more (an observable column).
    fit = (video_content * music_content[video_music]).sum(axis=1) / (
        np.sqrt(cfg.content_dim) * space.compat_scale
    )
    views = np.exp(6.0 + cfg.views_strength * fit + r_video.normal(0.0, 1.0, cfg.n_videos))

    video_features = space.video_features(r_feat, video_content, video_style)
    music_features = space.music_features(r_feat, music_content)

    step("features drawn")

    # PGC: own clips, matched on content alone over their whole pool, in a professional style
    # (``pgc_shift``: how far it lies from the uploaders' styles — a domain shift).
    pgc_genre = r_pgc.permutation(np.repeat(np.arange(g), genre_counts(cfg.n_pgc_music)))
    pgc_music_content = space.music_content(r_pgc, pgc_genre)
    pgc_video_content = space.video_content(r_pgc, r_pgc.choice(g, size=cfg.n_pgc_pairs, p=mix))
    pgc_style = cfg.pgc_shift * space.pgc_style + cfg.style_noise * r_pgc.standard_normal(
        (cfg.n_pgc_pairs, cfg.style_dim)
    ).astype(np.float32)
    pgc_choice = np.empty(cfg.n_pgc_pairs, dtype=np.int64)
    for s in range(0, cfg.n_pgc_pairs, 4096):
        rows = slice(s, min(s + 4096, cfg.n_pgc_pairs))
        base = cfg.pgc_quality * space.compat(pgc_video_content[rows], pgc_music_content)
        (pgc_choice[rows],) = _gumbel_argmax(r_pgc, base)
    pgc_order = r_split.permutation(cfg.n_pgc_pairs)
    n_pgc_val = max(1, cfg.n_pgc_pairs // 10)
    pgc = PGC(
        video_features=space.video_features(r_pgc, pgc_video_content, pgc_style),
        music_features=space.music_features(r_pgc, pgc_music_content),
        pairs=np.stack([np.arange(cfg.n_pgc_pairs), pgc_choice], axis=1),
        splits={"train": np.sort(pgc_order[n_pgc_val:]), "val": np.sort(pgc_order[:n_pgc_val])},
        music_genre=pgc_genre,
    )

    # Uploaders without videos are dropped; ids stay dense.
    used, video_uploader = np.unique(video_uploader, return_inverse=True)
    weight = np.bincount(video_uploader, minlength=used.size) / cfg.n_videos
    choice = ChoiceModel(
        content_strength=cfg.content_strength,
        taste_strength=cfg.taste_strength,
        coupling=cfg.taste_content_coupling,
        video_spread=cfg.video_spread,
        style_noise=cfg.style_noise,
        offsets=offsets,
        music_genre=music_genre,
        taste0=taste0[used].astype(np.float64),
        taste1=taste1[used].astype(np.float64),
        uploader_weight=weight,
        consider=consider[used],
        centres=space.centres,
        genre_mix=mix,
        uploader_style=up_style[used],
        video_style=video_style,
        video_time=video_time,
        video_uploader=video_uploader,
    )
    splits = random_splits(cfg.n_videos, r_split, cfg.split)
    return Dataset(
        name=name,
        video_features=video_features,
        music_features=music_features,
        video_music=video_music,
        splits=splits,
        video_uploader=video_uploader,
        music_genre=music_genre,
        genre_names=GENRES,
        pgc=pgc,
        truth=Truth(
            video_content, music_content, counterfactual, scale=space.compat_scale, choice=choice
        ),
        video_columns={
            "views": views.astype(np.float32),
            "time": video_time.astype(np.float32),
        },
        content_id=cfg.key(seed),
        meta={
            "generator": "benchkit.synth",
            "version": GENERATOR_VERSION,
            "seed": seed,
            "config": asdict(cfg),
            "uploader_taste": taste0[used].astype(np.float32),
            "uploader_eclectic": eclectic[used],
            "uploader_drifting": drifting[used],
            "popularity_offsets": offsets,
            "videos_moved_by_support_repair": moved,
        },
    )


def _knob(name: str, default: Any, value: Any) -> Any:
    """``value`` as the type of the knob's default (a number of the right kind, a string, a list
    of numbers as long as the default's), or one line saying what the knob takes."""

    def number(x: Any, like: Any) -> Any:
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise TypeError
        if isinstance(like, int):
            if not float(x).is_integer():
                raise TypeError
            return int(x)
        if not math.isfinite(x):
            raise TypeError
        return float(x)

    try:
        if isinstance(default, tuple):
            if not isinstance(value, (list, tuple)) or len(value) != len(default):
                raise TypeError
            return tuple(number(x, d) for x, d in zip(value, default, strict=True))
        if isinstance(default, str):
            if not isinstance(value, str):
                raise TypeError
            return value
        return number(value, default)
    except TypeError:
        kind = (
            f"a list of {len(default)} numbers"
            if isinstance(default, tuple)
            else "a string"
            if isinstance(default, str)
            else "an integer"
            if isinstance(default, int)
            else "a finite number"
        )
        shown = list(default) if isinstance(default, tuple) else default
        raise ConfigError(
            f"synthetic world: {name} takes {kind} (default {shown}), not {value!r}"
        ) from None


def _check_config(cfg: SynthConfig) -> None:
    """Knob values that would make no world (one line each, before any work)."""
    unit = {
        "taste_content_coupling": cfg.taste_content_coupling,
        "eclectic_share": cfg.eclectic_share,
        "drift_share": cfg.drift_share,
    }
    for knob, value in unit.items():
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"synthetic world: {knob} must be in [0, 1], got {value}")
    if not 0.0 < cfg.consideration_share <= 1.0:
        raise ConfigError("synthetic world: consideration_share must be in (0, 1]")
    positive = {
        "taste_concentration": cfg.taste_concentration,
        "eclectic_concentration": cfg.eclectic_concentration,
        "video_spread": cfg.video_spread,
        "genre_spread": cfg.genre_spread,
    }
    for knob, value in positive.items():
        if value <= 0:
            raise ConfigError(f"synthetic world: {knob} must be positive, got {value}")
    if not 0.0 <= cfg.taste_floor * len(GENRES) < 1.0:
        raise ConfigError(f"synthetic world: taste_floor must be in [0, {1 / len(GENRES):.3f})")
    for knob in ("content_dim", "video_dim"):
        if getattr(cfg, knob) < 1:
            raise ConfigError(f"synthetic world: {knob} must be at least 1")
    for knob in ("nuisance_dim", "style_dim"):
        if getattr(cfg, knob) < 0:
            raise ConfigError(f"synthetic world: {knob} must be non-negative")
    lo, hi = cfg.popularity_range
    if not lo <= hi:
        raise ConfigError(f"synthetic world: popularity_range must be [low, high], got {[lo, hi]}")
    if not all(f > 0 for f in cfg.split) or abs(sum(cfg.split) - 1.0) > 1e-6:
        raise ConfigError(
            f"synthetic world: split must be positive fractions summing to 1, got {list(cfg.split)}"
        )
    if not all(d >= 1 for d in cfg.music_dims):
        raise ConfigError(f"synthetic world: music_dims must be at least 1, got {cfg.music_dims}")
    biggest = max(abs(getattr(cfg, f.name)) for f in fields(cfg) if f.type == "float")
    if biggest > 1e6:
        raise ConfigError(f"synthetic world: a knob of {biggest:g} is beyond any sensible scale")
    count = max(abs(getattr(cfg, f.name)) for f in fields(cfg) if f.type == "int")
    if count > 2**31 - 1:
        raise ConfigError(f"synthetic world: a count of {count:,} is beyond any sensible scale")
    if cfg.feature_map not in FEATURE_MAPS:
        raise ConfigError(
            f"synthetic world: feature_map must be one of {', '.join(FEATURE_MAPS)}, "
            f"not {cfg.feature_map!r}"
        )


# ----------------------------------------------------------------------------------------------
# Cache


def make_world(
    preset: str | SynthConfig = "small",
    seed: int = 0,
    *,
    cache: bool = True,
    log: Any = None,
    **overrides: Any,
) -> Dataset:
    """The synthetic world for a preset (or config) and seed, from the disk cache when present.

    ``overrides`` change individual knobs of the preset, e.g. ``taste_strength=0``.
    """
    if isinstance(preset, SynthConfig):
        cfg, label = preset, "custom"
    else:
        if preset not in PRESETS:
            raise ConfigError(f"unknown synthetic preset {preset!r}; presets: {', '.join(PRESETS)}")
        cfg, label = PRESETS[preset], preset
    if overrides:
        valid = {f.name for f in fields(SynthConfig)}
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise ConfigError(
                f"unknown synthetic-world knob(s) {', '.join(unknown)}; "
                f"valid: {', '.join(sorted(valid))}"
            )
        cfg = replace(cfg, **{k: _knob(k, getattr(cfg, k), v) for k, v in overrides.items()})
        label += "+" + cfg.key(seed)[:6]
    name = f"synth-{label}"
    _check_config(cfg)  # before the cache: a world cached under bad knobs is never served
    if not cache:
        return generate(cfg, seed, name)
    path = cache_root() / "synth" / f"{name}-s{seed}-{cfg.key(seed)}.npz"
    say = log or (lambda _m: None)
    if path.exists():
        try:
            return load_npz(path)
        except Exception as exc:  # a truncated or damaged cache entry: rebuild it, once
            say(f"the cached world {path} is damaged ({type(exc).__name__}: {exc}); rebuilding it")
    else:
        say(
            f"building the synthetic world {name} (seed {seed}) — once: it is cached for later runs"
        )
    started = time.perf_counter()

    def step(stage: str) -> None:  # a slow build says how far it got
        elapsed = time.perf_counter() - started
        if elapsed >= PROGRESS_AFTER_SECONDS:
            say(f"  {name}: {stage} ({_duration(elapsed)})")

    ds = generate(cfg, seed, name, step)
    took = _duration(time.perf_counter() - started)
    try:
        save_npz(ds, path)
    except DataError as exc:  # an unwritable cache: the world still serves this run
        say(f"{exc}; set BENCHKIT_CACHE to a writable folder to keep worlds between runs")
    else:
        say(f"built {name} in {took}; cached at {path}, so later runs skip these {took}")
    return ds


PROGRESS_AFTER_SECONDS = 5.0


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


class SynthProvider(DatasetProvider):
    """The built-in synthetic world (presets tiny, small, paper)."""

    name = "synth"
    description = (
        "causal simulator shaped like TT-150k-genre, truth exposed (presets: "
        + ", ".join(PRESETS)
        + ")"
    )

    def load(self, **options: Any) -> Dataset:
        return make_world(**options)


@hookimpl
def register_datasets(register: Any) -> None:
    register(SynthProvider())
