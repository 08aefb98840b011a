"""The one training loop every method shares.

Tensors live on the device; an epoch is a random permutation cut into batches, each gathered by
index — no DataLoader, no per-sample Python. After every epoch the method is validated with the
protocol's selection metric; the best state is kept in memory and restored at the end, and training
stops early when the metric has not improved for ``patience`` epochs.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from benchkit.device import keep_freed_memory
from benchkit.errors import BenchkitError
from benchkit.files import cache_root
from benchkit.flops import counted, step_flops_per_pair
from benchkit.method import Method
from benchkit.options import RESOLVED_PRECISIONS, RunOptions
from benchkit.pairs import Pairs, PooledPairs
from benchkit.reuse import load_training, save_training, training_key


class DivergedError(BenchkitError):
    """The loss became NaN or infinite."""


@dataclass
class FitResult:
    epochs_run: int
    best_epoch: int
    best_score: float
    stopped_early: bool
    seconds_per_epoch: float
    pairs_per_second: float
    history: list[dict[str, float]] = field(default_factory=list)
    loss_shares: dict[str, float] = field(default_factory=dict)  # at the best epoch
    validation_flops: float = 0.0  # all validation passes (the first counted, times the passes)
    per_pair_flops: float = 0.0  # one training step's FLOPs per pair (Trainer.fit counts them)
    train_flops: float = 0.0  # the training steps' FLOPs: per pair × pairs × epochs run
    reused: bool = False  # the result of an identical earlier training (benchkit.reuse)

    def to_dict(self) -> dict[str, Any]:
        return {
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "best_val": self.best_score,
            "stopped_early": self.stopped_early,
            "seconds_per_epoch": self.seconds_per_epoch,
            "pairs_per_second": self.pairs_per_second,
            "loss_shares": {k[len("share.") :]: v for k, v in self.loss_shares.items()},
            **({"reused": True} if self.reused else {}),
        }


def _say_nothing(_message: str) -> None:
    return None


def _state_copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _fit_closed_form(
    method: Method, pairs: Pairs | PooledPairs, validate: Callable[[Method], float] | None
) -> FitResult:
    """Backbones fitted in one shot (CCA, the chance scorer): no epochs, same record."""
    t0 = time.perf_counter()
    with torch.no_grad():
        method.backbone.fit_closed_form(pairs)
    seconds = time.perf_counter() - t0
    method.eval()
    score = float(validate(method)) if validate is not None else float("nan")
    return FitResult(
        epochs_run=0,
        best_epoch=0,
        best_score=score,
        stopped_early=False,
        seconds_per_epoch=seconds,
        pairs_per_second=len(pairs) / max(seconds, 1e-9),
        history=[{"epoch": 0.0, "val": score}] if validate is not None else [],
    )


def _batches(
    n: int, batch_size: int, steps: int, generator: torch.Generator, device: torch.device
) -> Iterator[Tensor]:
    """``steps`` index batches cut from a stream of random permutations of ``n`` rows (one pass,
    remainder batch included, when ``steps`` = ⌈n / batch_size⌉)."""
    order, pos = torch.randperm(n, generator=generator).to(device), 0
    for _ in range(steps):
        if pos >= n:
            order, pos = torch.randperm(n, generator=generator).to(device), 0
        yield order[pos : pos + batch_size]
        pos += batch_size


def fit(
    method: Method,
    pairs: Pairs | PooledPairs,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    validate: Callable[[Method], float] | None = None,
    patience: int | None = None,
    progress: bool = False,
    desc: str = "train",
    precision: str,
    steps_per_epoch: int | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> FitResult:
    """Train ``method`` on ``pairs``; ``validate`` returns the selection metric (higher is better).

    An epoch is one pass over the pairs in random order, or (``steps_per_epoch``) that many batches
    from a stream of random permutations — a budget in optimiser steps, whatever the data's size.
    Without ``validate`` the last epoch is kept; with it, training stops after ``patience`` epochs
    without a better validation score (the run spec's ``patience``, resolved by the caller).
    Batches smaller than 2 are skipped: in-batch negatives need at least two pairs.
    ``precision="bf16"`` runs the forward pass under bfloat16 autocast (matrix products in
    bfloat16, accumulation and the optimiser in float32); evaluation always scores in float32,
    since bfloat16 scores would tie far more often.

    Each epoch's record holds the mean loss, every term's mean contribution (``term.<name>``,
    coefficient included) and its share of the summed absolute contributions (``share.<name>``):
    how much an add-on term (a distillation, say) actually weighs; with ``seconds``, it is handed
    to ``on_epoch`` as each epoch ends.
    """
    n = len(pairs)
    if n < 2:
        raise BenchkitError(f"need at least 2 training pairs, got {n}")
    if method.backbone.closed_form:
        return _fit_closed_form(method, pairs, validate)
    device = pairs.device
    if device.type == "cpu":
        keep_freed_memory()
    if validate is not None and (patience is None or patience < 1):
        raise BenchkitError(f"fit: early stopping needs a patience of at least 1, not {patience}")
    if precision not in RESOLVED_PRECISIONS:
        raise BenchkitError(
            f"fit: precision is resolved before training ({', '.join(RESOLVED_PRECISIONS)}), "
            f"not {precision!r} (benchkit.options.resolve)"
        )
    params = [p for p in method.parameters() if p.requires_grad]
    optimizer = method.backbone.configure_optimizer(params)
    generator = torch.Generator().manual_seed(seed)
    steps = steps_per_epoch or math.ceil(n / batch_size)

    best_score, best_epoch, best_state = -math.inf, 0, None
    history: list[dict[str, float]] = []
    train_seconds, stale, epoch, trained_pairs = 0.0, 0, 0, 0
    bar = tqdm(
        total=epochs,
        desc=desc,
        unit="epoch",
        disable=not progress,
        file=sys.stderr,
        leave=False,
        dynamic_ncols=True,
    )
    try:
        for epoch in range(1, epochs + 1):
            method.train()
            running = torch.zeros((), device=device)
            terms: dict[str, Tensor] = {}
            counted = 0
            t0 = time.perf_counter()
            for idx in _batches(n, batch_size, steps, generator, device):
                if idx.numel() < 2:
                    continue
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                    loss, parts = method.loss(pairs.batch(idx))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                running += loss.detach()
                for key, value in parts.items():
                    terms[key] = terms.get(key, 0.0) + value
                counted += 1
                trained_pairs += int(idx.numel())
            # One host sync per epoch.
            mean_loss = float(running) / max(1, counted)
            record = {"epoch": float(epoch), "loss": mean_loss}
            record.update(_term_record(terms, counted))
            record["seconds"] = time.perf_counter() - t0
            train_seconds += record["seconds"]
            if not math.isfinite(mean_loss):
                raise DivergedError(
                    f"training diverged at epoch {epoch}: the loss is {mean_loss}; lower the "
                    f"learning rate (--set lr=...)"
                )
            if validate is not None:
                score = float(validate(method))
                record["val"] = score
                if score > best_score:
                    best_score, best_epoch, stale = score, epoch, 0
                    best_state = _state_copy(method)
                else:
                    stale += 1
            history.append(record)
            if on_epoch is not None:
                on_epoch(record)
            bar.update(1)
            bar.set_postfix(**_postfix(record, best_score))
            if validate is not None and patience is not None and stale >= patience:
                break
    finally:
        bar.close()
    if best_state is not None:
        method.load_state_dict(best_state)
    else:
        best_epoch = epoch
    method.eval()
    epochs_run = len(history)
    shares = {k: v for k, v in history[best_epoch - 1].items() if k.startswith("share.")}
    return FitResult(
        epochs_run=epochs_run,
        best_epoch=best_epoch,
        best_score=best_score if validate is not None else float("nan"),
        stopped_early=epochs_run < epochs,
        seconds_per_epoch=train_seconds / max(1, epochs_run),
        pairs_per_second=trained_pairs / max(train_seconds, 1e-9),
        history=history,
        loss_shares=shares,
    )


def _term_record(terms: dict[str, Tensor], steps: int) -> dict[str, float]:
    """Mean contribution of each term over an epoch's steps, and its share of their total size."""
    if not terms or steps == 0:
        return {}
    values = {k: float(v) / steps for k, v in terms.items()}
    total = sum(abs(v) for v in values.values()) or 1.0
    out = {f"term.{k}": v for k, v in values.items()}
    out.update({f"share.{k}": abs(v) / total for k, v in values.items()})
    return out


def _postfix(record: dict[str, float], best: float) -> dict[str, str]:
    """The progress bar's figures: loss, validation, and the share of any strategy's terms."""
    out = {"loss": f"{record['loss']:.4f}"}
    if "val" in record:
        out.update(val=f"{record['val']:.4f}", best=f"{best:.4f}")
    by_strategy: dict[str, float] = {}
    for key, value in record.items():
        name = key[len("share.") :]
        if key.startswith("share.") and "." in name:
            owner = name.split(".", 1)[0]
            by_strategy[owner] = by_strategy.get(owner, 0.0) + value
    out.update({f"{k} share": f"{v:.2%}" for k, v in by_strategy.items()})
    return out


@dataclass
class Trainer:
    """The run's training recipe — the loop above, early stopping on the validation split under a
    protocol — handed to strategies (``RunContext.trainer``) so that companions they train (a PGC
    teacher, DecRS's plain model) are trained exactly like the main model."""

    plugins: Any
    device: torch.device
    seed: int
    patience: int
    precision: str  # resolved: fp32 or bf16
    progress: bool = False
    shared: Path | None = None  # where identical trainings are kept and reused (benchkit.reuse)
    log: Callable[[str], None] = field(default=_say_nothing, repr=False)
    spent: float = 0.0  # FLOPs of every training this trainer did (companions included)

    @classmethod
    def from_options(
        cls,
        plugins: Any,
        options: RunOptions,
        progress: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> Trainer:
        """The recipe of a run with these resolved options; identical trainings are shared
        through the cache."""
        return cls(
            plugins,
            options.device,
            options.seed,
            patience=options.patience,
            precision=options.precision,
            progress=progress,
            shared=cache_root() / "trained",
            log=log or _say_nothing,
        )

    def fit(
        self,
        method: Method,
        dataset: Any,
        protocol: Any = "paper",
        pairs: Pairs | PooledPairs | None = None,
        desc: str = "train",
        on_epoch: Callable[[dict[str, float]], None] | None = None,
    ) -> FitResult:
        """Train on ``pairs`` (default: the dataset's training split), selecting the epoch on its
        validation split under ``protocol`` (a name or a :class:`Protocol`)."""
        from benchkit.evaluate import evaluate
        from benchkit.pairs import ugc_pairs

        if protocol is None:
            protocol = "paper"
        proto = self.plugins.protocols.get(protocol)() if isinstance(protocol, str) else protocol
        if pairs is None:
            pairs = ugc_pairs(dataset, "train", self.device)

        passes: list[float] = []  # the first pass's FLOPs, then one entry per later pass

        def validate(m: Method) -> float:
            def run() -> Any:
                return evaluate(m, dataset, proto, self.plugins.metrics, "val", self.device)

            if passes:
                ev = run()
                passes.append(passes[0])
            else:
                ev, flops = counted(run)
                passes.append(flops)
            return float(ev.metrics[proto.selection_metric])

        recipe = {
            "seed": self.seed,
            "patience": self.patience,
            "precision": self.precision,
            "device": str(self.device),
        }
        key = None if self.shared is None else training_key(method, dataset, proto, pairs, recipe)
        if key is not None and self.shared is not None:
            stored = load_training(self.shared, key, method, self.device, self.log)
            if stored is not None:
                self.log(f"{desc}: an identical training was done before; its result is reused")
                # no training work done here: the FLOPs per pair stay, what was spent is 0
                done = {"validation_flops": 0.0, "train_flops": 0.0, "reused": True}
                result = FitResult(**{**stored, **done})
                for record in result.history:
                    if on_epoch is not None:
                        on_epoch(record)
                method.eval()
                return result
        hp = method.backbone.hparams
        result = fit(
            method,
            pairs,
            epochs=hp["epochs"],
            batch_size=hp["batch_size"],
            seed=self.seed,
            validate=validate,
            patience=self.patience,
            progress=self.progress,
            desc=desc,
            precision=self.precision,
            on_epoch=on_epoch,
        )
        result.validation_flops = sum(passes)
        result.per_pair_flops = step_flops_per_pair(method, pairs)  # in a forked random state
        result.train_flops = result.per_pair_flops * len(pairs) * result.epochs_run
        self.spent += result.train_flops + result.validation_flops
        if key is not None and self.shared is not None:
            save_training(self.shared, key, method, result, self.device, self.log)
        return result
