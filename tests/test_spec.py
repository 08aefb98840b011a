"""RunSpec: one declaration of every run option, the CLI generated from it, keys that cover
what changes the numbers, and the executor contract's worker body."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from click.testing import CliRunner

from benchkit.api import execute, plan_run, run
from benchkit.cli import cli
from benchkit.contracts.executor import Task
from benchkit.errors import ConfigError, UnknownNameError
from benchkit.executors.worker import run_task
from benchkit.spec import FIELD_NAMES, RunSpec, flag_of


def test_every_field_is_a_run_option_with_help():
    text = CliRunner().invoke(cli, ["run", "--help"], terminal_width=200).output
    for f in dataclasses.fields(RunSpec):
        assert f.metadata["help"], f.name
        assert flag_of(f.name) in text, f.name
    # The grid commands share the source and training options, but not the method's or the seed.
    grid = CliRunner().invoke(cli, ["table3", "--help"], terminal_width=200).output
    for name in ("preset", "world_seed", "data", "epochs", "precision", "threads"):
        assert flag_of(name) in grid
    for name in ("backbone", "debias", "seed", "test_set"):
        assert flag_of(name) + " " not in grid


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"setting": "both"}, "--setting: 'both' is not one of auto, ugc, ugc+pgc"),
        ({"epochs": 0}, "--epochs must be at least 1"),
        ({"seed": 2**64}, "--seed must be at most"),
        ({"seed": "7"}, "--seed: expected int"),
        ({"precision": "fp8"}, "--precision: 'fp8' is not one of"),
        ({"colour": "red"}, "unknown run option(s) colour"),
        ({"overrides": {"": 1}}, "override names must be non-empty"),
    ],
)
def test_bad_requests_fail_in_one_line(changes, message):
    with pytest.raises(ConfigError) as err:
        RunSpec().replace(**changes)
    assert message in str(err.value)


def test_spec_round_trips_through_a_dict():
    spec = RunSpec(debias="ips", overrides={"ips.clip": 0.2, "ks": [1, 2]}, epochs=3)
    again = RunSpec.from_dict(spec.to_dict())
    assert again == spec and hash(again) == hash(spec)
    assert set(spec.to_dict()) == set(FIELD_NAMES)


def test_key_covers_threads_and_numbers_depend_only_on_the_key(plugins, tiny):
    spec = RunSpec(backbone="cmvbr", epochs=1, threads=1)
    one = plan_run(spec, dataset=tiny, plugins=plugins)
    two = plan_run(spec.replace(threads=2), dataset=tiny, plugins=plugins)
    assert one.key != two.key  # float reductions differ with threads: so do keys
    again = plan_run(spec, dataset=tiny, plugins=plugins)
    assert again.key == one.key
    a = execute(one, plugins=plugins)
    b = execute(again, plugins=plugins)
    assert a.metrics == b.metrics  # same key, same numbers, to the last bit
    assert a.training["threads"] == 1 and torch.get_num_threads() >= 1


def test_key_holds_the_requested_precision_and_records_the_resolved_one(plugins, tiny):
    plan = plan_run(RunSpec(epochs=1, precision="auto"), dataset=tiny, plugins=plugins)
    forced = plan_run(RunSpec(epochs=1, precision="fp32"), dataset=tiny, plugins=plugins)
    assert plan.key != forced.key
    res = execute(plan, plugins=plugins)
    assert res.training["precision"] in ("fp32", "bf16")
    assert res.spec["precision"] == "auto"


def test_source_fields_enter_the_key_through_the_fingerprint(plugins, tiny, tmp_path):
    from benchkit.data.tables import write_tables

    path = write_tables(tiny, tmp_path / "t")
    on_disk = plan_run(RunSpec(data=str(path), epochs=1), plugins=plugins)
    moved = tmp_path / "moved"
    path.rename(moved)
    assert plan_run(RunSpec(data=str(moved), epochs=1), plugins=plugins).key == on_disk.key


def test_worker_refuses_a_key_it_cannot_reproduce(plugins):
    spec = RunSpec(preset="tiny", epochs=1, threads=1)
    out = run_task(Task("not-the-key", spec))
    assert out.record is None and "the driver planned key not-the-key" in out.error
    bad = run_task(Task("k", spec.replace(backbone="nope")))
    assert "unknown backbone 'nope'" in bad.error and bad.seconds >= 0


def test_none_and_blocked_essentials(monkeypatch, tiny):
    from benchkit.plugins import load_plugins

    monkeypatch.setenv("BENCHKIT_BLOCK_PLUGINS", "none,cmvae,benchkit.method,benchkit.metrics")
    ps = load_plugins()
    assert "none" in ps.strategies and "recall" in ps.metrics  # the harness's own
    res = run("dual_vae", "none", dataset=tiny, epochs=1, plugins=ps)
    assert res.metrics["recall@25"] > 0
    with pytest.raises(ConfigError) as err:
        run("dual_vae", "debcm", dataset=tiny, epochs=1, plugins=ps)
    assert "the PGC teacher's backbone is not available" in str(err.value)
    assert "plugin 'cmvae' blocked by BENCHKIT_BLOCK_PLUGINS" in str(err.value)
    assert "teacher=NAME" in str(err.value)
    with pytest.raises(UnknownNameError, match="blocked by BENCHKIT_BLOCK_PLUGINS"):
        run("cmvae", dataset=tiny, epochs=1, plugins=ps)


def test_companions_are_frozen_moved_and_saved_only_when_persistent(plugins, tiny):
    res = run("cmvae", "decrs", dataset=tiny, epochs=1, plugins=plugins)
    assert res.metrics["recall@25"] > 0
    plan = plan_run(RunSpec(debias="decrs+kl_distill", epochs=1), dataset=tiny, plugins=plugins)
    from benchkit.interfaces import RunContext
    from benchkit.method import Method
    from benchkit.train import Trainer

    bb, strategies = plan.backbone, plan.strategies
    bb.build(tiny.spec())
    for s in strategies:
        s.build(tiny.spec(), bb)
    device = torch.device("cpu")
    trainer = Trainer.from_options(plugins, plan.options)
    ctx = RunContext(device=device, seed=0, plugins=plugins, trainer=trainer)
    for s in strategies:
        s.prepare(plan.dataset, ctx)
    method = Method(bb, strategies).train()
    decrs, kl = strategies
    keys = method.state_dict().keys()
    assert any(k.startswith("strategies.0.plain.") for k in keys)  # needed at inference: saved
    assert not any("teacher" in k for k in keys)  # cached apart
    assert not decrs.held("plain").training and not kl.held("teacher").training
    trainable = {id(p) for p in method.parameters() if p.requires_grad}
    assert not any(id(p) in trainable for p in kl.held("teacher").parameters())
    assert not any(id(p) in trainable for p in decrs.held("plain").parameters())
    # Held tensors move with their strategy (a dtype change shows it on the CPU; the teacher is
    # shared through the in-process memo, so only DecRS is converted here).
    decrs.to(torch.float64)
    assert decrs.uploader_eta.dtype == torch.float64
    assert decrs.held("plain").backbone.video_encoder.mu.weight.dtype == torch.float64
    label = plugins.strategies.get("label_distill")(bridge=True)
    label.build(tiny.spec(), bb)
    label.prepare(plan.dataset, ctx)
    label.to(torch.float64)  # held tensors (the bridge's pool) move too
    assert label.held("pool_video").dtype == torch.float64
