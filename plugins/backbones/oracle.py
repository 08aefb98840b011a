"""``oracle``: the Bayes-optimal rankers of a synthetic world, computed from its truth.

Not a method: a control that shows, in any table, where the truth lies. It needs a world with
truth (``requires = {"truth"}``) and scores each test video's music by identity, not by features
(:meth:`~benchkit.interfaces.Backbone.score_rows`). ``score`` picks the ranker:

- ``cf``: P(m | v, do(taste = uniform)) — content and popularity, the whole pool in view;
- ``backdoor``: P(m | v, do(u ~ population)) = Σ_u P(u) P(m | v, u) — the backdoor estimand;
- ``biased``: Σ_u P(u | v) P(m | v, u) — the best ranker of the *observed* choices that the video's
  hidden content and style allow: what an ideal model trained on the biased data converges to;
- ``fit``: content alone (popularity-neutral);
- ``compat``: the true compatibility.

``noise`` > 0 adds Gaussian noise of that standard deviation to every (video, music) score —
fixed per video and music within a run, redrawn with the run's seed: a ranker of known,
controllable quality (the calibration benchmark plants effects of known size with it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from benchkit import hookimpl
from benchkit import interfaces as bk
from benchkit.errors import ConfigError

SCORES = {"cf": "cf", "backdoor": "backdoor", "biased": "observed", "fit": "fit", "compat": None}


class Oracle(bk.Scorer):
    name = "oracle"
    description = (
        "the world's Bayes-optimal rankers (score=cf|backdoor|biased|fit|compat); a control"
    )
    requires = frozenset({"truth"})
    params = {
        "score": bk.Param("cf", tuple(SCORES)),
        "noise": bk.Param(0.0, bk.NON_NEGATIVE),
        **bk.Scorer.params,
    }

    def __init__(self, **hparams: Any) -> None:
        super().__init__(**hparams)
        self._truth: Any = None
        self._seed = 0

    def fit_closed_form(self, pairs: Any) -> None:
        """Read the truth of the world the pairs come from (nothing is learned)."""
        dataset = getattr(pairs, "dataset", None)
        if dataset is None or dataset.truth is None:
            raise ConfigError(
                "oracle: needs the world's truth with its training pairs (use --setting ugc)"
            )
        self._truth = dataset.truth
        self._seed = torch.initial_seed()  # the run's seed: the noise is redrawn with it

    def score_rows(self, video: Tensor, music: Tensor, rows: bk.Query) -> Tensor:
        if self._truth is None:
            raise ConfigError("oracle: fit it on a world with truth before scoring")
        ids = rows.video_idx.cpu().numpy()
        cols = rows.column_music_idx
        estimand = SCORES[self.hparams["score"]]
        if estimand is None:
            scores = torch.as_tensor(self._truth.compatibility(ids, cols.cpu().numpy()))
            scores = scores.to(device=video.device, dtype=torch.float32)
        else:
            p = self._truth.probabilities(ids, estimand, video.device)[:, cols]
            # Ranked by log-probability: float32 keeps the order of probabilities to 1e-38.
            scores = torch.log(p.clamp_min(1e-300)).to(torch.float32)
        if self.hparams["noise"] > 0:
            scores = scores + self._noise(ids, cols.cpu().numpy()).to(scores.device)
        return scores

    def _noise(self, ids: np.ndarray, cols: np.ndarray) -> Tensor:
        """N(0, noise²) per (video, music), the same whichever pool or chunk asks for it."""
        n_music = self._truth.music_content.shape[0]
        rows = [
            np.random.default_rng([self._seed, int(v)]).standard_normal(n_music)[cols] for v in ids
        ]
        return torch.as_tensor(np.stack(rows) * self.hparams["noise"], dtype=torch.float32)


@hookimpl
def register_backbones(register: Any) -> None:
    register(Oracle)
