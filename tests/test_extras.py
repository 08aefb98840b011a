"""Optional parts: the README's table of extras is the code's, and a missing one is one line that
says which `pip install` fixes it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from benchkit.cli import cli
from benchkit.extras import EXTRAS

ROOT = Path(__file__).resolve().parents[1]
if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_the_readme_table_of_extras_is_the_code_s():
    readme = (ROOT / "README.md").read_text()
    table = dict(re.findall(r"^\| `(\w+)` \| `(\w+)` \|", readme, re.M))
    assert table == {extra: module for extra, (module, _) in EXTRAS.items()}
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for extra in EXTRAS:
        assert extra in optional and set(optional[extra]) <= set(optional["dev"])
        assert set(optional[extra]) <= set(optional["all"])


def without(monkeypatch, module: str) -> None:
    """Make ``module`` unimportable, as on a machine without its extra."""
    for name in list(sys.modules):
        if name == module or name.startswith(module + "."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)


def one_line(res, fix: str) -> None:
    assert res.exit_code != 0
    assert f"pip install 'benchkit[{fix}]'" in res.output, res.output
    assert res.output.count("\n") == 1 and "Traceback" not in res.output


def test_parquet_without_pyarrow(monkeypatch, tmp_path, tiny):
    from benchkit.data.tables import write_tables

    data = write_tables(tiny, tmp_path / "data")
    pd.read_csv(data / "interactions.csv").to_parquet(data / "interactions.parquet")
    (data / "interactions.csv").unlink()
    videos = pd.DataFrame(np.zeros((2, 3)), columns=["a", "b", "c"])
    videos.to_parquet(tmp_path / "videos.parquet")
    without(monkeypatch, "pyarrow")
    without(monkeypatch, "fastparquet")
    one_line(CliRunner().invoke(cli, ["data", "validate", str(data)]), "parquet")
    from benchkit.errors import ConfigError
    from benchkit.frames import write_frame

    with pytest.raises(ConfigError, match=r"pip install 'benchkit\[parquet\]'"):
        write_frame(videos, str(tmp_path / "out.parquet"))
    assert not (tmp_path / "out.parquet").exists()


def test_curves_without_matplotlib(monkeypatch, tmp_path):
    without(monkeypatch, "matplotlib")
    monkeypatch.delitem(sys.modules, "benchkit.report.figures", raising=False)
    res = CliRunner().invoke(
        cli, ["results", "--out", str(tmp_path), "--curves", str(tmp_path / "c.png")]
    )
    one_line(res, "plots")


def test_tune_without_optuna(monkeypatch):
    without(monkeypatch, "optuna")
    res = CliRunner().invoke(cli, ["tune", "--preset", "tiny", "--trials", "1"])
    one_line(res, "tune")


@pytest.mark.parametrize("extra", sorted(EXTRAS))
def test_every_extra_names_its_install_line(extra):
    from benchkit.extras import missing

    message = str(missing(extra, "this"))
    assert message.endswith(f"pip install 'benchkit[{extra}]'") and "\n" not in message
