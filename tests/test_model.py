"""A trained method leaves the process that trained it: saved, loaded, and recommending exactly
what the evaluation scored."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import benchkit
from benchkit.cli import cli
from benchkit.data.eval_rows import row_weights
from benchkit.data.synth import make_world
from benchkit.errors import DataError
from benchkit.model_card import seal
from benchkit.topk import score_all, top_k


def train_and_save(tmp_path, backbone, debias, *extra):
    folder = tmp_path / f"{backbone}-{debias}"
    args = ["run", "--preset", "tiny", "-b", backbone, "-d", debias, "--protocol", "full"]
    args += ["--epochs", "3", "--save", str(folder), "--json", "-q", *extra]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    return folder, json.loads(res.stdout)


def recall_from_lists(tmp_path, folder, world, k, uploaders=False):
    """Recommend in a fresh process, then score the lists against the known positives."""
    rows = world.splits["test"]
    np.save(tmp_path / "videos.npy", world.video_features[rows])
    args = [sys.executable, "-m", "benchkit.cli", "recommend", str(folder)]
    args += ["--videos", str(tmp_path / "videos.npy"), "-k", str(k)]
    args += ["--out", str(tmp_path / "rec.parquet")]
    if uploaders:
        pd.DataFrame(
            {"video_id": np.arange(rows.size), "uploader_id": world.video_uploader[rows]}
        ).to_csv(tmp_path / "upl.csv", index=False)
        args += ["--uploaders", str(tmp_path / "upl.csv")]
    res = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    rec = pd.read_parquet(tmp_path / "rec.parquet").sort_values(["video_id", "rank"])
    lists = rec.groupby("video_id")["music_id"].apply(list)
    positives = world.video_music[rows]
    weights = row_weights(world, rows, "inverse_popularity")
    hits = np.array([positives[i] in lists.iloc[i][:k] for i in range(rows.size)])
    return float((weights * hits).sum())


def tied_weight(folder, world, k, uploaders):
    """The evaluation weight of the test rows whose positive ties with the k-th best score."""
    rows = world.splits["test"]
    rec = benchkit.load(folder)
    full = rec.score(
        world.video_features[rows], uploaders=world.video_uploader[rows] if uploaders else None
    )
    positive = full[np.arange(rows.size), world.video_music[rows]]
    kth = np.sort(full, axis=1)[:, ::-1][:, k - 1]
    tied = (positive == kth) & ((full == kth[:, None]).sum(axis=1) > 1)
    return float(row_weights(world, rows, "inverse_popularity")[tied].sum())


@pytest.mark.parametrize(
    ("backbone", "debias", "uploaders"),
    [("cmvae", "debcm", False), ("cmvae", "decrs", True), ("dscmr", "calibration", True)],
)
def test_recommend_in_a_fresh_process_reproduces_the_run(tmp_path, backbone, debias, uploaders):
    world = make_world("tiny", seed=0)
    folder, out = train_and_save(tmp_path, backbone, debias)
    for k in (10, 25):
        got = recall_from_lists(tmp_path, folder, world, k, uploaders)
        # A list breaks a tie at its cut-off by order, the metric by expectation: rows whose
        # positive ties there may differ by their weight, every other row must agree exactly.
        slack = tied_weight(folder, world, k, uploaders)
        assert got == pytest.approx(out["metrics"][f"recall@{k}"], abs=slack + 1e-9)
    # the streaming top-K (small chunks and blocks: the running list and the rows that skip a
    # block) returns the best of the full score matrix, re-rankers included
    rec = benchkit.load(folder)
    rows = world.splits["test"][:40]
    videos = rec._features(world.video_features[rows], "video", "videos")
    upl = world.video_uploader[rows] if uploaders else None
    idx, prior = rec._uploader_rows(upl, rows.size)
    full = score_all(rec.method, videos, rec.pool, idx, prior, rec.device)
    query = (rec.method, videos, rec.pool)
    # blocks of 13 (merged whole) and of 32 (one group of columns each: the sparse merge)
    for k, rerank_pool, block in ((10, None, 13), (10, None, 32), (3, 50, 13)):
        setting = (k, idx, prior, rec.device, rerank_pool)
        cols, scores = top_k(*query, *setting, video_chunk=7, music_block=block)
        if rerank_pool is None:
            np.testing.assert_array_equal(cols, np.argsort(-full, axis=1, kind="stable")[:, :k])
            np.testing.assert_allclose(scores, np.sort(full, axis=1)[:, ::-1][:, :k], rtol=1e-6)
        np.testing.assert_array_equal(cols, top_k(*query, *setting, music_block=10**6)[0])


def test_the_python_api_and_embed(tmp_path):
    world = make_world("tiny", seed=0)
    folder, _ = train_and_save(tmp_path, "cmvae", "backdoor")
    rec = benchkit.load(folder)
    videos = world.video_features[:5]
    ids, scores = rec.recommend(videos, k=7)
    assert ids.shape == scores.shape == (5, 7) and (np.diff(scores, axis=1) <= 0).all()
    full = rec.score(videos)
    np.testing.assert_allclose(np.sort(full, axis=1)[:, ::-1][:, :7], scores, rtol=1e-6)
    codes = rec.embed_videos(videos)
    assert codes.shape == (5, 128)
    # a pool keeps its codes between calls, never past a change of the model's weights
    other = benchkit.load(folder)
    pool = other.music_pool(world.music_features[:60])
    other.recommend(videos, k=5, pool=pool)
    state = other.method.state_dict()
    other.method.load_state_dict(
        {k: v * 1.5 if v.is_floating_point() else v for k, v in state.items()}
    )
    fresh = other.music_pool(world.music_features[:60])
    got, want = other.recommend(videos, k=5, pool=pool), other.recommend(videos, k=5, pool=fresh)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    np.save(tmp_path / "m.npy", world.music_features[:9])
    res = CliRunner().invoke(
        cli,
        [
            "embed",
            str(folder),
            "--music",
            str(tmp_path / "m.npy"),
            "--out",
            str(tmp_path / "c.npy"),
        ],
    )
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose(
        np.load(tmp_path / "c.npy"), rec.embed_music(world.music_features[:9])
    )
    card = json.loads((folder / "card.json").read_text())
    assert card["backbone"]["distribution"] == "benchkit" and card["features_norm"] == "zscore"
    assert [s["name"] for s in card["strategies"]] == ["backdoor"]


def test_bad_inputs_and_packages_fail_in_one_line(tmp_path):
    world = make_world("tiny", seed=0)
    folder, _ = train_and_save(tmp_path, "cmvae", "none")
    runner = CliRunner()
    cases = {
        "wrong dim": (
            world.video_features[:3, :10],
            "10 features per row, but the model was trained on",
        ),
        "strings": (np.array([["a"] * world.video_features.shape[1]]), "expected real numbers"),
        "nan": (
            np.where(np.arange(3)[:, None] == 1, np.nan, world.video_features[:3]),
            "NaN or inf in 1 row(s), e.g. row 1",
        ),
        "empty": (world.video_features[:0], "no rows"),
    }
    for label, (array, message) in cases.items():
        path = tmp_path / f"{label}.npy"
        np.save(path, array)
        res = runner.invoke(
            cli, ["recommend", str(folder), "--videos", str(path), "--out", str(tmp_path / "o.csv")]
        )
        assert res.exit_code == 1 and message in res.output, (label, res.output)
        assert not (tmp_path / "o.csv").exists()  # nothing half-written
    np.save(tmp_path / "ok.npy", world.video_features[:3])
    res = runner.invoke(
        cli, ["recommend", str(folder), "--videos", str(tmp_path / "ok.npy"), "-k", "100000"]
    )
    assert res.exit_code == 1 and "but the pool holds" in res.output
    weights = folder / "weights.pt"
    original = weights.read_bytes()
    data = bytearray(original)
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    res = runner.invoke(cli, ["recommend", str(folder), "--videos", str(tmp_path / "ok.npy")])
    assert res.exit_code == 1 and "weights.pt does not match its card" in res.output
    weights.write_bytes(original)
    (folder / "pool.npz").unlink()
    with pytest.raises(DataError, match=r"pool\.npz is missing"):
        benchkit.load(folder)


def test_a_package_from_an_uninstalled_plugin_is_refused_by_name(tmp_path):
    folder, _ = train_and_save(tmp_path, "cmvae", "none")
    card = json.loads((folder / "card.json").read_text())
    card["backbone"]["name"] = "someone_elses"
    card["backbone"]["distribution"] = "their-plugin"
    (folder / "card.json").write_text(json.dumps(seal(card)))  # as another install writes it
    with pytest.raises(
        DataError, match=r"needs backbone 'someone_elses' from plugin .*their-plugin"
    ):
        benchkit.load(folder)
