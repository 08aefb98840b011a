"""The plugin system: registry validation, isolation of broken plugins, env-var selection."""

from __future__ import annotations

import types

import pytest

from benchkit import hookimpl
from benchkit.errors import PluginError, UnknownNameError
from benchkit.interfaces import Backbone, Strategy
from benchkit.plugins import load_plugins


class _Toy(Backbone):
    """A toy backbone used to exercise registration only."""

    name = "toy"

    def encode_video(self, x):
        raise NotImplementedError

    def encode_music(self, x):
        raise NotImplementedError

    def loss_terms(self, batch, out):
        return {}


def _module(name, **hooks):
    mod = types.ModuleType(name)
    for hook, fn in hooks.items():
        setattr(mod, hook, hookimpl(fn))
    return mod


def test_manager_without_entry_points_has_only_builtins_and_extras():
    extra = _module("toyplug", register_backbones=lambda register: register(_Toy))
    ps = load_plugins(entry_points=False, extra=[("toyplug", extra)])
    assert ps.backbones.names() == ["toy"]
    assert ps.strategies.names() == ["none"]  # the harness's own: it cannot be blocked
    assert ps.executors.names() == ["local", "process", "ray"]
    assert set(ps.protocols.names()) == {"paper", "full"}
    oracle = {f"{p}_{m}" for p in ("cf", "bd", "fit") for m in ("recall", "ndcg")}
    assert set(ps.metrics.names()) == {"recall", "ndcg", "true_ndcg", "bias_amp", *oracle}
    assert ps.datasets.names() == ["reference", "synth", "tables"]
    assert ps.info["toyplug"].registered == [("backbone", "toy")]


def test_builtin_methods_arrive_through_entry_points(plugins):
    assert "cmvae" in plugins.backbones
    assert plugins.backbones.entry("cmvae").plugin == "cmvae"
    assert plugins.info["cmvae"].distribution == "benchkit"
    assert "none" in plugins.strategies


def test_duplicate_name_names_both_plugins():
    a = _module("first", register_backbones=lambda register: register(_Toy))
    b = _module("second", register_backbones=lambda register: register(_Toy))
    ps = load_plugins(entry_points=False, extra=[("first", a), ("second", b)])
    assert ps.backbones.entry("toy").plugin == "first"
    (failure,) = ps.failures
    assert failure.name == "second"
    assert "'first'" in failure.error and "'second'" in failure.error
    with pytest.raises(PluginError, match="clashes"):
        load_plugins(entry_points=False, extra=[("first", a), ("second", b)], strict=True)


@pytest.mark.parametrize(
    ("register_call", "message"),
    [
        (lambda register: register(_Toy, name="Bad Name"), "slug"),
        (lambda register: register(_Toy, name="ok", aliases=("9lives",)), "slug"),
        (lambda register: register(object), "without a name"),
        (lambda register: register(dict, name="dict"), "subclass of benchkit.interfaces.Backbone"),
        (
            lambda register: register(Strategy, name="strat"),
            "subclass of benchkit.interfaces.Backbone",
        ),
    ],
)
def test_bad_registrations_are_reported_with_the_plugin(register_call, message):
    bad = _module("badplug", register_backbones=register_call)
    ps = load_plugins(entry_points=False, extra=[("badplug", bad)])
    (failure,) = ps.failures
    assert failure.name == "badplug"
    assert message in failure.error
    assert "badplug" in failure.error or message == "slug" or "subclass" in failure.error
    assert ps.backbones.names() == []


def test_abstract_backbone_is_refused():
    class Half(Backbone):
        name = "half"

    bad = _module("halfplug", register_backbones=lambda register: register(Half))
    ps = load_plugins(entry_points=False, extra=[("halfplug", bad)])
    assert "does not implement" in ps.failures[0].error


def test_plugin_raising_in_a_hook_is_isolated_and_rolled_back():
    def hook(register):
        register(_Toy)
        raise RuntimeError("boom")

    bad = _module("raiser", register_backbones=hook)
    good = _module("good", register_strategies=lambda register: None)
    ps = load_plugins(entry_points=False, extra=[("raiser", bad), ("good", good)])
    assert "RuntimeError: boom" in ps.failures[0].error
    assert "toy" not in ps.backbones  # the half-done registration was rolled back
    assert "good" in ps.info


def test_aliases_resolve_and_unknown_names_list_what_is_installed():
    mod = _module("aliased", register_backbones=lambda register: register(_Toy, aliases=("t",)))
    ps = load_plugins(entry_points=False, extra=[("aliased", mod)])
    assert ps.backbones.get("t") is _Toy
    with pytest.raises(UnknownNameError, match=r"unknown backbone 'nope'; installed: toy"):
        ps.backbones.get("nope")


BROKEN = "raise ImportError('this plugin is broken on purpose')\n"
EXTRA = """
from benchkit import hookimpl
from benchkit_plugins.backbones.cmvae import CMVAE

class Big(CMVAE):
    name = "big"

@hookimpl
def register_backbones(register):
    register(Big)
"""


def test_entry_point_that_fails_to_import_is_reported(install_plugin):
    install_plugin("broken-dist", {"broken": "broken_mod"}, {"broken_mod": BROKEN})
    ps = load_plugins()
    failure = next(f for f in ps.failures if f.name == "broken")
    assert failure.distribution == "broken-dist"
    assert "this plugin is broken on purpose" in failure.error
    assert "cmvae" in ps.backbones  # everything else still loads


def test_block_and_only_env_vars(install_plugin, monkeypatch):
    install_plugin("extra-dist", {"bigplug": "big_mod"}, {"big_mod": EXTRA})
    assert "big" in load_plugins().backbones
    monkeypatch.setenv("BENCHKIT_BLOCK_PLUGINS", "extra-dist")
    assert "big" not in load_plugins().backbones
    monkeypatch.delenv("BENCHKIT_BLOCK_PLUGINS")
    monkeypatch.setenv("BENCHKIT_PLUGINS", "bigplug")
    ps = load_plugins()
    assert ps.backbones.names() == ["big"]
    assert "cmvae" not in ps.backbones
