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

    def draw_choice(
        self, rows: np.ndarray, taste_scale: float, rng: np.random.Generator
    ) -> np.ndarray:
        """One draw of each row's choice from the recorded choice model — the uploader's
        consideration set, content, popularity and taste — with the taste strength scaled by
        ``taste_scale`` (1: the world's own; 0: no taste). A confounder-side intervention."""
        c = self.choice
        if c is None:
            raise ValueError("this world predates the recorded choice model; regenerate it")
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty(rows.size, dtype=np.int64)
        for s in range(0, rows.size, 1024):
            part = rows[s : s + 1024]
            upl = c.video_uploader[part]
            t = c.video_time[part][:, None]
            log_taste = (1 - t) * np.log(c.taste0[upl]) + t * np.log(c.taste1[upl])
            logits = (
                c.content_strength * self.compatibility(part)
                + c.offsets[None, :]
                + taste_scale * c.taste_strength * log_taste[:, c.music_genre]
            )
            logits = np.where(c.consider[upl], logits, -np.inf)
            out[s : s + part.size] = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
        return out

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
        # The sampled uploaders' consideration sets, split by genre: (U, M_g) each.
        consider = t(c.consider)[self.uploaders]
        self.genre_cols = [torch.nonzero(genre == g).flatten() for g in range(c.taste0.shape[1])]
        self.consider_by_genre = [consider[:, cols].contiguous() for cols in self.genre_cols]
        self.genre_considered = [block.sum(dim=1) > 0 for block in self.consider_by_genre]
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
        weights = self._weights(rows, estimand)
        out = self._mixture(base, weights, self._time(rows))
        bad = ~torch.isfinite(out).all(dim=1)
        if bad.any():  # extreme worlds, where a sum underflowed: sum those rows directly
            idx = torch.nonzero(bad).flatten().cpu().numpy()
            out[bad] = self._mixture_direct(base[bad], weights[bad], self._time(rows[idx]))
        return out

    def _time(self, rows: np.ndarray) -> Tensor:
        return torch.as_tensor(self.c.video_time[rows], dtype=torch.float64, device=self.device)

    def _weights(self, rows: np.ndarray, estimand: str) -> Tensor:
        """w(u | v): (n, U), P(u) for the backdoor, P(u | v) for the observed choice."""
        if estimand == "backdoor":
            log_w = self.log_weight.expand(len(rows), -1)
        else:
            log_w = self.log_weight[None, :] + self._log_likelihood(rows, self._time(rows))
        return torch.softmax(log_w, dim=1)

    def _mixture(self, base: Tensor, weights: Tensor, time: Tensor) -> Tensor:
        """Σ_u w(u | v) P(m | v, u): (n, M), as matrix products.

        P(m | v, u) = e^{base_vm} · C_um · e^{A_vu,g(m)} / Z_vu, where C is u's consideration set,
        A_vug = τ · log taste_u(t_v)[g] depends on m only through its genre g, and Z_vu is the
        normaliser. Per genre, Z's partial sums S_vug = Σ_{m∈g} e^{base_vm} C_um are one product
        (videos × music_g)·(music_g × uploaders), and the mixture is another: P(m ∈ g | v) =
        e^{base_vm} · Σ_u [w_vu e^{A_vug} / Z_vu] C_um. Summing the (videos, uploaders, music)
        logits directly cost hours for a paper-scale test set; this costs seconds. Exponentials
        are shifted by each genre's maximum base score (log-sum-exp over genres)."""
        c = self.c
        u = self.uploaders
        log_t0, log_t1 = self.log_t0[u][None], self.log_t1[u][None]
        n_genres = log_t0.shape[2]
        out = torch.zeros_like(base)
        step = max(1, 2**24 // max(1, u.numel() * n_genres))  # (step, U, G) float64 ≤ 128 MB
        for s in range(0, base.shape[0], step):
            b, w = base[s : s + step].clone(), weights[s : s + step]
            tt = time[s : s + step, None, None]
            av = c.taste_strength * ((1 - tt) * log_t0 + tt * log_t1)  # A_vug
            log_parts: list[Tensor] = []
            shifted: list[tuple[Tensor, Tensor] | None] = []
            for g in range(n_genres):
                cols = self.genre_cols[g]
                if cols.numel() == 0:
                    log_parts.append(torch.full_like(av[:, :, g], -math.inf))
                    shifted.append(None)
                    continue
                bg = b[:, cols]
                top = bg.amax(dim=1, keepdim=True)
                e = torch.exp(bg - top)  # (n, M_g), the largest is 1
                partial = e @ self.consider_by_genre[g].T  # (n, U): S_vug · e^{−top}
                # A considered genre whose sum underflowed (music far below the genre's best):
                # mark the row, get() sums it directly.
                lost = ((partial < 1e-280) & self.genre_considered[g][None, :]).any(dim=1)
                b[lost] = math.nan
                log_parts.append(torch.log(partial) + top + av[:, :, g])
                shifted.append((e, top))
            log_terms = torch.stack(log_parts, dim=2)  # (n, U, G)
            log_z = torch.logsumexp(log_terms, dim=2, keepdim=True)
            for g, pair in enumerate(shifted):
                if pair is None:
                    continue
                e, top = pair
                r = w * torch.exp(av[:, :, g] + top - log_z[:, :, 0])  # (n, U)
                cols = self.genre_cols[g]
                out[s : s + step, cols] = e * (r @ self.consider_by_genre[g])
            out[s : s + step][torch.isnan(b).any(dim=1)] = math.nan
        return out

    def _mixture_direct(self, base: Tensor, weights: Tensor, time: Tensor) -> Tensor:
        """:meth:`_mixture` by summing the (videos, uploaders, music) softmaxes, a few rows at a
        time: exact wherever the factorised form would underflow."""
        u = self.uploaders
        out = torch.empty_like(base)
        step = max(1, 2**22 // max(1, u.numel() * base.shape[1]))
        for s in range(0, base.shape[0], step):
            tt = time[s : s + step, None, None]
            logits = (
                base[s : s + step, None, :]
                + (1 - tt) * self.taste0_m[u][None]
                + tt * self.taste1_m[u][None]
                + self.mask[u][None]
            )  # (n, U, M)
            p = torch.softmax(logits, dim=2)
            out[s : s + step] = torch.einsum("nu,num->nm", weights[s : s + step], p)
        return out

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
