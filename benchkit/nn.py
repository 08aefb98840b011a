"""Building blocks that backbone plugins share (and third-party plugins may use).

Kept in the harness so that plugins never import each other: an MLP, the Gaussian encoder and the
decoder of CMVAE-style models, the top-k hinge, Gaussian KL divergences, and a cosine head.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchkit.contracts.values import Latent, LossTerm


class Dropout(nn.Module):
    """Inverted dropout, as ``nn.Dropout``, with a cheaper mask: each unit is kept when a 16-bit
    random integer clears a threshold, four units per 64-bit draw of the generator. On the CPU
    that is about 2× faster than ``rand`` (and 4× faster than the Bernoulli sampler ``nn.Dropout``
    uses) — the mask of the 2,048-wide input features was a tenth of a CMVAE step. The drop
    probability is ``p`` rounded to a multiple of 2⁻¹⁶ (0.2 → 0.199997); kept units are scaled
    by 1 / (1 − p)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.threshold = round(p * 65536) - 32768  # int16 values ≥ this are kept

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        with torch.no_grad():  # the scaled mask is a constant: one multiply forward, one backward
            n = x.numel()
            draws = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device)
            bits = draws.random_(-(2**63), 2**63 - 1).view(torch.int16)[:n].view(x.shape)
            # The comparison writes the float mask directly: a boolean one cast afterwards was
            # two more passes over the 2,048-wide features (≈ 4% of a CMVAE step).
            mask = torch.ge(bits, self.threshold, out=torch.empty_like(x)).mul_(
                1.0 / (1.0 - self.p)
            )
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


def mlp(dims: Sequence[int], dropout: float = 0.0, last_activation: bool = False) -> nn.Sequential:
    """Linear layers ``dims[0] → … → dims[-1]`` with ReLU (and dropout) between them."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2 or last_activation:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(Dropout(dropout))
    return nn.Sequential(*layers)


VARIANCES = ("normalised", "free", "fixed")


class GaussianEncoder(nn.Module):
    """BN → dropout → two linear heads (μ and log σ²); μ is L2-normalised, as in the DebCM/CMVAE
    release, so dot products of means are cosines. ``variance`` treats log σ²:

    - ``normalised`` (as released): L2-normalised too, so σ² stays within [e⁻¹, e] and Σ_d σ² ≥
      ≈0.92·D — with D = 128 a sampled code carries about 11× more noise than signal;
    - ``free``: the linear head as it is (clamped to [−10, 10] for safety);
    - ``fixed``: not learned, σ² = 1/D per dimension (total variance 1, that of the mean).
    """

    def __init__(
        self, in_dim: int, latent_dim: int, dropout: float, variance: str = "normalised"
    ) -> None:
        super().__init__()
        if variance not in VARIANCES:
            raise ValueError(f"variance must be one of {VARIANCES}, not {variance!r}")
        self.variance = variance
        self.bn = nn.BatchNorm1d(in_dim)
        self.dropout = Dropout(dropout)
        self.mu = nn.Linear(in_dim, latent_dim)
        nn.init.xavier_normal_(self.mu.weight)
        if variance != "fixed":
            self.logvar = nn.Linear(in_dim, latent_dim)
            nn.init.xavier_normal_(self.logvar.weight)
        self.fixed_logvar = -math.log(latent_dim)

    def forward(self, x: Tensor) -> Latent:
        h = self.dropout(self.bn(x))
        mu = F.normalize(self.mu(h), dim=1)
        if self.variance == "fixed":
            logvar = torch.full_like(mu, self.fixed_logvar)
        elif self.variance == "free":
            logvar = self.logvar(h).clamp(-10.0, 10.0)
        else:
            logvar = F.normalize(self.logvar(h), dim=1)
        return Latent(mu=mu, logvar=logvar)


class GaussianCodes:
    """Backbone mixin: the codes are two :class:`GaussianEncoder` s, ``self.video_encoder`` and
    ``self.music_encoder`` (CMVAE, Dual-VAE). List it before ``Backbone``."""

    video_encoder: GaussianEncoder
    music_encoder: GaussianEncoder

    def encode_video(self, x: Tensor) -> Latent:
        return self.video_encoder(x)

    def encode_music(self, x: Tensor) -> Latent:
        return self.music_encoder(x)


class UnitCodes:
    """Backbone mixin: the codes are ``self.video_net`` and ``self.music_net``'s outputs on the
    unit sphere (CEVAR, CMVBR, UWML). List it before ``Backbone``."""

    video_net: nn.Module
    music_net: nn.Module

    def encode_video(self, x: Tensor) -> Latent:
        return Latent(F.normalize(self.video_net(x), dim=1))

    def encode_music(self, x: Tensor) -> Latent:
        return Latent(F.normalize(self.music_net(x), dim=1))


class Decoder(nn.Module):
    """BN → dropout → linear → ReLU, as in the CMVAE release."""

    def __init__(self, latent_dim: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(latent_dim)
        self.dropout = Dropout(dropout)
        self.out = nn.Linear(latent_dim, out_dim)
        nn.init.xavier_normal_(self.out.weight)

    def forward(self, z: Tensor) -> Tensor:
        return F.relu(self.out(self.dropout(self.bn(z))))


def row_mse(prediction: Tensor, target: Tensor) -> Tensor:
    """Per-row mean squared error (a reconstruction term): one fused kernel forward and backward,
    about twice as fast on the CPU as ``(prediction - target).pow(2).mean(dim=1)``."""
    return F.mse_loss(prediction, target, reduction="none").sum(dim=1) / prediction.shape[1]


def kl_to_standard(latent: Latent) -> Tensor:
    """Per-row KL(N(μ, σ²) ‖ N(0, I)) = ½ Σ_d (μ² + σ² − 1 − log σ²)."""
    if latent.logvar is None:
        raise ValueError("kl_to_standard needs a Gaussian latent (logvar is None)")
    lv = latent.logvar
    return 0.5 * (latent.mu.pow(2) + lv.exp() - 1.0 - lv).sum(dim=1)


def gaussian_kl(mu_p: Tensor, logvar_p: Tensor, mu_q: Tensor, logvar_q: Tensor) -> Tensor:
    """Per-row analytic KL(N(μ_p, σ_p²) ‖ N(μ_q, σ_q²)) for diagonal Gaussians:
    ½ Σ_d [log(σ_q²/σ_p²) + (σ_p² + (μ_p − μ_q)²)/σ_q² − 1]."""
    var_ratio = (logvar_p - logvar_q).exp()
    return 0.5 * (
        logvar_q - logvar_p + var_ratio + (mu_p - mu_q).pow(2) / logvar_q.exp() - 1.0
    ).sum(dim=1)


def finite_rows(values: Tensor) -> Tensor:
    """(rows,) bool: whether each row holds no NaN or inf. A row's minimum and maximum say so (NaN
    reaches both): two reductions, several times cheaper on a CPU than ``isfinite`` of every
    value, which costs as much as the product that made a block of scores."""
    if values.numel() == 0:
        return torch.ones(values.shape[0], dtype=torch.bool, device=values.device)
    flat = values.reshape(values.shape[0], -1)
    return (flat.amin(dim=1) > -math.inf) & (flat.amax(dim=1) < math.inf)


def select_topk(
    x: Tensor, k: int, dim: int = 1, largest: bool = True, group: int = 4
) -> tuple[Tensor, Tensor]:
    """``x.topk(k, dim, largest, sorted=False)`` of a 2-D tensor: the same values (among equal
    values the indices chosen may differ — ``torch.topk``'s are unspecified too).

    ``torch.topk`` on the CPU selects row by row at about 15 ns per element. Two things make this
    several times faster there. Long rows are first cut down: the k best elements all lie in the
    k groups (every ``w``-th element, ``group`` of them) with the best maxima, and a vectorised
    max over the groups is cheap, so the selection runs on the group maxima (recursively) and
    then on those k groups' elements. And each of those selections finds the k-th best values
    with numpy's SIMD partition (:func:`_partition_topk`). Columns (``dim=0``) are selected as
    the rows of the transpose. Off the CPU, outside float32/float64, or with NaN among the
    values, it is ``torch.topk`` itself.
    """
    fast = x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
    if not fast or x.dim() != 2 or not 0 < k < x.shape[dim]:
        return x.topk(k, dim=dim, largest=largest, sorted=False)
    if dim == 0:
        values, idx = select_topk(x.T.contiguous(), k, 1, largest, group)
        return values.T, idx.T
    x = x.contiguous()
    n, m = x.shape
    w = m // group
    if w < 2 * k:
        return _partition_topk(x, k, largest)
    head = x[:, : w * group].as_strided((n, group, w), (x.stride(0), w, 1))
    heads = head.amax(dim=1) if largest else head.amin(dim=1)
    if bool(heads.isnan().any()):  # a NaN hides its group's other values: no shortcut
        return x.topk(k, dim=1, largest=largest, sorted=False)
    _, best = select_topk(heads, k, 1, largest, group)
    idx = (best[:, :, None] + torch.arange(0, w * group, w)).flatten(1)
    if w * group < m:
        idx = torch.cat([idx, torch.arange(w * group, m).expand(n, -1)], dim=1)
    values, picked = _partition_topk(x.gather(1, idx), k, largest)
    return values, idx.gather(1, picked)


def _partition_topk(x: Tensor, k: int, largest: bool) -> tuple[Tensor, Tensor]:
    """The top k of each row of a contiguous float CPU matrix: numpy's partition (values only)
    gives each row's k-th best value, and the row's elements at least that good are its top k —
    exactly k of them unless values tie at that threshold (or are NaN): those rows go to
    ``torch.topk``."""
    a = x.detach().numpy()
    n, m = a.shape
    if largest:
        kth = np.partition(a, m - k, axis=1)[:, m - k]
        mask = a >= kth[:, None]
    else:
        kth = np.partition(a, k - 1, axis=1)[:, k - 1]
        mask = a <= kth[:, None]
    exact = np.count_nonzero(mask, axis=1) == k
    good = np.flatnonzero(exact)
    idx = np.empty((n, k), dtype=np.int64)
    if good.size < n:
        mask[~exact] = False
        bad = np.flatnonzero(~exact)
        rows = torch.from_numpy(bad)
        idx[bad] = x[rows].topk(k, dim=1, largest=largest, sorted=False).indices.numpy()
    # np.flatnonzero lists the kept cells row by row, k per row: flat index − the row's start
    idx[good] = np.flatnonzero(mask).reshape(-1, k) - (good * m)[:, None]
    index = torch.from_numpy(idx)
    return x.gather(1, index), index


HINGE_VARIANTS = ("paper", "reference")


def hinge_cells(
    scores: Tensor, exclude: Tensor, margin: float, k: int, variant: str = "paper"
) -> LossTerm:
    """Top-k hinge cells of a (B, B) score matrix whose rows are anchors and diagonal positives.

    ``paper``: [δ − S_ii + S_ij]_+ on the k *hardest* negatives (largest S_ij), cells in ``exclude``
    (e.g. another copy of the anchor's own music) never count as negatives.
    ``reference``: the DebCM release's [S_ii − S_ij − δ]_+ on the k largest values (the easiest
    negatives), only the diagonal excluded; the caller gives the term a negative coefficient.
    """
    return hinge_pair(scores, exclude, margin, k, variant, both=False)[0]


def hinge_pair(
    scores: Tensor,
    exclude: Tensor,
    margin: float,
    k: int,
    variant: str = "paper",
    *,
    both: bool = True,
) -> tuple[LossTerm, ...]:
    """:func:`hinge_cells` for the rows (video anchors) and, with ``both``, for the columns (music
    anchors, a ``transposed`` term) of one score matrix; ``exclude`` must be symmetric (same-music
    cells are).

    A cell is monotone in S_ij within its row, so the top k cells are the cells of the top k (for
    the reference, the bottom k) scores: the negatives are chosen on the detached, masked scores,
    and only the k + 1 scores each anchor uses are gathered with gradient. Computing every cell of
    the B × B matrix, masking and selecting them — forward and backward, for each direction — was
    most of a CMVAE step's time outside its matrix products.
    """
    if variant not in HINGE_VARIANTS:
        raise ValueError(f"hinge variant must be paper or reference, not {variant!r}")
    b = scores.shape[0]
    k = min(k, b - 1)
    paper = variant == "paper"
    with torch.no_grad():
        invalid = exclude if paper else torch.eye(b, dtype=torch.bool, device=scores.device)
        # Chosen in float32: torch.topk on bfloat16 (autocast's scores) is 5× slower than the
        # selection on float32 (:func:`select_topk`), and a bfloat16 score is exact in float32.
        fill = float("-inf") if paper else float("inf")
        masked = scores.detach().float().masked_fill(invalid, fill)
    diagonal = torch.arange(b, device=scores.device)[:, None]
    terms = []
    for transposed in (False, True) if both else (False,):
        with torch.no_grad():  # a column's negatives are a row's of the transpose
            chosen, cols = select_topk(masked.T if transposed else masked, k, 1, largest=paper)
        index = torch.cat([diagonal, cols], dim=1)  # the positive, then the negatives
        used = scores.gather(0, index.T).T if transposed else scores.gather(1, index)
        pos, picked = used[:, :1], used[:, 1:]
        if paper:
            cells = (margin - pos + picked).clamp_min(0.0)
        else:
            cells = (pos - picked - margin).clamp(0.0, 1e6)
        valid = torch.isfinite(chosen)
        terms.append(
            LossTerm(
                cells.masked_fill(~valid, float("-inf")),
                kind="cell",
                cols=cols,
                valid=valid,
                transposed=transposed,
            )
        )
    return tuple(terms)


CONFOUNDER_ESTIMATES = ("batch", "global", "sample")


class ConfounderEmbedding(nn.Module):
    """The uploader confounder of the deconfounders: z_u = d @ E, E a learned (G, D) genre
    embedding and d a genre distribution chosen by ``estimate`` in training — ``batch`` (the mean
    of the batch's d_u: DebCM's Monte Carlo estimate of E[d]), ``global`` (the training set's mean
    d̄: DecRS), or ``sample`` (each pair's own d_u: the conditional model of a textbook backdoor
    adjustment) — and always d̄ at inference (``rows`` is ``None`` or a query)."""

    prior_mean: Tensor

    def __init__(self, n_genres: int, dim: int, estimate: str = "batch") -> None:
        super().__init__()
        if estimate not in CONFOUNDER_ESTIMATES:
            raise ValueError(f"estimate must be one of {CONFOUNDER_ESTIMATES}, not {estimate!r}")
        self.estimate = estimate
        self.embedding = nn.Embedding(n_genres, dim)
        nn.init.normal_(self.embedding.weight, std=dim**-0.5)
        self.register_buffer("prior_mean", torch.full((n_genres,), 1.0 / max(1, n_genres)))

    def distribution(self, prior: Tensor | None, training: bool) -> Tensor:
        """d: (1, G) when shared by all rows, (B, G) per row."""
        estimate = self.estimate if training and prior is not None else "global"
        if estimate == "batch":
            assert prior is not None
            return prior.mean(dim=0, keepdim=True)
        if estimate == "sample":
            assert prior is not None
            return prior
        return self.prior_mean[None, :]

    def forward(self, prior: Tensor | None, training: bool) -> Tensor:
        return self.distribution(prior, training) @ self.embedding.weight
