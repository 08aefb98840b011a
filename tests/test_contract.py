"""The plugin author's reference is the code: the document equals what the code generates, every
field is explained, every example runs, a wrong return is one line that names what went wrong, and
the conformance kit refuses a strategy that changes nothing."""

from __future__ import annotations

import textwrap
import types
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import benchkit.interfaces as interfaces
from benchkit import hookimpl
from benchkit.api import run
from benchkit.cli import cli
from benchkit.contract import CONTRACT_TYPES, examples, fields, reference_markdown
from benchkit.errors import PluginError
from benchkit.interfaces import Strategy, Weights
from benchkit.plugins import load_plugins
from benchkit.testing import check_strategy

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def test_the_reference_in_the_docs_is_generated_from_the_code():
    text = DOC.read_text()
    section = text.split("<!-- contract:start -->\n", 1)[1].split("<!-- contract:end -->", 1)[0]
    assert section == reference_markdown(), "regenerate it: benchkit.contract.reference_markdown()"


@pytest.mark.parametrize("name", CONTRACT_TYPES)
def test_every_field_is_explained(name):
    cls = getattr(interfaces, name)
    listed = {f for f, _, _ in fields(cls)}
    assert listed == set(cls.__dataclass_fields__)  # no field left out of the reference
    for field, _, meaning in fields(cls):
        assert meaning, f"{name}.{field} has no string under it"


def test_every_example_of_a_type_runs():
    names = {"torch": torch, "load_plugins": load_plugins}
    names.update({n: getattr(interfaces, n) for n in CONTRACT_TYPES})
    for name in CONTRACT_TYPES:
        code = examples()[name]
        assert code, f"{name} has no example"
        exec(compile(code, f"<example of {name}>", "exec"), dict(names))


def _example_class(base: type, prefix: str, **attrs: object) -> type:
    """A plugin class made of the reference's hook examples, exactly as printed."""
    namespace: dict[str, object] = {"torch": torch}
    namespace.update({n: getattr(interfaces, n) for n in CONTRACT_TYPES})
    namespace["LossTerm"] = interfaces.LossTerm
    body = {}
    for key, code in examples().items():
        if key.startswith(prefix):
            assert code, f"{key} has no example"
            exec(compile(textwrap.dedent(code), f"<example of {key}>", "exec"), namespace)
            body[key.split(".", 1)[1]] = namespace[key.split(".", 1)[1]]
    return type(f"Example{base.__name__}", (base,), {**body, **attrs})


def test_the_hook_examples_train_and_score_together(tiny):
    backbone = _example_class(
        interfaces.Backbone,
        "Backbone.",
        name="example_backbone",
        description="the reference's examples",
        defaults={"lr": 1e-3, "weight_decay": 0.0, "batch_size": 128, "epochs": 1},
        ranges=interfaces.TRAINING_RANGES,
        variational=True,  # what the strategy example's check_backbone asks for
    )
    strategy = _example_class(
        Strategy,
        "Strategy.",
        name="example_strategy",
        description="the reference's examples",
        requires=frozenset({"genres", "uploaders"}),
    )
    module = types.ModuleType("reference_examples")
    module.register_backbones = hookimpl(lambda register: register(backbone))  # type: ignore[attr-defined]
    module.register_strategies = hookimpl(lambda register: register(strategy))  # type: ignore[attr-defined]
    plugins = load_plugins(extra=[("reference_examples", module)], strict=True)
    result = run(
        "example_backbone", "example_strategy", dataset=tiny, protocol="full", plugins=plugins
    )
    assert result.metrics["recall@25"] > 0 and "example_strategy" in result.training["strategies"]


class Constant(Strategy):
    name = "constant"
    description = "constant anchor weights: normalised away, so nothing changes"

    def weights(self, batch):
        return Weights(anchor=torch.full((batch.size,), 3.0))


def test_the_kit_fails_a_strategy_that_changes_nothing(tiny):
    with pytest.raises(AssertionError) as info:
        check_strategy(Constant, dataset=tiny, all_backbones=False)
    message = str(info.value)
    assert "check_strategy(Constant): changes nothing" in message and "\n" not in message

    class OnPurpose(Constant):
        name = "on_purpose"
        no_op_reason = "a placeholder that keeps a grid's stack shape"

    report = check_strategy(OnPurpose, dataset=tiny, all_backbones=False)
    assert f"no-op on purpose: {OnPurpose.no_op_reason}" in report.checks


class BareTensor(Strategy):
    name = "bare_tensor"
    description = "returns a tensor where Weights are expected"

    def weights(self, batch):
        return torch.ones(batch.size)


def test_a_wrong_return_names_the_plugin_the_hook_and_both_types(tiny):
    module = types.ModuleType("bare_plugin")
    module.register_strategies = hookimpl(lambda register: register(BareTensor))  # type: ignore[attr-defined]
    plugins = load_plugins(extra=[("bare", module)])
    with pytest.raises(PluginError) as info:
        run("cmvae", "bare_tensor", dataset=tiny, epochs=1, plugins=plugins)
    message = str(info.value)
    assert message.startswith(f"strategy 'bare_tensor' (plugin module {BareTensor.__module__}")
    assert "weights() must return Weights, or None for no weights" in message
    assert "it returned a Tensor of shape (" in message and "\n" not in message


def test_a_wrong_return_is_one_line_on_the_command_line(install_plugin):
    install_plugin(
        "wrong-dist",
        {"wrong": "wrong_mod"},
        {
            "wrong_mod": """
                from benchkit import hookimpl
                from benchkit.interfaces import Strategy

                class Wrong(Strategy):
                    name = "wrong"
                    description = "moves the music codes, but returns a bare tensor"

                    def adjust_music(self, music, rows):
                        return music.mu

                @hookimpl
                def register_strategies(register):
                    register(Wrong)
            """
        },
    )
    res = CliRunner().invoke(cli, ["run", "--preset", "tiny", "-d", "wrong", "--epochs", "1", "-q"])
    assert res.exit_code == 1
    assert "strategy 'wrong' (plugin module wrong_mod" in res.output
    assert "adjust_music() must return a Latent with the input's rows" in res.output
    assert res.output.count("\n") == 1 and "Traceback" not in res.output
