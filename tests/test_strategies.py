"""Debias strategies: the maths on hand-made inputs, composition, and the refusal of what cannot work."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from benchkit.api import run
from benchkit.errors import ConfigError
from benchkit.interfaces import Batch, Query
from benchkit.method import Method
from benchkit.nn import gaussian_kl
from benchkit_plugins.debias.calibration import calibrated_lists
from benchkit_plugins.debias.decrs import drift_weights
from benchkit_plugins.debias.du import DU
from benchkit_plugins.debias.ips import IPS
from benchkit_plugins.debias.kl_distill import release_kl


def test_gaussian_kl_matches_closed_form_and_torch():
    torch.manual_seed(0)
    mu_p, mu_q = torch.randn(5, 8), torch.randn(5, 8)
    lv_p, lv_q = torch.randn(5, 8) * 0.3, torch.randn(5, 8) * 0.3
    ours = gaussian_kl(mu_p, lv_p, mu_q, lv_q)
    ref = kl_divergence(Normal(mu_p, (0.5 * lv_p).exp()), Normal(mu_q, (0.5 * lv_q).exp())).sum(1)
    torch.testing.assert_close(ours, ref)
    # Equal unit variances: KL = ½ ‖μ_p − μ_q‖².
    zero = torch.zeros(5, 8)
    torch.testing.assert_close(
        gaussian_kl(mu_p, zero, mu_q, zero), 0.5 * (mu_p - mu_q).pow(2).sum(1)
    )
    assert gaussian_kl(mu_p, lv_p, mu_p, lv_p).abs().max() < 1e-6


def test_release_kl_pushes_means_apart():
    """METHODS.md §0 quirk 2: with equal variances the released formula *decreases* as the means
    separate, while the true KL increases."""
    zero = torch.zeros(1, 4)
    near, far = torch.full((1, 4), 0.1), torch.full((1, 4), 1.0)
    assert release_kl(far, zero, zero, zero) < release_kl(near, zero, zero, zero)
    assert gaussian_kl(far, zero, zero, zero) > gaussian_kl(near, zero, zero, zero)


def hand_batch():
    prior = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.05, 0.95, 0.0]])
    genre = torch.tensor([0, 2, 0])  # uploader 3 picked a genre it almost never uses
    return Batch(
        video=torch.zeros(3, 2),
        music=torch.zeros(3, 2),
        video_idx=torch.arange(3),
        music_idx=torch.tensor([4, 5, 6]),
        genre=genre,
        prior=prior,
        propensity=torch.tensor([0.5, 0.25, 1.0]),
    )


def test_ips_weights_on_a_hand_made_batch(tiny):
    b = hand_batch()
    ips = IPS(propensity="genre")
    ips.mode = "genre"
    torch.testing.assert_close(ips.weights(b).anchor, torch.tensor([1 / 0.9, 1 / 0.5, 1 / 0.1]))
    ips = IPS(propensity="column")
    ips.mode = "column"
    torch.testing.assert_close(ips.weights(b).anchor, torch.tensor([2.0, 4.0, 1.0]))
    pop = IPS(propensity="popularity", gamma=2.0)
    from benchkit.interfaces import RunContext

    pop.prepare(tiny, RunContext(device=torch.device("cpu"), seed=0, plugins=None))
    n = torch.as_tensor(tiny.train_popularity, dtype=torch.float32).clamp_min(1)
    expect = ((n / n.max()) ** 1.5).clamp(0.1, 1.0)
    m = torch.tensor([0, 1, 2])
    got = pop.weights(
        Batch(video=torch.zeros(3, 1), music=torch.zeros(3, 1), video_idx=m, music_idx=m)
    ).anchor
    torch.testing.assert_close(got, 1 / expect[m])


def test_du_weights_on_a_hand_made_batch():
    b = hand_batch()
    w = DU(alpha=0.5, beta=0.5, clip=0.1).weights(b)
    torch.testing.assert_close(
        w.anchor, 1 / torch.tensor([0.9**0.5, 0.5**0.5, max(0.1, 0.05**0.5)])
    )
    # Cell (i, j): uploader of video i, genre of music j (genres 0, 2, 0).
    d = b.prior[:, [0, 2, 0]]
    expect = 1 / (1 - d).pow(0.5).clamp(0.1, 1.0)
    torch.testing.assert_close(w.cell, expect)
    assert w.cell[0, 0] == pytest.approx(1 / math.sqrt(0.1))  # clipped at 0.1


def slow_calibration(scores, genres, prior, k, lam, alpha):
    """Greedy calibration written plainly, one list at a time, every candidate tried explicitly."""
    s = (scores - scores.min()) / (scores.max() - scores.min())
    chosen: list[int] = []
    g = len(prior)
    for _ in range(k):
        best, best_val = None, -math.inf
        for i in range(len(s)):
            if i in chosen:
                continue
            lst = [*chosen, i]
            q = np.bincount([genres[j] for j in lst], minlength=g) / len(lst)
            qt = (1 - alpha) * q + alpha * prior
            ckl = sum(p * math.log(p / qq) for p, qq in zip(prior, qt, strict=True) if p > 0)
            val = (1 - lam) * sum(s[j] for j in lst) - lam * ckl
            if val > best_val:
                best, best_val = i, val
        chosen.append(best)
    return chosen


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.5, 0.9])
def test_calibration_equals_a_brute_force_greedy(lam):
    rng = np.random.default_rng(int(lam * 10))
    n, c, g, k = 6, 12, 3, 5
    scores = rng.random((n, c))
    genres = rng.integers(0, g, (n, c))
    prior = rng.dirichlet(np.ones(g), n)
    prior[0] = [1.0, 0.0, 0.0]
    fast = calibrated_lists(
        torch.tensor(scores), torch.tensor(genres), torch.tensor(prior), k, lam, 0.01
    ).numpy()
    for row in range(n):
        assert fast[row].tolist() == slow_calibration(
            scores[row], genres[row], prior[row], k, lam, 0.01
        )
    if lam == 0.0:  # pure relevance: the plain top-k
        assert (fast == np.argsort(-scores, axis=1)[:, :k]).all()


def test_calibration_breaks_ties_at_random_not_by_array_order():
    scores = torch.zeros(200, 10)
    genres = torch.zeros(200, 10, dtype=torch.long)
    prior = torch.tensor([[1.0]]).expand(200, 1)
    firsts = calibrated_lists(scores, genres, prior, 1, 0.5, 0.01)[:, 0]
    counts = torch.bincount(firsts, minlength=10)
    assert counts.min() > 5  # every candidate is picked first sometimes


def test_decrs_drift_weights_on_a_hand_made_history():
    # Uploader 0 switched genre half-way (maximal drift), 1 never did, 2 has one video, 3 drifted a bit.
    genres = np.array([0, 0, 1, 1, 2, 2, 2, 2, 1, 0, 0, 0, 1])
    uploaders = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 3, 3, 3, 3])
    eta = drift_weights(genres, uploaders, 4, 3, a=0.2, smoothing=0.01)
    assert eta[0] == pytest.approx(1.0) and eta[1] == 0.0 and eta[2] == 0.0
    assert 0.0 < eta[3] < 1.0

    # Uploader 3: halves [0, 0] and [0, 1]; check its raw symmetric KL by hand.
    def dist(h):
        return (np.bincount(h, minlength=3) + 0.01) / (len(h) + 0.03)

    p, q = dist(np.array([0, 0])), dist(np.array([0, 1]))
    kl3 = np.sum(p * np.log(p / q)) + np.sum(q * np.log(q / p))
    p, q = dist(np.array([0, 0])), dist(np.array([1, 1]))
    kl0 = np.sum(p * np.log(p / q)) + np.sum(q * np.log(q / p))
    assert eta[3] == pytest.approx((kl3 / kl0) ** 0.2)


def deconfounded(plugins, tiny, variant, prior):
    torch.manual_seed(0)
    bb = plugins.backbones.get("cmvae")(latent_dim=16)
    s = plugins.strategies.get("backdoor")(variant=variant)
    bb.build(tiny.spec())
    s.build(tiny.spec(), bb)
    s.prior_mean.copy_(torch.as_tensor(prior))
    m = Method(bb, [s]).eval()
    with torch.no_grad():  # a non-trivial mixing layer / interaction, as after training
        for p in s.parameters():
            p.add_(torch.randn_like(p))
    rows = torch.arange(20)
    q = Query(video_idx=rows, column_music_idx=torch.arange(tiny.n_music))
    codes = m.video_codes(torch.from_numpy(tiny.video_features[:20]))
    return m.score(codes, m.music_codes(torch.from_numpy(tiny.music_features)), q)


def test_reference_deconfounder_cannot_change_a_ranking_and_interaction_does(plugins, tiny):
    one, other = np.eye(tiny.n_genres)[0], np.eye(tiny.n_genres)[2]
    ref_a = deconfounded(plugins, tiny, "reference", one)
    ref_b = deconfounded(plugins, tiny, "reference", other)
    assert not torch.allclose(ref_a, ref_b)  # the scores move ...
    assert torch.equal(ref_a.argsort(dim=1), ref_b.argsort(dim=1))  # ... the rankings do not
    diff = ref_a - ref_b
    torch.testing.assert_close(diff, diff[:, :1].expand_as(diff))  # a per-video constant
    int_a = deconfounded(plugins, tiny, "interaction", one)
    int_b = deconfounded(plugins, tiny, "interaction", other)
    assert not torch.equal(int_a.argsort(dim=1), int_b.argsort(dim=1))


def test_debcm_drops_distillation_without_pgc_and_keeps_it_with(plugins, tiny):
    ugc = run("cmvae", "debcm", dataset=tiny, setting="ugc", epochs=1, plugins=plugins)
    assert ugc.method["strategies"] == ["backdoor"] and ugc.method["setting"] == "ugc"
    both = run("cmvae", "debcm", dataset=tiny, epochs=1, plugins=plugins)
    assert both.method["strategies"] == ["backdoor", "kl_distill"]
    assert both.method["setting"] == "ugc+pgc"


def test_pooled_training_for_the_plain_backbone(plugins, tiny):
    out = run("cmvae", "none", dataset=tiny, setting="ugc+pgc", epochs=1, plugins=plugins)
    assert out.training["train_pairs"] == tiny.splits["train"].size + tiny.pgc.splits["train"].size
    dscmr = run("dscmr", "none", dataset=tiny, setting="ugc+pgc", epochs=1, plugins=plugins)
    assert math.isfinite(dscmr.metrics["recall@25"])


@pytest.mark.parametrize(
    ("backbone", "debias", "setting", "message"),
    [
        ("cevar", "du", "auto", "weights in-batch cells, but backbone 'cevar' exposes only anchor"),
        ("cmvbr", "kl_distill", "auto", "needs a backbone with Gaussian latents"),
        ("cca", "ips", "auto", "fitted in closed form"),
        ("cmvae", "ips", "ugc+pgc", "no strategy of 'ips' uses the PGC data; add label_distill"),
        ("cmvae", "kl_distill", "ugc", "needs pgc"),
        ("cmvae", "debcm+backdoor", "auto", "appears twice"),
        ("cmvae", "ips", "both", "--setting: 'both' is not one of auto, ugc, ugc+pgc"),
    ],
)
def test_impossible_combinations_are_refused_before_training(
    plugins, tiny, backbone, debias, setting, message
):
    with pytest.raises(ConfigError) as err:
        run(backbone, debias, dataset=tiny, setting=setting, plugins=plugins)
    assert message in str(err.value)


def test_strategy_needs_what_the_data_lacks(plugins, tiny):
    bare = tiny.with_splits(tiny.splits)
    bare.video_uploader = None
    with pytest.raises(ConfigError, match="strategy 'du' needs uploaders"):
        run("cmvae", "du", dataset=bare, plugins=plugins)
