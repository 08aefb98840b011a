"""Identical trainings are done once: DecRS's plain model is the plain run's, bitwise, and shared."""

from __future__ import annotations

import json

import torch

import benchkit
from benchkit.api import run

TINY = {"preset": "tiny", "epochs": 2, "threads": 1, "precision": "fp32"}


def plain_weights(folder) -> dict[str, torch.Tensor]:
    state = benchkit.load(folder).method.state_dict()
    return {k.split(".plain.", 1)[1]: v for k, v in state.items() if ".plain." in k}


def test_decrs_trains_the_plain_run_bitwise_and_shares_it(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCHKIT_CACHE", str(tmp_path / "cache"))
    said: list[str] = []
    plain = run("cmvae", "none", save=tmp_path / "plain", log=said.append, **TINY)
    assert "reused" not in plain.training and plain.training["flops"]["train"] > 0
    decrs = run("cmvae", "decrs", save=tmp_path / "decrs", log=said.append, **TINY)
    assert any("decrs plain: an identical training was done before" in s for s in said)
    assert decrs.training["flops"]["companions"] == 0  # its plain model cost nothing here
    trained = benchkit.load(tmp_path / "plain").method.state_dict()
    shared = plain_weights(tmp_path / "decrs")
    assert shared.keys() == trained.keys()
    assert all(torch.equal(shared[k], trained[k]) for k in trained)

    # Not because it was shared: with sharing off DecRS trains its plain model itself, the same
    monkeypatch.setenv("BENCHKIT_SHARE", "0")
    said.clear()
    alone_run = run("cmvae", "decrs", save=tmp_path / "decrs-alone", log=said.append, **TINY)
    assert not any("identical training" in s for s in said)
    spent = plain.training["flops"]["train"] + plain.training["flops"]["validation"]
    assert alone_run.training["flops"]["companions"] == spent  # the plain run's work, counted
    alone = plain_weights(tmp_path / "decrs-alone")
    assert all(torch.equal(alone[k], trained[k]) for k in trained)


def test_a_reused_training_gives_the_same_run_and_counts_no_training_work(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCHKIT_CACHE", str(tmp_path / "cache"))
    first = run("cmvae", "none", **TINY)
    again = run("cmvae", "none", **TINY)
    assert again.training["reused"] is True
    assert again.metrics == first.metrics and again.key == first.key
    assert again.history == first.history
    assert again.training["flops"]["train"] == 0 and again.training["flops"]["validation"] == 0
    # anything the loop reads changes the training: another seed is trained anew
    other = run("cmvae", "none", seed=7, **TINY)
    assert "reused" not in other.training
    assert len(list((tmp_path / "cache" / "trained").glob("*.pt"))) == 2


def test_a_damaged_stored_training_is_said_and_trained_again(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCHKIT_CACHE", str(tmp_path / "cache"))
    first = run("cmvae", "none", **TINY)
    for weights in (tmp_path / "cache" / "trained").glob("*.pt"):
        weights.write_bytes(b"not a checkpoint")
    said: list[str] = []
    again = run("cmvae", "none", log=said.append, **TINY)
    assert any("is damaged" in s for s in said) and "reused" not in again.training
    assert again.metrics == first.metrics


def test_the_teachers_evaluation_is_made_once_per_evaluation_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCHKIT_CACHE", str(tmp_path / "cache"))
    a = run("cmvae", "label_distill", **TINY)
    b = run("cmvae", "label_distill", **{**TINY, "epochs": 3})  # another student, the same teacher
    report = a.training["strategies"]["label_distill"]["teacher"]["test"]
    assert report == b.training["strategies"]["label_distill"]["teacher"]["test"]
    stored = list((tmp_path / "cache" / "teachers").glob("*.eval-*.json"))
    assert len(stored) == 1 and json.loads(stored[0].read_text()) == report


def test_the_truth_of_a_test_set_is_computed_once_and_read_back_bitwise(
    tiny, tmp_path, monkeypatch
):
    """The sum over uploaders is kept on disk per world, rows and estimand: read back it is the
    computed one bit for bit; a damaged file is computed again; BENCHKIT_SHARE=0 keeps nothing;
    and a run's metrics do not depend on whether the truth came from the disk."""
    from benchkit import oracle

    monkeypatch.setenv("BENCHKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(oracle, "STORED_CELLS", 0)  # the tiny world is below the paper's size
    rows = tiny.splits["test"][:300]
    direct = tiny.truth.probabilities(rows, "backdoor")
    first = oracle.truth_probabilities(tiny, rows, "backdoor", torch.device("cpu"))
    files = sorted((tmp_path / "cache" / "truth").glob("*.npy"))
    assert len(files) == 1 and torch.equal(first, direct)
    calls = []
    real = type(tiny.truth).probabilities
    monkeypatch.setattr(
        type(tiny.truth), "probabilities", lambda *a, **k: calls.append(a) or real(*a, **k)
    )
    again = oracle.truth_probabilities(tiny, rows, "backdoor", torch.device("cpu"))
    assert torch.equal(again, direct) and not calls  # read, not computed
    other = oracle.truth_probabilities(tiny, rows[:200], "backdoor", torch.device("cpu"))
    assert torch.equal(other, direct[:200]) and len(calls) == 1  # other rows: their own file
    files[0].write_bytes(b"not an array")
    assert torch.equal(
        oracle.truth_probabilities(tiny, rows, "backdoor", torch.device("cpu")), direct
    )
    assert len(calls) == 2
    oracle.truth_probabilities(tiny, rows, "cf", torch.device("cpu"))  # cheap: never stored
    assert len(list((tmp_path / "cache" / "truth").glob("*.npy"))) == 2
    monkeypatch.setenv("BENCHKIT_SHARE", "0")
    oracle.truth_probabilities(tiny, rows[:100], "backdoor", torch.device("cpu"))
    assert len(list((tmp_path / "cache" / "truth").glob("*.npy"))) == 2


def test_a_run_reads_the_stored_truth_and_reports_the_same_numbers(tmp_path, monkeypatch):
    from benchkit import oracle

    monkeypatch.setattr(oracle, "STORED_CELLS", 0)
    monkeypatch.setenv("BENCHKIT_SHARE", "0")
    monkeypatch.setenv("BENCHKIT_CACHE", str(tmp_path / "off"))
    off = run("cmvae", "none", **TINY)
    monkeypatch.setenv("BENCHKIT_SHARE", "1")
    monkeypatch.setenv("BENCHKIT_CACHE", str(tmp_path / "on"))
    stored = run("cmvae", "none", **TINY)
    read = run("cmvae", "none", **TINY)
    assert list((tmp_path / "on" / "truth").glob("*.npy"))
    assert off.metrics == stored.metrics == read.metrics
    assert "bd_recall@10" in read.metrics
    # The run that read it did not count the world's work as its own.
    assert read.training["flops"]["test"] < stored.training["flops"]["test"]


def test_a_frozen_teachers_encodings_are_the_per_batch_ones(tiny, plugins):
    """KL and label distillation read their frozen teacher's encodings from a table made once:
    the same as encoding the batch (within a product's rounding), in the batch's precision; ids
    outside the table (pooled PGC rows) are encoded as before."""
    from benchkit.method import Method
    from benchkit.teacher import FrozenEncodings

    backbone = plugins.backbones.get("cmvae")()
    torch.manual_seed(0)
    backbone.build(tiny.spec())
    teacher = Method(backbone, []).eval()
    idx = torch.tensor([5, 17, 3, 2999, 5])
    video = torch.as_tensor(tiny.video_features[idx.numpy()]).float()
    music_idx = torch.tensor([0, 7, 119])
    music = torch.as_tensor(tiny.music_features[music_idx.numpy()]).float()
    for precision in ("fp32", "bf16"):
        table = FrozenEncodings(teacher, tiny, torch.device("cpu"), precision)
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            want_v, want_m = backbone.encode_video(video), backbone.encode_music(music)
            got_v, got_m = table.video_of(idx, video), table.music_of(music_idx, music)
            outside = table.video_of(idx + tiny.n_videos, video)
        for got, want in ((got_v, want_v), (got_m, want_m)):
            assert got.mu.dtype == want.mu.dtype
            tol = 1e-2 if precision == "bf16" else 1e-6
            torch.testing.assert_close(got.mu, want.mu, atol=tol, rtol=0)
            torch.testing.assert_close(got.logvar, want.logvar, atol=tol, rtol=0)
        assert torch.equal(outside.mu, want_v.mu)  # encoded from the batch's features
        assert torch.equal(got_v.mu[0], got_v.mu[4])  # one row per video, gathered
        # Label distillation's teacher scores: the teacher's codes (the means) scored by its
        # backbone, as Method.video_codes / music_codes give them.
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            want_s = backbone.score(teacher.video_codes(video), teacher.music_codes(music))
            got_s = table.scores(idx, video, music_idx, music)
        assert got_s.shape == (5, 3)
        torch.testing.assert_close(got_s, want_s, atol=tol, rtol=0)
