"""Hostile input, generated: whatever a user types on the command line, writes in a grid file or
puts in a data file, benchkit answers with a result or one line — never a traceback, never a
silent NaN, never an allocation beyond a stated bound.

The command-line fuzz runs the chance scorer on the tiny world (no training), so that the inputs
hypothesis draws which happen to be valid finish in a second; the grid-file fuzz only loads the
file (``load_grid`` is where a grid's schema is checked, before anything runs), and the ``--set``
fuzz runs its grids end to end; the reader fuzz changes one field of the tiny world written in
either layout. Every search is derandomised and bounded, so CI sees the same examples each time.
"""

from __future__ import annotations

import string

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from benchkit.cli import cli
from benchkit.data.describe import describe
from benchkit.errors import BenchkitError
from benchkit.experiments.grid import load_grid

NASTY_TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        ["", " ", "-1", "0", "1e309", "nan", "inf", "99999999999999999999", "../../x", "\x00", "é"]
    ),
)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    NASTY_TEXT,
)
KEYS = st.sampled_from(
    ["lr", "epochs", "batch_size", "dim", "latent_dim", "margin", "seed", "lr.x", "=", ""]
)
WORLD_KNOBS = st.sampled_from(
    ["taste_strength", "n_uploaders", "n_music", "feature_map", "popularity", "nope", ""]
)


def pair(keys):
    return st.tuples(keys, NUMBERS).map(lambda kv: f"{kv[0]}={kv[1]}")


OPTION = st.one_of(
    st.tuples(st.just("--set"), pair(KEYS)),
    st.tuples(st.just("--world"), pair(WORLD_KNOBS)),
    st.tuples(st.sampled_from(["--seed", "--world-seed", "--epochs", "--patience"]), NUMBERS),
    st.tuples(st.just("--threads"), NUMBERS),
    st.tuples(
        st.sampled_from(["--test-set", "--split", "--protocol", "--setting", "--labels"]),
        st.one_of(NASTY_TEXT, st.sampled_from(["random", "diverse", "matching", "full", "ugc"])),
    ),
    st.tuples(st.sampled_from(["--features-norm", "--precision", "--features"]), NASTY_TEXT),
    st.tuples(st.just("--device"), st.sampled_from(["cuda:7", "tpu", "cpu:x", "", "meta"])),
    st.tuples(
        st.just("--debias"),
        st.one_of(
            st.sampled_from(["+", "none+", "none+none", "x?", "?", "none?", "+none", "NONE"]),
            st.text(alphabet=string.ascii_lowercase + "+?_", max_size=8).map(lambda s: "q" + s),
        ),
    ),
    st.tuples(st.sampled_from(["--data", "--pgc"]), st.sampled_from(["/nonexistent", "", "."])),
)


def no_traceback(result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}\n{result.output}"
    )
    assert result.exit_code in (0, 1, 2), result.output
    assert "Traceback" not in result.output
    if result.exit_code:
        lines = [ln for ln in result.output.strip().splitlines() if ln.startswith("Error")]
        assert len(lines) == 1, result.output


@pytest.mark.filterwarnings("ignore")
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(st.lists(OPTION, max_size=4))
@example([("--world", "n_uploaders=99999999999999999999")])  # found in CI: numpy's size limit
def test_run_options_never_give_a_traceback(tmp_path_factory, options):
    out = tmp_path_factory.mktemp("fuzz")
    argv = ["run", "--preset", "tiny", "--backbone", "random", "--quiet", "--json"]
    for flag, value in options:
        argv += [flag, value]
    result = CliRunner().invoke(cli, argv, env={"BENCHKIT_CACHE": str(out / "cache")})
    event(f"exit {result.exit_code}")
    no_traceback(result)


TOML_VALUE = st.one_of(
    st.integers(min_value=-(2**40), max_value=2**40).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(alphabet=string.ascii_letters + " ./_-+?", max_size=10).map(lambda s: f'"{s}"'),
    st.sampled_from(['["random", 3]', "[]", "{}", "true", "{ x = 1 }", '["recall@25"]']),
)
GRID_KEYS = st.sampled_from(
    [
        "name",
        "title",
        "kind",
        "protocol",
        "seeds",
        "metrics",
        "test_sets",
        "settings",
        "world",
        "x",
        "tune",
        "controls",
        "paper",
        "bogus",
    ]
)
ROW_KEYS = st.sampled_from(
    ["label", "backbone", "debias", "setting", "labels", "set", "run", "optional", "whatever"]
)


@settings(max_examples=120, deadline=None, derandomize=True)
@given(
    st.dictionaries(GRID_KEYS, TOML_VALUE, max_size=6),
    st.lists(st.dictionaries(ROW_KEYS, TOML_VALUE, max_size=5), max_size=3),
)
def test_grid_files_never_give_a_traceback(tmp_path_factory, top, rows):
    # a valid grid with some of its keys replaced (or added) by drawn values
    top = {"name": '"g"', "kind": '"table"', "metrics": '["recall@25"]', **top}
    rows = [
        {"label": '"a"', "backbone": '"random"', "debias": '"none"', **row} for row in rows or [{}]
    ]
    text = "\n".join(f"{k} = {v}" for k, v in top.items())
    for row in rows:
        text += "\n\n[[rows]]\n" + "\n".join(f"{k} = {v}" for k, v in row.items())
    path = tmp_path_factory.mktemp("grid") / "g.toml"
    path.write_text(text, encoding="utf-8")
    try:
        load_grid(path)
        event("a valid grid")
    except BenchkitError as exc:
        assert "\n" not in str(exc).strip(), str(exc)


# -- data readers, generated: a hostile value in any field of either layout ---------------------
# Property: a dataset whose arrays are all finite, or one line — never a traceback, never an
# allocation beyond MEMORY_BOUND (measured by tracemalloc, which sees NumPy's buffers).

MEMORY_BOUND = 256 * 2**20
HOSTILE_CELLS = st.one_of(
    st.sampled_from(
        [
            "[10000000000]",
            "[99999999999999999999999]",
            "[-5]",
            "[]",
            "abc",
            "nan",
            "inf",
            "",
            "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
            "__import__('os')",
            "1e308",
            "[1, 2]",
            "[1.5]",
        ]
    ),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=8),
    st.text(max_size=6),
)
JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=5),
    st.lists(st.one_of(st.integers(), st.text(max_size=3)), max_size=7),
    st.dictionaries(st.sampled_from(["name", "derived", "scale", "x"]), st.integers(), max_size=3),
)
ARRAY_FILES = ["music_genre.npy", "video_uploader.npy", "column_views.npy", "user_prior_mean"]
ARRAY_VALUES = st.one_of(
    st.integers(min_value=-(2**62), max_value=2**62),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([10**10, -1, -2, 6, 2**40]),
)


def _loads_cleanly_or_says_why(plugins, path) -> None:
    import tracemalloc

    import numpy as np

    from benchkit.data.io import open_dataset

    tracemalloc.start()
    try:
        ds = open_dataset(plugins, path)
        describe(ds)
        arrays = [ds.video_features, ds.music_features, ds.video_prior]
        arrays += [w for w in ds.eval_weights.values()]
        for a in arrays:  # never a silent NaN
            assert np.isfinite(a).all()
        if ds.propensity is not None:
            known = ds.propensity[~np.isnan(ds.propensity)]
            assert (known > 0).all() and np.isfinite(known).all()
        event("loaded")
    except BenchkitError as exc:
        assert "\n" not in str(exc).strip(), str(exc)
        event("refused")
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < MEMORY_BOUND, peak


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    st.one_of(
        st.tuples(
            st.just("train"),
            st.integers(min_value=0, max_value=30),
            st.integers(min_value=0, max_value=4),
            HOSTILE_CELLS,
        ),
        st.tuples(
            st.sampled_from(["val", "test"]),
            st.integers(min_value=0, max_value=20),
            st.integers(min_value=0, max_value=2),
            HOSTILE_CELLS,
        ),
        st.tuples(
            st.sampled_from(["genre_names.json", "dataset.json", "propensity.json", "truth.json"]),
            st.just(0),
            st.just(0),
            JSON_VALUES,
        ),
        st.tuples(
            st.sampled_from(ARRAY_FILES),
            st.integers(min_value=0, max_value=50),
            st.just(0),
            ARRAY_VALUES,
        ),
    ),
    st.booleans(),
)
@example(("train", 3, 2, "[10000000000]"), True)  # asked for 74.5 GiB
@example(("train", 3, 4, "abc"), False)  # a ValueError traceback
@example(("genre_names.json", 0, 0, {"a": 1}), False)  # an AttributeError traceback
@pytest.mark.filterwarnings("ignore:overflow encountered in cast")
def test_the_release_layout_reader_never_gives_a_traceback(
    tmp_path_factory, plugins, ref_dir, tiny, change, without_extras
):
    import json
    import shutil

    import numpy as np

    from benchkit.data.npyio import load_npy

    d = tmp_path_factory.mktemp("ref") / "ds"
    shutil.copytree(ref_dir, d)
    m, extra = d / "data_matching", d / "data_matching" / "benchkit"
    np.save(extra / "column_views.npy", np.arange(tiny.n_videos))
    if without_extras:  # the release's own files only: priors and genres from train.npy
        shutil.rmtree(extra)
        extra.mkdir()
    where, row, column, value = change
    if where in ("train", "val", "test"):
        path = m / ("train.npy" if where == "train" else f"100neg/{where}.npy")
        rows = load_npy(path)
        rows[row][column] = value
        np.save(path, rows, allow_pickle=True)
    elif where.endswith(".json"):
        (extra / where).write_text(json.dumps(value))
    elif where == "user_prior_mean":
        mean = load_npy(m / "user_prior_mean.npy")
        mean[row % mean.size] = value
        np.save(m / "user_prior_mean.npy", mean)
    else:
        if not (extra / where).exists():
            return
        a = load_npy(extra / where)
        a = a.astype(np.float64) if isinstance(value, float) else a
        if isinstance(value, int) and a.dtype.kind in "iu" and abs(value) >= 2**31:
            a = a.astype(np.int64)
        a[row] = value
        np.save(extra / where, a)
    _loads_cleanly_or_says_why(plugins, d)


TABLE_FIELDS = st.sampled_from(
    [
        ("interactions.csv", c)
        for c in ("video_id", "music_id", "uploader_id", "split", "true_compat")
    ]
    + [("music_genres.csv", c) for c in ("music_id", "genre")]
)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    st.lists(
        st.tuples(TABLE_FIELDS, st.integers(min_value=0, max_value=60), HOSTILE_CELLS.map(str)),
        min_size=1,
        max_size=3,
    )
)
@example([(("interactions.csv", "uploader_id"), 1, "9" * 30)])  # was an OverflowError
def test_the_tables_reader_never_gives_a_traceback(tmp_path_factory, plugins, tab_dir, changes):
    import shutil

    import pandas as pd

    d = tmp_path_factory.mktemp("tab") / "ds"
    shutil.copytree(tab_dir, d)
    for (file, column), row, value in changes:
        frame = pd.read_csv(d / file, dtype=str, keep_default_na=False)
        frame.loc[row % len(frame), column] = value
        frame.to_csv(d / file, index=False)
    _loads_cleanly_or_says_why(plugins, d)


# -- grids with --set values, run end to end (the chance scorer, re-ranked by Calibration) -------

SET_VALUES = st.one_of(
    NUMBERS,
    st.floats(min_value=0, max_value=1).map(repr),
    st.integers(min_value=1, max_value=60).map(str),
    st.sampled_from(['"pessimistic"', '"expected"', "[10, 25]", "[]", "[0]", "true", '"x"']),
)
SET_KEYS = st.sampled_from(
    [
        "calibration.lam",
        "calibration.alpha",
        "calibration.list_length",
        "calibration.seed",
        "protocol.tie",
        "protocol.ks",
        "protocol.n_negatives",
        "batch_size",
        "epochs",
        "nope",
    ]
)


def _toml(value: str) -> str:
    """A drawn value as TOML (strings that are not TOML become TOML strings)."""
    from benchkit.experiments.grid import tomllib

    try:
        tomllib.loads(f"v = {value}")
        return value
    except tomllib.TOMLDecodeError:
        return '"' + value.encode("unicode_escape").decode().replace('"', '\\"') + '"'


@pytest.mark.filterwarnings("ignore")
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(SET_KEYS, SET_VALUES, max_size=3))
def test_grids_with_set_values_run_or_say_why_in_one_line(tmp_path_factory, sets):
    import math

    folder = tmp_path_factory.mktemp("grid")
    body = ", ".join(f'"{k}" = {_toml(v)}' for k, v in sets.items())
    (folder / "g.toml").write_text(
        'name = "g"\nkind = "table"\nmetrics = ["recall@25"]\ntest_sets = ["given"]\n'
        '[[rows]]\nlabel = "chance"\nbackbone = "random"\ndebias = "calibration"\n'
        f"set = {{ {body} }}\n"
    )
    args = ["experiment", str(folder / "g.toml"), "--preset", "tiny", "-q", "--out", str(folder)]
    result = CliRunner().invoke(cli, [*args, "--executor", "local"])
    event(f"exit {result.exit_code}")
    no_traceback(result)
    if result.exit_code == 0:
        import pandas as pd

        table = pd.read_csv(folder / "g.csv")
        values = table["recall@25"] if "recall@25" in table else table["mean"]
        assert len(values) and values.map(math.isfinite).all(), table  # never a silent NaN
