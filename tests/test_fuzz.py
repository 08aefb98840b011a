"""Hostile input, generated: whatever a user types on the command line or writes in a grid file,
benchkit answers with a result or one line — never a traceback.

The command-line fuzz runs the chance scorer on the tiny world (no training), so that the inputs
hypothesis draws which happen to be valid finish in a second; the grid fuzz only loads the file
(``load_grid`` is where a grid's schema is checked, before anything runs).
"""

from __future__ import annotations

import string

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from benchkit.cli import cli
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
