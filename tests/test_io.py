"""Datasets on disk: both formats round-trip exactly, and every bad input gets a clear error."""

from __future__ import annotations

import ast
import pickle

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from benchkit.api import run
from benchkit.cli import cli
from benchkit.data.io import open_dataset
from benchkit.data.npyio import load_npy
from benchkit.data.reference import write_reference
from benchkit.data.tables import write_tables
from benchkit.errors import DataError


def _metrics(plugins, **kw):
    out = run("cmvae", "none", epochs=2, plugins=plugins, overrides={"latent_dim": 32}, **kw)
    return {k: v for k, v in out.metrics.items() if k.startswith(("recall", "ndcg"))}


@pytest.mark.parametrize("fmt", ["reference", "tables"])
def test_round_trip_gives_identical_results(plugins, tiny, ref_dir, tab_dir, fmt):
    path = ref_dir if fmt == "reference" else tab_dir
    back = open_dataset(plugins, path)
    np.testing.assert_array_equal(back.video_features, tiny.video_features)
    np.testing.assert_array_equal(back.video_music, tiny.video_music)
    np.testing.assert_array_equal(back.video_prior, tiny.video_prior)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(back.splits[split], tiny.splits[split])
    assert back.pgc is not None and back.pgc.pairs.shape == tiny.pgc.pairs.shape
    for protocol in ("paper", "full"):
        assert _metrics(plugins, data=path, protocol=protocol) == _metrics(
            plugins, dataset=tiny, protocol=protocol
        )


def test_reference_layout_matches_the_release_format(ref_dir, tiny):
    d = ref_dir / "data_matching"
    train = load_npy(d / "train.npy")
    row = train[0]
    # The genre as the release writes it: a string holding a list, read there with eval().
    assert isinstance(row[2], str) and ast.literal_eval(row[2]) == [tiny.music_genre[row[1]]]
    assert len(row[3]) == tiny.n_genres
    test = load_npy(d / "100neg" / "test.npy")
    assert len(test[0][2]) == 100 and test[0][1] not in test[0][2]
    assert load_npy(d / "video_popularity_test.npy").sum() == pytest.approx(1.0)
    assert load_npy(ref_dir / "data_pgc" / "train.npy").shape[1] == 2


def test_object_arrays_are_read_without_unpickling_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.npy"
    np.save(path, np.array([Evil()], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"refusing to load builtins\.print"):
        load_npy(path)
    # A plain pickle disguised as .npy is refused too (bad magic).
    (tmp_path / "fake.npy").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(DataError, match="cannot read"):
        load_npy(tmp_path / "fake.npy")


def _copy_tables(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


BAD_TABLES = [
    ("missing file", lambda d: (d / "music_features.npy").unlink(), "missing file"),
    (
        "wrong shape",
        lambda d: np.save(d / "video_features.npy", np.zeros(5, np.float32)),
        "expected a 2-d array",
    ),
    (
        "wrong dtype",
        lambda d: np.save(d / "music_features.npy", np.array([["a"] * 4] * 120)),
        "expected real numbers",
    ),
    (
        "nan features",
        lambda d: np.save(d / "music_features.npy", np.full((120, 4), np.nan, np.float32)),
        "NaN or inf",
    ),
    (
        "ids/rows mismatch",
        lambda d: (d / "music_ids.txt").write_text("0\n1\n"),
        "2 ids for 120 rows",
    ),
    ("duplicate ids", lambda d: (d / "music_ids.txt").write_text("0\n" * 120), "duplicate id '0'"),
    ("unknown music id", lambda d: _edit(d, music_id="9999"), "music_id ['9999'] not found"),
    ("duplicate video", lambda d: _edit(d, video_id="0"), "has more than one row"),
    ("bad split value", lambda d: _edit(d, split="holdout"), "split values must be train"),
    ("empty split", lambda d: _edit_all(d, "split", "train", "val"), "split 'test' has no rows"),
    ("music without genre", lambda d: _drop_genre(d), "have no genre"),
    ("missing column", lambda d: _drop_column(d, "music_id"), "missing column(s) music_id"),
]


def _edit(d, **changes):
    df = pd.read_csv(d / "interactions.csv", dtype=str)
    for k, v in changes.items():
        df.loc[1, k] = v
    df.to_csv(d / "interactions.csv", index=False)


def _edit_all(d, column, value, was):
    df = pd.read_csv(d / "interactions.csv", dtype=str)
    df.loc[df[column] != was, column] = value
    df.to_csv(d / "interactions.csv", index=False)


def _drop_genre(d):
    g = pd.read_csv(d / "music_genres.csv")
    used = pd.read_csv(d / "interactions.csv")["music_id"].iloc[0]
    g[g["music_id"] != used].to_csv(d / "music_genres.csv", index=False)


def _drop_column(d, column):
    pd.read_csv(d / "interactions.csv").drop(columns=[column]).to_csv(
        d / "interactions.csv", index=False
    )


@pytest.mark.parametrize(("label", "damage", "message"), BAD_TABLES, ids=[b[0] for b in BAD_TABLES])
def test_bad_tables_are_named(tmp_path, tab_dir, plugins, label, damage, message):
    d = _copy_tables(tab_dir, tmp_path / "bad")
    if label in ("wrong dtype", "nan features"):
        (d / "music_ids.txt").write_text("\n".join(map(str, range(120))) + "\n")
    damage(d)
    with pytest.raises(DataError) as err:
        open_dataset(plugins, d)
    assert message in str(err.value)
    assert (
        str(d) in str(err.value) or "interactions" in str(err.value) or label == "ids/rows mismatch"
    )


def _rewrite(path, transform):
    arr = load_npy(path)
    np.save(path, transform(arr), allow_pickle=arr.dtype.hasobject)


def _positive_in_negatives(a):
    a = a.copy()
    a[0][2] = np.r_[a[0][1], a[0][2][1:]]
    return a


def _out_of_range(a):
    a = a.copy()
    a[0][0] = 10**6
    return a


BAD_REFERENCE = [
    (
        "negatives contain positive",
        "100neg/test.npy",
        _positive_in_negatives,
        "the negatives of 1 row(s) contain the row's positive music (e.g. row 0)",
    ),
    ("video id out of range", "100neg/test.npy", _out_of_range, "video ids out of range"),
    (
        "weights do not sum to 1",
        "video_popularity_test.npy",
        lambda a: a * 2,
        "sum to 2, not 1; rerun with --normalise-weights",
    ),
    ("negative weights", "video_popularity_val.npy", lambda a: -a, "finite and non-negative"),
    (
        "features with inf",
        "visual_features_resnet_V.npy",
        lambda a: np.where(np.arange(a.shape[0])[:, None] == 3, np.inf, a).astype(np.float32),
        "NaN or inf in 1 row(s), e.g. row 3",
    ),
]


@pytest.mark.parametrize(
    ("label", "file", "transform", "message"), BAD_REFERENCE, ids=[b[0] for b in BAD_REFERENCE]
)
def test_bad_reference_files_are_named(tmp_path, ref_dir, plugins, label, file, transform, message):
    d = _copy_tables(ref_dir, tmp_path / "bad")
    _rewrite(d / "data_matching" / file, transform)
    with pytest.raises(DataError) as err:
        open_dataset(plugins, d)
    assert message in str(err.value)


def test_weights_can_be_normalised_on_request(tmp_path, ref_dir, plugins):
    d = _copy_tables(ref_dir, tmp_path / "w")
    _rewrite(d / "data_matching" / "video_popularity_test.npy", lambda a: a * 3)
    ds = open_dataset(plugins, d, normalise_weights=True)
    assert ds.eval_weights["test"].sum() == pytest.approx(1.0)


def test_writers_refuse_a_non_empty_folder_and_leave_nothing_half_written(tmp_path, tiny):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("mine")
    with pytest.raises(DataError, match="exists and is not empty"):
        write_tables(tiny, tmp_path / "taken")
    broken = tiny.with_splits(tiny.splits)
    broken.music_genre = None
    with pytest.raises(DataError, match="no music genres"):
        write_reference(broken, tmp_path / "half")
    assert not (tmp_path / "half").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]


def test_data_cli(tmp_path):
    runner = CliRunner()
    out = tmp_path / "world"
    res = runner.invoke(
        cli, ["data", "synth", "--preset", "tiny", "--out", str(out), "--format", "tables", "-q"]
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["data", "validate", str(out)])
    assert res.exit_code == 0 and res.stdout.startswith("OK: tables:world: 3,000 videos")
    res = runner.invoke(cli, ["data", "describe", "--data", str(out)])
    assert "#hiphop" in res.stdout and "25.0 ± 26.3" in res.stdout
    (out / "video_ids.txt").write_text("1\n")
    res = runner.invoke(cli, ["data", "validate", str(out)])
    assert res.exit_code == 1
    assert res.stderr.startswith("Error: ") and "1 ids for 3000 rows" in res.stderr
    res = runner.invoke(cli, ["data", "validate", str(tmp_path)])
    assert res.exit_code == 1 and "not a dataset layout benchkit knows" in res.stderr


def release_style(tiny, root, genre_cell=lambda g: f"[{g}]"):
    """A dataset written the way the DebCM release writes it — np.save of object arrays, genres as
    strings holding lists, priors as Python lists — by hand, without benchkit's writer or extras."""
    d = root / "data_matching"
    (d / "100neg").mkdir(parents=True)
    prior = tiny.video_prior
    train = tiny.splits["train"]
    rows = [
        [
            int(v),
            int(tiny.video_music[v]),
            genre_cell(int(tiny.music_genre[tiny.video_music[v]])),
            [float(x) for x in prior[v]],
            0.5,
        ]
        for v in train
    ]
    np.save(d / "train.npy", np.array(rows, dtype=object), allow_pickle=True)
    rng = np.random.default_rng(0)
    for split in ("val", "test"):
        table = []
        for v in tiny.splits[split]:
            pos = int(tiny.video_music[v])
            negs = rng.choice(np.setdiff1d(np.arange(tiny.n_music), [pos]), 100, replace=False)
            table.append([int(v), pos, negs])
        np.save(d / "100neg" / f"{split}.npy", np.array(table, dtype=object), allow_pickle=True)
        pop = np.bincount(tiny.video_music, minlength=tiny.n_music)[
            tiny.video_music[tiny.splits[split]]
        ]
        w = 1.0 / pop
        np.save(d / f"video_popularity_{split}.npy", w / w.sum())
    np.save(d / "user_prior_mean.npy", prior[train].mean(axis=0))
    np.save(d / "visual_features_resnet_V.npy", tiny.video_features)
    np.save(d / "music_features.npy", tiny.music_features[:, :32])
    np.save(d / "new_music_smile_features_norm.npy", tiny.music_features[:, 32:])
    return root


def test_the_release_layout_as_released_loads_and_runs(tmp_path, tiny, plugins):
    root = release_style(tiny, tmp_path / "release")
    res = CliRunner().invoke(cli, ["data", "validate", str(root)])
    assert res.exit_code == 0, res.output
    ds = open_dataset(plugins, root)
    used = np.unique(tiny.video_music[tiny.splits["train"]])
    np.testing.assert_array_equal(ds.music_genre[used], tiny.music_genre[used])
    out = run("cmvae", "ips", data=str(root), epochs=1, plugins=plugins)
    assert out.metrics["recall@25"] > 0


def test_several_genres_keep_the_first_and_say_so(tmp_path, tiny, plugins):
    root = release_style(tiny, tmp_path / "multi", genre_cell=lambda g: f"[{g}, {(g + 1) % 6}]")
    ds = open_dataset(plugins, root)
    used = np.unique(tiny.video_music[tiny.splits["train"]])
    np.testing.assert_array_equal(ds.music_genre[used], tiny.music_genre[used])
    assert ds.meta["train_rows_with_several_genres"] == tiny.splits["train"].size


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("abc", "'abc' is not a genre id"),
        ("[]", "'[]' lists no genre"),
        ("['x']", "is not a genre id"),
        ("[1.5]", "is not a genre id"),
        ("__import__('os').system('true')", "is not a genre id"),
    ],
)
def test_malformed_genre_cells_fail_in_one_line_naming_the_row(
    tmp_path, tiny, plugins, cell, message
):
    root = release_style(tiny, tmp_path / "bad", genre_cell=lambda g: cell)
    with pytest.raises(DataError) as err:
        open_dataset(plugins, root)
    text = str(err.value)
    assert message in text and "row 0 column 3 (genre)" in text and "\n" not in text
    res = CliRunner().invoke(cli, ["data", "validate", str(root)])
    assert res.exit_code == 1 and "Error:" in res.output and "Traceback" not in res.output


def test_integer_and_numeric_string_genres_are_read_too(tmp_path, tiny, plugins):
    for name, cell in (("int", lambda g: g), ("text", lambda g: str(g))):
        ds = open_dataset(plugins, release_style(tiny, tmp_path / name, genre_cell=cell))
        used = np.unique(tiny.video_music[tiny.splits["train"]])
        np.testing.assert_array_equal(ds.music_genre[used], tiny.music_genre[used])
