"""Every strategy with every backbone on the tiny world: it runs, or it is refused in one line."""

from __future__ import annotations

import math

import pytest

from benchkit.api import run
from benchkit.errors import ConfigError
from benchkit.plugins import load_plugins
from benchkit.testing import check_strategy

_PLUGINS = load_plugins()
BACKBONES = _PLUGINS.backbones.names()
STACKS = _PLUGINS.strategies.names()  # strategies and stack aliases (debcm)

# What must be refused, and why: the matrix fails if anything else is refused or these run.
REFUSED = {
    ("cevar", "du"),
    ("cevar", "kl_distill"),
    ("cmvbr", "kl_distill"),
    ("dscmr", "kl_distill"),
    ("uwml", "kl_distill"),
    *{
        (b, s)
        for b in ("cca", "random", "oracle", "popularity")
        for s in STACKS
        if s not in ("none", "calibration")
    },
}


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("stack", STACKS)
def test_matrix(plugins, tiny, backbone, stack):
    if (backbone, stack) in REFUSED:
        with pytest.raises(ConfigError) as err:
            run(backbone, stack, dataset=tiny, epochs=1, plugins=plugins)
        assert str(err.value).count("\n") == 0 and len(str(err.value)) > 20
        return
    out = run(backbone, stack, dataset=tiny, epochs=1, patience=1, plugins=plugins)
    assert all(math.isfinite(v) for v in out.metrics.values()), out.metrics


@pytest.mark.parametrize("name", [n for n in STACKS if n != "debcm"])
def test_strategy_conformance(plugins, name):
    report = check_strategy(plugins.strategies.get(name))  # every backbone: trains, or refused
    assert "train/evaluate/save/load" in report.checks and "backbones" in report.checks
    # Each backbone either trains every parameter the strategy adds, or refuses it.
    ran = {k for k, v in report.figures.items() if k.startswith("backbone ") and v == 1.0}
    assert ran and all(f"backbone {b}" in report.figures for b in BACKBONES)
