"""Calibration (Steck, RecSys 2018): a greedy re-ranker at evaluation, no training. docs/methods.md.

For each test video, p = its uploader's genre distribution d_u; q(L) = the mean genre one-hot of a
list L; q̃ = (1 − α) q + α p (α = 0.01); C_KL = Σ_g p_g log(p_g / q̃_g) (terms with p_g = 0 skipped).
The list is built greedily, maximising (1 − λ) Σ_{i ∈ L} s(v, i) − λ C_KL(p, q̃(L)) with scores
min-max normalised per video (λ = 0.5). The greedy lists are prefix-consistent, so one pass of
``list_length`` (25 = the largest K) serves every K. Music of unknown genre count in q(L) as an
"unknown" genre that p never has. Ties in the objective are broken uniformly at random (a fixed
per-call seed), never by array order. The chosen items are re-scored above every other candidate,
in list order; the others keep their normalised scores.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from benchkit import hookimpl
from benchkit import interfaces as bk
from benchkit.errors import ConfigError


def calibrated_lists(
    scores: Tensor,
    genres: Tensor,
    prior: Tensor,
    k: int,
    lam: float,
    alpha: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """(n, min(k, C)) column indices chosen greedily, in order. ``genres`` (n, C) in 0 … G−1 or −1."""
    n, c = scores.shape
    g = prior.shape[1]
    lo = scores.min(dim=1, keepdim=True).values
    hi = scores.max(dim=1, keepdim=True).values
    s = (scores - lo) / (hi - lo).clamp_min(1e-12)
    slot = torch.where(genres < 0, torch.full_like(genres, g), genres)  # unknown → slot G
    p = torch.cat([prior, prior.new_zeros(n, 1)], dim=1).double()  # (n, G + 1)
    counts = torch.zeros_like(p)
    # Random tie-breaking: visit candidates in a random order; argmax then takes the first.
    perm = torch.argsort(
        torch.rand(n, c, generator=generator, device="cpu").to(scores.device), dim=1
    )
    s, slot = s.gather(1, perm).double(), slot.gather(1, perm)
    taken = torch.zeros(n, c, dtype=torch.bool, device=scores.device)
    eye = torch.eye(g + 1, dtype=torch.float64, device=scores.device)
    support = p > 0
    picks = []
    for t in range(min(k, c)):
        q = (counts[:, None, :] + eye[None]) / (t + 1)  # (n, slot added, G + 1)
        q_tilde = (1 - alpha) * q + alpha * p[:, None, :]
        ratio = torch.where(support[:, None, :], p[:, None, :] / q_tilde, torch.ones_like(q_tilde))
        kl = (p[:, None, :] * torch.log(ratio)).sum(dim=2)  # (n, G + 1): C_KL if that slot is added
        objective = (1 - lam) * s - lam * kl.gather(1, slot)
        objective = objective.masked_fill(taken, float("-inf"))
        best = objective.argmax(dim=1)
        taken[torch.arange(n), best] = True
        counts[torch.arange(n), slot.gather(1, best[:, None]).squeeze(1)] += 1
        picks.append(perm.gather(1, best[:, None]).squeeze(1))
    return torch.stack(picks, dim=1)


class Calibration(bk.Strategy):
    name = "calibration"
    description = "Calibration (Steck 2018): greedy re-ranking towards the uploader's genre mix"
    requires = frozenset({"genres", "uploaders"})
    params = {
        "lam": bk.Param(0.5, bk.PROBABILITY, bk.Space.uniform(0.0, 0.9)),
        "alpha": bk.Param(0.01, bk.UNIT),
        "list_length": bk.Param(25, bk.AT_LEAST_ONE),
        "seed": bk.Param(0, bk.NON_NEGATIVE),
    }

    def rerank(self, scores: Tensor, items: Tensor, rows: bk.Query) -> Tensor:
        if rows.prior is None or rows.music_genre is None:
            raise ConfigError(
                "calibration re-ranks by the uploader's genre mix: it needs the rows' priors and "
                "the pool's genres"
            )
        hp = self.hparams
        gen = torch.Generator().manual_seed(hp["seed"])
        genres = rows.music_genre[items]
        lists = calibrated_lists(
            scores, genres, rows.prior, hp["list_length"], hp["lam"], hp["alpha"], gen
        )
        lo = scores.min(dim=1, keepdim=True).values
        hi = scores.max(dim=1, keepdim=True).values
        out = (scores - lo) / (hi - lo).clamp_min(1e-12)
        top = 2.0 + torch.arange(lists.shape[1], 0, -1, device=scores.device, dtype=out.dtype)
        return out.scatter(1, lists, top.expand_as(lists))


@hookimpl
def register_strategies(register: Any) -> None:
    register(Calibration)
