"""The example plugin passes benchkit's conformance kit, as a third party's plugin would."""

from benchkit_example.plugin import InfoNCE, PopularityPenalty

from benchkit.plugins import load_plugins
from benchkit.testing import check_backbone, check_strategy


def test_backbone_conforms():
    report = check_backbone(InfoNCE)
    assert report.figures["recall@25"] > report.figures["chance"]


def test_strategy_conforms():
    check_strategy(PopularityPenalty, all_backbones=False)


def test_registered_through_the_entry_point():
    plugins = load_plugins()
    assert plugins.backbones.entry("infonce").plugin == "example"
    assert plugins.strategies.entry("popularity_penalty").plugin == "example"
