"""The synthetic world's hidden truth: what real data never has, and the choice model that made it.

A world records every latent variable and the exact choice model, so that the *interventional*
distributions of the choice are known exactly (no single draw, no guess):

- ``cf``       P(m | v, do(taste = uniform)): the uploader sees the whole pool and picks by content
               and popularity only — the music this video would have had without the uploader's
               bias. The positive control trains on one draw of it (``Truth.counterfactual``).
- ``backdoor`` P(m | v, do(u ~ population)) = Σ_u P(u) P(m | v, u): the backdoor adjustment's own
               estimand — the uploader's taste and consideration set averaged over the population
               (P(u) = the share of videos each uploader made), not switched off.
- ``fit``      P(m | v) by content alone (taste off, popularity flat): popularity-neutral.
- ``observed`` Σ_u P(u | v) P(m | v, u): the best any model of the *observed* choices can do from the
               video's hidden content and style — the Bayes-optimal biased ranker.

Everything is computed in torch, chunked over videos; with more uploaders than
:data:`MAX_EXACT_UPLOADERS`, sums over uploaders use a fixed sample drawn ∝ P(u) (a Monte Carlo
estimate, stated in the metadata).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

ESTIMANDS = ("cf", "backdoor", "fit", "observed")
MAX_EXACT_UPLOADERS = 2048


@dataclass(eq=False)
class ChoiceModel:
    """How uploaders picked music: logit(v, m; u) = content_strength · compat(v, m)
    + taste_strength · log taste_u(t_v)[genre(m)] + offset_m, over the music in u's consideration set,
    plus Gumbel noise. A drifting uploader's taste moves geometrically from ``taste0`` to ``taste1``
    over the video's time t ∈ [0, 1]. The video generative model (for P(u | v)): a video's genre
    is drawn from coupling · taste_u(t) + (1 − coupling) · genre_mix, its content is that genre's
    centre + ``video_spread`` · N(0, I), its style is the uploader's style + ``style_noise`` · N(0, I).
    """

    content_strength: float
    taste_strength: float
    coupling: float
    video_spread: float
    style_noise: float
    offsets: np.ndarray  # (M,)
    music_genre: np.ndarray  # (M,)
    taste0: np.ndarray  # (U, G)
    taste1: np.ndarray  # (U, G)
    uploader_weight: np.ndarray  # (U,) P(u): share of videos
    consider: np.ndarray  # (U, M) bool
    centres: np.ndarray  # (G, K)
    genre_mix: np.ndarray  # (G,)
    uploader_style: np.ndarray  # (U, S)
    video_style: np.ndarray  # (N, S)
    video_time: np.ndarray  # (N,)
    video_uploader: np.ndarray  # (N,)


@dataclass(eq=False)
class Truth:
    """The hidden content of every video and music (the true compatibility follows), each video's
    counterfactual choice (one draw with the taste switched off and the whole pool in view, sharing
    the factual draw's noise), and the choice model (:class:`ChoiceModel`, absent in worlds saved by
    benchkit < 0.2)."""

    video_content: np.ndarray
    music_content: np.ndarray
    counterfactual: np.ndarray
    scale: float = 1.0
    choice: ChoiceModel | None = None

    def compatibility(
        self, video_idx: np.ndarray, music_idx: np.ndarray | None = None
    ) -> np.ndarray:
        """True compatibility of videos (rows) with music (columns; all music by default), in the
        units of the selection model (standard deviation ≈ 1 over random pairs)."""
        m = self.music_content if music_idx is None else self.music_content[music_idx]
        v = self.video_content[video_idx]
        return (v @ m.T) / (np.sqrt(v.shape[1]) * self.scale)

    # -- serialisation (cache, reference extras) ------------------------------------------------

    def arrays(self) -> dict[str, np.ndarray]:
        out = {
            "video_content": self.video_content,
            "music_content": self.music_content,
            "counterfactual": self.counterfactual,
        }
        if self.choice is not None:
            for f in fields(ChoiceModel):
                value = getattr(self.choice, f.name)
                if isinstance(value, np.ndarray):
                    out[f"choice_{f.name}"] = value
        return out

    def scalars(self) -> dict[str, float]:
        out = {"scale": float(self.scale)}
        if self.choice is not None:
            for f in fields(ChoiceModel):
                value = getattr(self.choice, f.name)
                if not isinstance(value, np.ndarray):
                    out[f"choice_{f.name}"] = float(value)
        return out

    @classmethod
    def from_parts(cls, arrays: dict[str, np.ndarray], scalars: dict[str, Any]) -> Truth:
        choice = None
        names = [f.name for f in fields(ChoiceModel)]
        parts = {**arrays, **scalars}
        if all(f"choice_{n}" in parts for n in names):
            choice = ChoiceModel(**{n: parts[f"choice_{n}"] for n in names})
        return cls(
            arrays["video_content"],
            arrays["music_content"],
            arrays["counterfactual"],
            scale=float(scalars.get("scale", 1.0)),
            choice=choice,
        )

    # -- interventional distributions -------------------------------------------------------------

    def probabilities(
        self, rows: np.ndarray, estimand: str, device: torch.device | None = None
    ) -> Tensor:
        """(len(rows), M) float64: P(m | v) under ``estimand`` (see the module docstring)."""
        if estimand not in ESTIMANDS:
            raise ValueError(f"estimand must be one of {ESTIMANDS}, not {estimand!r}")
        if self.choice is None:
            raise ValueError("this world predates the recorded choice model; regenerate it")
        device = device or torch.device("cpu")
        engines = self.__dict__.setdefault("_engines", {})
        if device not in engines:
            engines[device] = _Probabilities(self, device)
        return engines[device].get(rows, estimand)


class _Probabilities:
    """The tensors of a choice model on one device, and the four estimands for a chunk of rows."""

    def __init__(self, truth: Truth, device: torch.device) -> None:
        c = truth.choice
        assert c is not None
        self.c, self.truth, self.device = c, truth, device
        d = device

        def t(a: np.ndarray, dtype: torch.dtype = torch.float64) -> Tensor:
            return torch.as_tensor(np.asarray(a), dtype=dtype, device=d)

        self.offsets = t(c.offsets)
        genre = torch.as_tensor(c.music_genre, dtype=torch.long, device=d)
        self.log_t0 = t(np.log(c.taste0))  # (U, G)
        self.log_t1 = t(np.log(c.taste1))
        self.taste0_m = c.taste_strength * self.log_t0[:, genre]  # (U, M)
        self.taste1_m = c.taste_strength * self.log_t1[:, genre]
        self.mask = torch.where(t(c.consider, torch.bool), 0.0, -math.inf).to(torch.float64)
        weight = t(c.uploader_weight)
        self.uploaders = torch.arange(weight.numel(), device=d)
        self.log_weight = torch.log(weight / weight.sum())
        if weight.numel() > MAX_EXACT_UPLOADERS:  # a fixed Monte Carlo sample ∝ P(u)
            gen = torch.Generator().manual_seed(0)
            pick = torch.multinomial(weight.cpu(), MAX_EXACT_UPLOADERS, True, generator=gen)
            self.uploaders = pick.to(d)
            self.log_weight = torch.full(
                (MAX_EXACT_UPLOADERS,),
                -math.log(MAX_EXACT_UPLOADERS),
                dtype=torch.float64,
                device=d,
            )
        self.centres = t(c.centres)
        self.log_mix = t(np.log(np.maximum(c.genre_mix, 1e-300)))
        self.up_style = t(c.uploader_style)

    def compat(self, rows: np.ndarray) -> Tensor:
        return torch.as_tensor(
            self.truth.compatibility(rows), dtype=torch.float64, device=self.device
        )

    def get(self, rows: np.ndarray, estimand: str) -> Tensor:
        c = self.c
        base = c.content_strength * self.compat(rows)
        if estimand == "fit":
            return torch.softmax(base, dim=1)
        base = base + self.offsets
        if estimand == "cf":
            return torch.softmax(base, dim=1)
        out = torch.empty_like(base)
        step = max(1, 2**22 // max(1, self.uploaders.numel() * base.shape[1]))
        for s in range(0, len(rows), step):
            r = rows[s : s + step]
            out[s : s + step] = self._mixture(r, base[s : s + step], estimand)
        return out

    def _mixture(self, rows: np.ndarray, base: Tensor, estimand: str) -> Tensor:
        """Σ_u w(u | v) P(m | v, u) for a few rows: (n, M)."""
        c = self.c
        u = self.uploaders
        time = torch.as_tensor(c.video_time[rows], dtype=torch.float64, device=self.device)
        tt = time[:, None, None]
        logits = (
            base[:, None, :]
            + (1 - tt) * self.taste0_m[u][None]
            + tt * self.taste1_m[u][None]
            + self.mask[u][None]
        )  # (n, U, M)
        p = torch.softmax(logits, dim=2)
        if estimand == "backdoor":
            log_w = self.log_weight.expand(len(rows), -1)
        else:
            log_w = self.log_weight[None, :] + self._log_likelihood(rows, time)
        w = torch.softmax(log_w, dim=1)  # (n, U)
        return torch.einsum("nu,num->nm", w, p)

    def _log_likelihood(self, rows: np.ndarray, time: Tensor) -> Tensor:
        """log p(content_v, style_v | u, t_v) for every (row, uploader): (n, U)."""
        c = self.c
        u = self.uploaders
        tt = time[:, None, None]
        log_taste = (1 - tt) * self.log_t0[u][None] + tt * self.log_t1[u][None]  # (n, U, G)
        taste = torch.softmax(log_taste, dim=2)
        genre_p = c.coupling * taste + (1 - c.coupling) * self.log_mix.exp()[None, None]
        content = torch.as_tensor(
            self.truth.video_content[rows], dtype=torch.float64, device=self.device
        )
        dist = ((content[:, None, :] - self.centres[None]) ** 2).sum(dim=2)  # (n, G)
        log_content = -dist / (2 * c.video_spread**2)
        content_ll = torch.logsumexp(torch.log(genre_p.clamp_min(1e-300)) + log_content[:, None], 2)
        style = torch.as_tensor(c.video_style[rows], dtype=torch.float64, device=self.device)
        if style.shape[1] == 0 or c.style_noise <= 0:
            return content_ll
        sdist = ((style[:, None, :] - self.up_style[u][None]) ** 2).sum(dim=2)
        return content_ll - sdist / (2 * c.style_noise**2)
