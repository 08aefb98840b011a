"""Shared fixtures: a private cache folder, the tiny synthetic world, the installed plugins."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

# Before benchkit is imported anywhere: keep the tests' synthetic worlds out of the user's cache,
# in a folder removed when the session ends (each run used to leave ~20 MB in the temp folder).
if "BENCHKIT_CACHE" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="benchkit-test-cache-")
    os.environ["BENCHKIT_CACHE"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
os.environ.pop("BENCHKIT_PLUGINS", None)
os.environ.pop("BENCHKIT_BLOCK_PLUGINS", None)


@pytest.fixture(scope="session")
def plugins():
    from benchkit.plugins import load_plugins

    return load_plugins(strict=True)


@pytest.fixture(scope="session")
def tiny():
    from benchkit.data.synth import make_world

    return make_world("tiny", seed=0)


@pytest.fixture(scope="session")
def ref_dir(tmp_path_factory, tiny):
    """The tiny world in the DebCM release layout (copy it before changing it)."""
    from benchkit.data.reference import write_reference

    return write_reference(tiny, tmp_path_factory.mktemp("ref") / "ds")


@pytest.fixture(scope="session")
def tab_dir(tmp_path_factory, tiny):
    """The tiny world in the tables layout (copy it before changing it)."""
    from benchkit.data.tables import write_tables

    return write_tables(tiny, tmp_path_factory.mktemp("tab") / "ds")


@pytest.fixture(autouse=True)
def _fresh_default_plugins():
    """Each test sees a freshly loaded default plugin set (tests change env vars and sys.path)."""
    from benchkit.plugins import reset_plugins

    reset_plugins()
    yield
    reset_plugins()


@pytest.fixture
def install_plugin(tmp_path, monkeypatch):
    """Install a throw-away distribution with ``benchkit`` entry points on ``sys.path``.

    ``install_plugin("dist-name", {"ep-name": "module"}, {"module": "source"})`` writes the modules and
    a ``.dist-info`` folder, exactly what pip leaves behind, so entry-point discovery finds it.
    """
    import importlib
    import textwrap

    def install(
        dist: str, entry_points: dict[str, str], modules: dict[str, str], version: str = "1.0"
    ) -> None:
        root = tmp_path / f"site-{dist}"
        root.mkdir()
        for mod, source in modules.items():
            (root / f"{mod}.py").write_text(textwrap.dedent(source))
        info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        eps = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
        (info / "entry_points.txt").write_text(f"[benchkit]\n{eps}\n")
        monkeypatch.syspath_prepend(str(root))
        importlib.invalidate_caches()

    return install


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under BENCHKIT_NO_SKIPS=1 (CI) a skipped test fails: an optional part (Ray, MLflow, Optuna,
    TeX) that CI forgot to install must turn CI red, not silently go untested."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("BENCHKIT_NO_SKIPS") == "1" and call.excinfo is not None:
        report.outcome = "failed"
        report.longrepr = f"skipped under BENCHKIT_NO_SKIPS=1: {call.excinfo.value}"
