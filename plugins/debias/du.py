"""DU — debiasing clicked and unclicked data (Lee et al., SIGIR 2021). docs/methods.md.

Positive and negative cells get separate propensities, each self-normalised over the batch *apart*:
L = (1/B)[Σ_pos (1/θ⁺)/(Σ_pos 1/θ⁺) ℓ⁺ + Σ_neg (1/θ⁻)/(Σ_neg 1/θ⁻) ℓ⁻], with
θ⁺_i = d_u(i)[g(m_i)]^α for the pair's own music and θ⁻_ij = (1 − d_u(i)[g(m_j)])^β for the
in-batch negative music j of video i (α = β = 0.5, both clipped to [0.1, 1]); the weights are 1/θ.
In benchkit's reduction (:func:`benchkit.method.reduce_term`) the positive weights are anchor
weights, normalised to mean 1 over the batch's pairs, and the negative weights cell weights,
normalised to mean 1 over the term's valid cells, each on its own; a pairwise cell (i, j) counts
with 1/θ⁺_i · 1/θ⁻_ij. A cell that pairs a video with its own music (the diagonal) is a positive,
not a negative: its cell weight is 1. Needs a backbone that exposes cell-level terms.
"""

from __future__ import annotations

from typing import Any

import torch

from benchkit import hookimpl
from benchkit import interfaces as bk


class DU(bk.Strategy):
    name = "du"
    description = "DU: positive and negative in-batch cells weighted apart by genre propensities"
    requires = frozenset({"genres", "uploaders"})
    requires_cells = True
    params = {
        "alpha": bk.Param(0.5, bk.NON_NEGATIVE, bk.Space.uniform(0.0, 1.0)),
        "beta": bk.Param(0.5, bk.NON_NEGATIVE, bk.Space.uniform(0.0, 1.0)),
        "clip": bk.Param(0.1, bk.Range(0.0, 1.0, low_open=True)),
    }

    def weights(self, batch: bk.Batch) -> bk.Weights:
        assert batch.prior is not None and batch.genre is not None
        hp = self.hparams
        genre = batch.genre.clamp_min(0)
        own = batch.prior.gather(1, genre[:, None]).squeeze(1)
        others = batch.prior[:, genre]  # (B, B): video i's uploader, genre of music j
        theta_pos = own.pow(hp["alpha"]).clamp(hp["clip"], 1.0)
        theta_neg = (1.0 - others).clamp_min(0.0).pow(hp["beta"]).clamp(hp["clip"], 1.0)
        cell = 1.0 / theta_neg
        cell = torch.where(batch.same_music, torch.ones_like(cell), cell)
        return bk.Weights(anchor=1.0 / theta_pos, cell=cell)


@hookimpl
def register_strategies(register: Any) -> None:
    register(DU)
