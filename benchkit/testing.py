"""Conformance checks for plugin authors: run them in your own test suite.

    from benchkit.testing import check_backbone

    def test_my_backbone_conforms():
        check_backbone(MyBackbone)

Each check raises ``AssertionError`` naming the class and what failed; on success the returned
:class:`Report` lists what was checked and the trained model's figures. The checks use the tiny
synthetic world (seconds) unless you pass a dataset. benchkit's own backbones pass the same checks in
its test suite.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import torch

from benchkit.data.dataset import Dataset
from benchkit.evaluate import FullProtocol, evaluate
from benchkit.interfaces import Backbone, LossTerm, Weights
from benchkit.method import Method
from benchkit.options import resolve
from benchkit.pairs import Pairs, ugc_pairs
from benchkit.plugins import load_plugins
from benchkit.registry import SLUG
from benchkit.spec import RunSpec
from benchkit.train import fit

GRANULARITIES = ("anchor", "cell", "none")


@dataclass
class Report:
    name: str
    checks: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)


def _tiny() -> Dataset:
    from benchkit.data.synth import make_world

    return make_world("tiny", seed=0)


def _declared(cls: type, fail: Any, report: Any) -> None:
    """The hyperparameter declarations pass :func:`check_hparams` (else ``fail``'s one line)."""
    try:
        check_hparams(cls)
    except AssertionError as exc:
        raise fail(cls, str(exc)) from None
    report.checks.append("attributes")


def _fail(cls: type, what: str) -> AssertionError:
    return AssertionError(f"check_backbone({cls.__name__}): {what}")


def _build(cls: type[Backbone], data: Dataset, seed: int, hparams: dict[str, Any]) -> Method:
    torch.manual_seed(seed)
    return Method.assemble(cls(**hparams), (), data.spec())


def _check_term(cls: type, key: str, term: LossTerm, b: int) -> None:
    v = term.value
    if term.kind == "scalar" and v.dim() != 0:
        raise _fail(cls, f"scalar term {key!r} has shape {tuple(v.shape)}")
    if term.kind == "anchor" and tuple(v.shape) != (b,):
        raise _fail(cls, f"anchor term {key!r} must have shape ({b},), got {tuple(v.shape)}")
    if term.kind == "cell":
        if v.dim() != 2 or v.shape[0] != b:
            raise _fail(cls, f"cell term {key!r} must have shape ({b}, C), got {tuple(v.shape)}")
        if term.cols is None and v.shape[1] != b:
            raise _fail(cls, f"dense cell term {key!r} must be ({b}, {b}) or give cols")
        if term.cols is not None and (
            term.cols.shape != v.shape or term.cols.min() < 0 or term.cols.max() >= b
        ):
            raise _fail(cls, f"cell term {key!r}: cols must match its shape and index the batch")


def _batch_terms(
    method: Method, pairs: Pairs, weights: Weights | None, seed: int
) -> dict[str, torch.Tensor]:
    """Each loss term of one fixed batch, reduced under ``weights`` (uncoefficiented)."""
    from benchkit.method import reduce_term

    torch.manual_seed(seed)
    batch = pairs.batch(torch.arange(min(len(pairs), 256)))
    _, terms = method(batch)
    return {k: reduce_term(t, weights) for k, t in terms.items()}


def _batch_loss(method: Method, pairs: Pairs, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    loss, _ = method.loss(pairs.batch(torch.arange(min(len(pairs), 256))))
    return loss


def check_backbone(
    cls: type[Backbone],
    *,
    dataset: Dataset | None = None,
    hparams: dict[str, Any] | None = None,
    epochs: int = 15,
    min_gain: float = 0.05,
) -> Report:
    """Check a backbone class against the contract and that it learns.

    Checks: class attributes; code and score shapes; loss terms of the declared granularity;
    a forward/backward pass reaching every parameter; determinism under a seed; a state round trip
    through ``torch.save`` / ``torch.load(weights_only=True)``; that anchor (and, for ``cell``
    backbones, cell) weights reach the loss; and that after at most ``epochs`` epochs on the tiny
    world it beats the chance scorer's Recall@25 under the ``full`` protocol by ``min_gain``.
    """
    data = dataset if dataset is not None else _tiny()
    hp = dict(hparams or {})
    report = Report(name=getattr(cls, "name", cls.__name__))

    if not (isinstance(cls, type) and issubclass(cls, Backbone)):
        raise _fail(cls, "not a subclass of benchkit.interfaces.Backbone")
    if not SLUG.match(cls.name or ""):
        raise _fail(cls, f"name {cls.name!r} is not a lower-case slug")
    if not cls.description:
        raise _fail(cls, "give the class a one-line `description`")
    if cls.loss_granularity not in GRANULARITIES:
        raise _fail(cls, f"loss_granularity must be one of {GRANULARITIES}")
    needed = {"batch_size", "epochs"} | (set() if cls.closed_form else {"lr"})
    if not needed <= set(cls.defaults):
        raise _fail(cls, f"defaults must include {sorted(needed - set(cls.defaults))}")
    _declared(cls, _fail, report)

    device = torch.device("cpu")
    pairs = ugc_pairs(data, "train", device)
    method = _build(cls, data, 0, hp)
    method.eval()
    x_v = torch.from_numpy(data.video_features[:7]).float()
    x_m = torch.from_numpy(data.music_features[:5]).float()
    cv, cm = method.video_codes(x_v), method.music_codes(x_m)
    if cv.shape[0] != 7 or cm.shape[0] != 5:
        raise _fail(cls, f"codes have {cv.shape[0]} and {cm.shape[0]} rows for 7 and 5 inputs")
    scores = method.backbone.score(cv, cm)
    if tuple(scores.shape) != (7, 5) or not torch.isfinite(scores).all():
        raise _fail(cls, f"score(video, music) must be a finite (7, 5) matrix, got {scores.shape}")
    report.checks.append("shapes")

    if not cls.closed_form:
        method.train()
        torch.manual_seed(0)
        batch = pairs.batch(torch.arange(min(len(pairs), 256)))
        _, terms = method(batch)
        if not terms:
            raise _fail(cls, "loss_terms returned no terms")
        for key, term in terms.items():
            _check_term(cls, key, term, batch.size)
        kinds = {t.kind for t in terms.values()}
        if cls.loss_granularity == "cell" and "cell" not in kinds:
            raise _fail(cls, "declares cell granularity but exposes no cell term")
        if cls.loss_granularity == "anchor" and "cell" in kinds:
            raise _fail(cls, "exposes cell terms: declare loss_granularity = 'cell'")
        report.checks.append("loss terms")

        loss = _batch_loss(method, pairs, 1)
        if not torch.isfinite(loss):
            raise _fail(cls, f"loss is {loss.item()}")
        loss.backward()
        for pname, p in method.named_parameters():
            if p.requires_grad and (
                p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0
            ):
                raise _fail(cls, f"parameter {pname!r} receives no (finite) gradient")
        report.checks.append("gradients")

        again = _build(cls, data, 0, hp)
        again.train()
        if _batch_loss(again, pairs, 1).item() != loss.item():
            raise _fail(cls, "the loss differs between two builds under the same seed")
        report.checks.append("determinism")

        b = min(len(pairs), 256)
        ramp = torch.linspace(0.1, 2.0, b)
        with torch.no_grad():
            base = _batch_terms(method, pairs, None, 2)
            anchor = _batch_terms(method, pairs, Weights(anchor=ramp), 2)
            if all(base[k].item() == anchor[k].item() for k in base):
                raise _fail(cls, "anchor weights change no loss term: are the terms reduced?")
            if cls.loss_granularity == "cell":
                cell = _batch_terms(method, pairs, Weights(cell=ramp[:, None] * ramp[None, :]), 2)
                if all(base[k].item() == cell[k].item() for k in base):
                    raise _fail(cls, "cell weights change no loss term")
        report.checks.append("weights")

    result = fit(
        method,
        pairs,
        epochs=epochs,
        batch_size=cls.defaults["batch_size"],
        seed=0,
        precision="fp32",
    )
    buf = io.BytesIO()
    torch.save(method.state_dict(), buf)
    buf.seek(0)
    clone = _build(cls, data, 1, hp)
    clone.load_state_dict(torch.load(buf, weights_only=True))
    clone.eval()
    method.eval()
    if not (
        torch.allclose(method.video_codes(x_v), clone.video_codes(x_v))
        and torch.allclose(method.music_codes(x_m), clone.music_codes(x_m))
    ):
        raise _fail(cls, "codes change after a save/load round trip of the state dict")
    report.checks.append("save/load")

    metrics = load_plugins(entry_points=False).metrics
    protocol = FullProtocol()
    got = evaluate(method, data, protocol, metrics, "test", device).metrics["recall@25"]
    chance = 25 / data.n_music
    report.figures.update({"recall@25": got, "chance": chance, "epochs": float(result.epochs_run)})
    if got < chance + min_gain:
        raise _fail(
            cls,
            f"after {result.epochs_run} epochs Recall@25 is {got:.3f}, not above "
            f"chance {chance:.3f} + {min_gain}",
        )
    report.checks.append("learns")
    return report


def check_hparams(cls: type) -> None:
    """Every numeric hyperparameter (a number, or a tuple of numbers) declares what it may be in
    ``ranges``, and every default lies within its range: a bad ``--set`` then fails in one line."""
    from benchkit.contracts.params import _out_of_range

    for key, value in cls.defaults.items():  # type: ignore[attr-defined]
        values = value if isinstance(value, (tuple, list)) else (value,)
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numeric and key not in cls.ranges:  # type: ignore[attr-defined]
            raise AssertionError(
                f"{cls.__name__}: hyperparameter {key!r} declares no range; add it to `ranges` "
                f"(benchkit.interfaces.Range, or a tuple of choices)"
            )
    for key, allowed in cls.ranges.items():  # type: ignore[attr-defined]
        if key in cls.defaults:  # type: ignore[attr-defined]
            problem = _out_of_range(cls.defaults[key], allowed)  # type: ignore[attr-defined]
            if problem:
                raise AssertionError(f"{cls.__name__}: the default of {key!r} {problem}")


def _fail_s(cls: type, what: str) -> AssertionError:
    return AssertionError(f"check_strategy({cls.__name__}): {what}")


def check_strategy(
    cls: type,
    *,
    dataset: Dataset | None = None,
    backbone: str = "cmvae",
    hparams: dict[str, Any] | None = None,
    epochs: int = 2,
    all_backbones: bool = True,
) -> Report:
    """Check a strategy class against the contract, with ``backbone`` (CMVAE by default).

    Checks: class attributes; that the default backbone is compatible; each hook it overrides
    returns the right shapes (weights positive and finite, music codes and scores shaped as given,
    extra terms of valid granularity, re-ranked candidates finite); a forward/backward pass reaching
    every parameter it adds; determinism under a seed; a state round trip of the whole method; that
    it trains and evaluates; and, for every installed backbone, either a finite training step in
    which every parameter the strategy adds receives gradient, or a clear refusal (listed in
    ``report.figures`` as 1.0 / 0.0 per backbone).
    """
    from benchkit.interfaces import REQUIREMENTS, RunContext, Strategy
    from benchkit.stack import incompatibility
    from benchkit.train import Trainer

    data = dataset if dataset is not None else _tiny()
    plugins = load_plugins()
    hp = dict(hparams or {})
    report = Report(name=getattr(cls, "name", cls.__name__))
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise _fail_s(cls, "not a subclass of benchkit.interfaces.Strategy")
    if not SLUG.match(cls.name or "") or not cls.description:
        raise _fail_s(cls, "needs a slug `name` and a one-line `description`")
    if not set(cls.requires) <= REQUIREMENTS:
        raise _fail_s(cls, f"requires must be a subset of {sorted(REQUIREMENTS)}")
    _declared(cls, _fail_s, report)

    device = torch.device("cpu")
    ctx_for = {}

    def build(seed: int, bb_name: str = backbone) -> tuple[Method, Any]:
        torch.manual_seed(seed)
        bb = plugins.backbones.get(bb_name)(epochs=epochs)
        strategy = cls(**hp)
        problem = incompatibility(bb, strategy, data)
        if problem:
            return Method(bb), problem
        method = Method.assemble(bb, [strategy], data.spec(), device)
        trainer = Trainer.from_options(plugins, resolve(RunSpec(device=device.type, seed=seed)))
        ctx = RunContext(
            device=device, seed=seed, plugins=plugins, trainer=trainer, protocol=FullProtocol()
        )
        ctx_for[id(method)] = ctx
        strategy.prepare(data, ctx)
        return method, None

    method, problem = build(0)
    if problem:
        raise _fail_s(cls, f"the default backbone {backbone!r} is refused: {problem}")
    strategy = method.strategies[0]
    hooks = cls.hook_points()
    pairs = ugc_pairs(data, "train", device)
    method.train()
    torch.manual_seed(0)
    batch = pairs.batch(torch.arange(min(len(pairs), 128)))
    b = batch.size
    if "weights" in hooks:
        w = strategy.weights(batch)  # type: ignore[operator]
        for name, value, shape in (("anchor", w.anchor, (b,)), ("cell", w.cell, (b, b))):
            if value is not None and (
                tuple(value.shape) != shape or not torch.isfinite(value).all() or (value <= 0).any()
            ):
                raise _fail_s(cls, f"{name} weights must be positive, finite, shape {shape}")
    out, terms = method(batch)
    for key, term in terms.items():
        _check_term(cls, key, term, b)
    if tuple(out.scores.shape) != (b, b) or not torch.isfinite(out.scores).all():
        raise _fail_s(cls, "in-batch scores lost their (B, B) shape or became non-finite")
    report.checks.append("hooks")

    reason = getattr(cls, "no_op_reason", "")
    if "\n" in reason:
        raise _fail_s(cls, "no_op_reason must be one line")
    probe, _ = build(0)
    if _acts_like_none(probe, batch, _query(data, data.splits["test"][:16])):
        if not reason:
            raise _fail_s(
                cls,
                "changes nothing: the same loss, gradients and scores as 'none' on a fixed "
                "batch (weights are self-normalised, so constant ones do nothing); make it act, "
                "or say why on purpose with no_op_reason = '...'",
            )
        report.checks.append(f"no-op on purpose: {reason}")
    else:
        report.checks.append("changes the method")

    torch.manual_seed(0)
    loss, _ = method.loss(batch)
    loss.backward()
    for pname, p in strategy.named_parameters():
        if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0):
            raise _fail_s(cls, f"parameter {pname!r} receives no gradient")
    again, _ = build(0)
    again.train()
    torch.manual_seed(0)
    if again.loss(batch)[0].item() != loss.item():
        raise _fail_s(cls, "the loss differs between two builds under the same seed")
    report.checks.append("gradients/determinism")

    protocol = FullProtocol()
    ctx_for[id(method)].train(method, data, pairs=pairs)
    first = evaluate(method, data, protocol, plugins.metrics, "test", device).metrics
    if not all(torch.isfinite(torch.tensor(v)) for v in first.values()):
        raise _fail_s(cls, f"evaluation gave non-finite metrics: {first}")
    buf = io.BytesIO()
    torch.save(method.state_dict(), buf)
    buf.seek(0)
    clone, _ = build(1)
    clone.load_state_dict(torch.load(buf, weights_only=True))
    second = evaluate(clone, data, protocol, plugins.metrics, "test", device).metrics
    if first != second:
        raise _fail_s(cls, "metrics change after a save/load round trip of the state dict")
    if "rerank" in hooks:
        query = _query(data, torch.arange(3).numpy())
        scores = torch.randn(3, data.n_music)
        items = torch.arange(data.n_music).expand(3, -1)
        if tuple(strategy.rerank(scores, items, query).shape) != (3, data.n_music):  # type: ignore[operator]
            raise _fail_s(cls, "rerank must keep the (rows, candidates) shape")
    report.checks.append("train/evaluate/save/load")
    report.figures.update({f"test {k}": v for k, v in first.items() if k.startswith("recall")})

    for name in plugins.backbones.names() if all_backbones else []:
        m, refused = build(0, name)
        if refused:
            report.figures[f"backbone {name}"] = 0.0
            continue
        if m.backbone.closed_form:  # nothing trains; only inference-time strategies get here
            report.figures[f"backbone {name}"] = 1.0
            continue
        m.train()
        torch.manual_seed(0)
        step_loss, _ = m.loss(pairs.batch(torch.arange(min(len(pairs), 64))))
        if not torch.isfinite(step_loss):
            raise _fail_s(cls, f"non-finite loss with backbone {name!r}")
        step_loss.backward()
        own = m.strategies[0]
        for pname, p in own.named_parameters():
            if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0):
                raise _fail_s(
                    cls,
                    f"parameter {pname!r} receives no gradient with backbone {name!r}: the "
                    f"strategy would silently do nothing; refuse that backbone in "
                    f"check_backbone, or make it train through the method's scores",
                )
        report.figures[f"backbone {name}"] = 1.0
    if all_backbones:
        report.checks.append("backbones")
    return report


def _query(data: Dataset, rows: Any) -> Any:
    """Test ``rows`` of ``data`` against its whole pool, as the evaluation queries them."""
    from benchkit.interfaces import Query

    prior = data.video_prior[rows] if data.has("uploaders") else None
    return Query(
        video_idx=torch.as_tensor(rows),
        column_music_idx=torch.arange(data.n_music),
        prior=None if prior is None else torch.from_numpy(prior),
        video_features=torch.from_numpy(data.video_features[rows]).float(),
        music_features=torch.from_numpy(data.music_features).float(),
        music_genre=None if data.music_genre is None else torch.from_numpy(data.music_genre),
    )


def _acts_like_none(method: Method, batch: Any, query: Any) -> bool:
    """Whether ``method`` (a backbone and one strategy) gives the same loss, backbone gradients
    and ranking scores as its backbone alone (``none``) on one fixed batch and query."""
    import copy

    plain = Method(copy.deepcopy(method.backbone))
    losses, grads, scores = [], [], []
    for m in (method, plain):
        m.train()
        m.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        loss, _ = m.loss(batch)
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad for p in m.backbone.parameters()])
        m.eval()
        with torch.no_grad():
            video = m.video_codes(query.video_features)
            music = m.music_codes(query.music_features)
            s = m.score(video, music, query)
            items = query.column_music_idx.expand(s.shape[0], -1)
            scores.append(m.rerank(s, items, query))

    def same(a: Any, b: Any) -> bool:
        if a is None or b is None:
            return a is None and b is None
        return a.shape == b.shape and bool(torch.allclose(a, b, rtol=1e-6, atol=1e-9))

    return same(*losses) and all(same(a, b) for a, b in zip(*grads, strict=True)) and same(*scores)
