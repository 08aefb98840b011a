"""IPS — inverse propensity scoring (Schnabel et al. 2016; Yang et al., RecSys 2018). docs/methods.md.

Each positive pair's loss is weighted by 1/p, self-normalised in the batch (SNIPS:
Σ w_i ℓ_i / Σ w_i). Propensities (``propensity``):

- ``genre``: p(v, m) = d_u[g(m)], the probability that the uploader picks music of that genre,
  from the uploader's *training* history;
- ``popularity``: p ∝ n_m^((γ+1)/2) with n_m the music's training popularity (γ = 2), scaled so the
  most popular music has p = 1;
- ``column``: the dataset's own propensity column (column 5 of the reference ``train.npy``);
- ``auto`` (default): the column when the dataset ships one, else ``genre``.

All are clipped to [``clip``, 1] (0.1). Weights reach every per-anchor term and the rows of every
cell term of the backbone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from benchkit import hookimpl
from benchkit import interfaces as bk
from benchkit.data.dataset import Dataset
from benchkit.errors import ConfigError

MODES = ("auto", "genre", "popularity", "column")


class IPS(bk.Strategy):
    name = "ips"
    description = "IPS: SNIPS weights 1/p per pair (p = the uploader's genre propensity by default)"
    params = {
        "propensity": bk.Param("auto", MODES),
        "clip": bk.Param(0.1, bk.Range(0.0, 1.0, low_open=True), bk.Space.uniform(0.02, 0.5)),
        "gamma": bk.Param(2.0, bk.NON_NEGATIVE),
    }

    pop: Tensor

    def __init__(self, **hparams: Any) -> None:
        super().__init__(**hparams)
        self.mode = self.hparams["propensity"]

    def requirements(self) -> frozenset[str]:
        return frozenset({"genres", "uploaders"}) if self.mode == "genre" else frozenset()

    def prepare(self, dataset: Dataset, ctx: bk.RunContext) -> None:
        mode = self.hparams["propensity"]
        if mode == "auto":
            mode = "column" if dataset.propensity is not None else "genre"
        if mode == "column" and dataset.propensity is None:
            raise ConfigError(f"ips: dataset {dataset.name!r} has no propensity column")
        if mode == "genre" and not dataset.has("uploaders"):
            raise ConfigError(
                f"ips: genre propensities need genres and uploaders, which dataset "
                f"{dataset.name!r} does not have; use --set ips.propensity=popularity"
            )
        if mode == "popularity":
            n = torch.as_tensor(dataset.train_popularity, dtype=torch.float32).clamp_min(1.0)
            p = (n / n.max()).pow((self.hparams["gamma"] + 1) / 2)
            self.register_buffer("pop", p.to(ctx.device), persistent=False)
        self.mode = mode

    def propensity(self, batch: bk.Batch) -> Tensor:
        if self.mode == "column":
            if batch.propensity is None:
                raise ConfigError("ips: this batch carries no propensity column")
            p = batch.propensity.float()
        elif self.mode == "popularity":
            p = self.pop[batch.music_idx]
        else:
            assert batch.prior is not None and batch.genre is not None
            p = batch.prior.gather(1, batch.genre.clamp_min(0)[:, None]).squeeze(1)
        return p.clamp(self.hparams["clip"], 1.0)

    def weights(self, batch: bk.Batch) -> bk.Weights:
        return bk.Weights(anchor=1.0 / self.propensity(batch))


@hookimpl
def register_strategies(register: Any) -> None:
    register(IPS)
