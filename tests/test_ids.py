"""The user's ids are the user's: string ids of videos, music and uploaders go in through a tables
dataset and come back out of every command — never row numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import benchkit
from benchkit.cli import cli
from benchkit.data.tables import read_tables, write_tables


def video_id(i: int) -> str:
    return f"clip-{i:05d}"


def music_id(i: int) -> str:
    return f"track/{chr(65 + i % 26)}{i}"


def uploader_id(i: int) -> str:
    return f"user-{i:03d}"  # "user-007": leading zeros must survive


def string_id_tables(world, folder: Path) -> Path:
    """``world`` in the tables format with string ids everywhere (and rows out of id order)."""
    write_tables(world, folder)
    inter = pd.read_csv(folder / "interactions.csv")
    inter["video_id"] = inter["video_id"].map(video_id)
    inter["music_id"] = inter["music_id"].map(music_id)
    inter["uploader_id"] = inter["uploader_id"].map(uploader_id)
    inter.to_csv(folder / "interactions.csv", index=False)
    order = np.random.default_rng(0).permutation(world.n_videos)  # features in another order
    np.save(folder / "video_features.npy", world.video_features[order])
    (folder / "video_ids.txt").write_text("\n".join(video_id(i) for i in order) + "\n")
    (folder / "music_ids.txt").write_text(
        "\n".join(music_id(i) for i in range(world.n_music)) + "\n"
    )
    genres = pd.read_csv(folder / "music_genres.csv")
    genres["music_id"] = genres["music_id"].map(music_id)
    genres.to_csv(folder / "music_genres.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny):
    """A tables dataset with string ids, and a model trained on it with a per-uploader strategy
    (Calibration reads the uploaders' histories and the pool's genres)."""
    root = tmp_path_factory.mktemp("ids")
    data = string_id_tables(tiny, root / "data")
    model = root / "model"
    args = ["run", "--data", str(data), "-d", "calibration", "--epochs", "2"]
    args += ["--save", str(model), "--protocol", "full", "--json", "-q"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    return root, data, model


def invoke(*args: str) -> object:
    res = CliRunner().invoke(cli, list(args))
    assert res.exit_code == 0, res.output
    return res


def test_reading_keeps_every_id(trained, tiny):
    _, data, _ = trained
    ds = read_tables(data)
    rows = np.arange(ds.n_videos)
    assert list(ds.ids("video")[rows]) == [video_id(i) for i in rows]
    assert list(ds.ids("music")) == [music_id(i) for i in range(tiny.n_music)]
    assert ds.ids("music")[ds.video_music].tolist() == [music_id(m) for m in tiny.video_music]
    assert ds.ids("uploader")[ds.video_uploader].tolist() == [
        uploader_id(u) for u in tiny.video_uploader
    ]
    res = invoke("data", "validate", str(data))
    assert res.stdout.startswith("OK:")


def test_writing_a_dataset_keeps_its_ids(trained, tmp_path):
    _, data, _ = trained
    again = read_tables(write_tables(read_tables(data), tmp_path / "copy"))
    original = read_tables(data)
    for kind in ("video", "music", "uploader"):
        assert again.ids(kind).tolist() == original.ids(kind).tolist()
    inter = pd.read_csv(tmp_path / "copy" / "interactions.csv", dtype=str)
    assert inter["uploader_id"].str.startswith("user-").all()


def test_recommend_writes_the_data_s_music_ids_and_reads_its_uploader_ids(trained, tiny):
    root, _, model = trained
    rows = tiny.splits["test"][:6]
    np.save(root / "new.npy", tiny.video_features[rows])
    (root / "new_ids.txt").write_text("\n".join(video_id(i) for i in rows) + "\n")
    pd.DataFrame(
        {
            "video_id": [video_id(i) for i in rows],
            "uploader_id": [uploader_id(u) for u in tiny.video_uploader[rows]],
        }
    ).to_csv(root / "upl.csv", index=False)
    out = root / "rec.csv"
    invoke(
        "recommend", str(model), "--videos", str(root / "new.npy"), "--video-ids",
        str(root / "new_ids.txt"), "--uploaders", str(root / "upl.csv"), "-k", "5",
        "--out", str(out),
    )  # fmt: skip
    rec = pd.read_csv(out, dtype={"video_id": str, "music_id": str})
    assert rec["video_id"].unique().tolist() == [video_id(i) for i in rows]
    assert set(rec["music_id"]) <= {music_id(m) for m in range(tiny.n_music)}
    # the same lists through the Python API, uploaders by the data's own ids
    loaded = benchkit.load(model)
    ids, _ = loaded.recommend(
        tiny.video_features[rows],
        k=5,
        uploaders=[uploader_id(u) for u in tiny.video_uploader[rows]],
    )
    assert ids.reshape(-1).tolist() == rec["music_id"].tolist()
    # the uploaders matter (Calibration): without them, every video gets the population's mix
    plain, _ = loaded.recommend(tiny.video_features[rows], k=5)
    assert plain.tolist() != ids.tolist()


def test_an_uploader_the_model_never_saw_is_named_with_its_row(trained, tiny):
    root, _, model = trained
    rows = tiny.splits["test"][:3]
    np.save(root / "three.npy", tiny.video_features[rows])
    pd.DataFrame(
        {"video_id": ["0", "1", "2"], "uploader_id": [uploader_id(0), "user-nobody", ""]}
    ).to_csv(root / "bad_upl.csv", index=False)
    args = ["recommend", str(model), "--videos", str(root / "three.npy")]
    res = CliRunner().invoke(cli, [*args, "--uploaders", str(root / "bad_upl.csv")])
    assert res.exit_code == 1
    assert "row 1 names uploader 'user-nobody', which the model never saw" in res.output
    assert res.output.count("\n") == 1


def test_another_pool_keeps_its_own_ids_and_parquet_keeps_strings(trained, tiny):
    root, _, model = trained
    pool_rows = np.arange(10, 40)
    np.save(root / "pool.npy", tiny.music_features[pool_rows])
    (root / "pool_ids.txt").write_text("\n".join(f"new-{m}" for m in pool_rows) + "\n")
    np.save(root / "pool_genres.npy", tiny.music_genre[pool_rows])
    videos = pd.DataFrame(tiny.video_features[:4])
    videos.columns = [f"f{i}" for i in videos.columns]
    videos.insert(0, "video_id", ["a", "b", "c", "007"])
    videos.to_parquet(root / "videos.parquet")
    out = root / "rec.parquet"
    invoke(
        "recommend", str(model), "--videos", str(root / "videos.parquet"), "--music-pool",
        str(root / "pool.npy"), "--music-ids", str(root / "pool_ids.txt"), "--music-genres",
        str(root / "pool_genres.npy"), "-k", "3", "--out", str(out),
    )  # fmt: skip
    rec = pd.read_parquet(out)
    assert rec["video_id"].unique().tolist() == ["a", "b", "c", "007"]
    assert rec["music_id"].str.startswith("new-").all()


def test_embed_writes_each_row_s_id(trained, tiny):
    root, _, model = trained
    np.save(root / "emb.npy", tiny.video_features[:4])
    (root / "emb_ids.txt").write_text("x1\nx2\nx3\nx4\n")
    invoke(
        "embed", str(model), "--videos", str(root / "emb.npy"), "--ids",
        str(root / "emb_ids.txt"), "--out", str(root / "codes.parquet"),
    )  # fmt: skip
    codes = pd.read_parquet(root / "codes.parquet")
    assert codes["video_id"].tolist() == ["x1", "x2", "x3", "x4"]
    np.testing.assert_allclose(
        codes.drop(columns="video_id").to_numpy(),
        benchkit.load(model).embed_videos(tiny.video_features[:4]),
        rtol=1e-6,
    )
    music = pd.DataFrame(
        tiny.music_features[:3], columns=[f"m{i}" for i in range(tiny.music_features.shape[1])]
    )
    music.insert(0, "music_id", [music_id(i) for i in range(3)])
    music.to_parquet(root / "music.parquet")
    invoke(
        "embed", str(model), "--music", str(root / "music.parquet"), "--out", str(root / "m.csv")
    )
    assert pd.read_csv(root / "m.csv")["music_id"].tolist() == [music_id(i) for i in range(3)]


def test_the_card_names_the_pool_by_its_ids(trained):
    _, _, model = trained
    card = json.loads((model / "card.json").read_text())
    assert card["format"] == "benchkit-model/2"
    assert benchkit.load(model).pool.ids[:2].tolist() == [music_id(0), music_id(1)]
