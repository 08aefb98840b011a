"""One declared run specification: every option of a run, its type, choices, default and help.

``RunSpec`` is what a user *requests*. The ``benchkit run`` options and the shared options of the
grid commands are generated from its fields (:func:`click_options`), the Python API builds one
from keyword arguments, and a grid job is a ``RunSpec`` plus its place in the table. Adding a run
option is one field here plus its use.

Each field's metadata says:

- ``group``: ``method`` (what is trained: a grid row sets these), ``source`` (which data),
  ``split`` (how it is split and which split is scored), ``training`` (how each run trains: the grid
  commands share these), ``evaluation`` (the protocol; a grid file names it);
- ``keyed``: whether the requested value enters the result key directly. Source fields do not:
  the dataset fingerprint (after the test set) stands for them, so moving a folder keeps a key.

Values that depend on the machine (``precision="auto"``, ``device="auto"``) are resolved where the
run executes and recorded with the result; the key holds the requested value, so a cluster whose
workers differ from the head computes the same keys.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any

from benchkit.errors import ConfigError

GROUPS = ("method", "source", "split", "training", "evaluation")
SETTINGS = ("auto", "ugc", "ugc+pgc")
# Measured on 72 runs' validation histories (small preset, 8 methods): patience 7 picks the same
# best epoch as 10 in 67 runs (mean validation loss 0.0004, max 0.015 — within seed noise) and
# saves 17% of the epochs; patience 5 moved 12 runs' choice, once by 0.041.
DEFAULT_PATIENCE = 7
PRECISIONS = ("auto", "fp32", "bf16")
FEATURE_DTYPES = ("float32", "float16")
LABELS = ("observed", "counterfactual", "counterfactual-val")
FEATURE_NORMS = ("zscore", "l2", "none")
PRIOR_KINDS = ("loo", "in-sample")
MAX_SEED = 2**63 - 1


def option(
    default: Any,
    *,
    group: str,
    help: str,
    flag: str | None = None,
    short: str | None = None,
    choices: tuple[str, ...] | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
    keyed: bool = True,
    path: bool = False,
    metavar: str | None = None,
) -> Any:
    """A RunSpec field with the metadata the CLI and the result key read."""
    meta = {
        "group": group,
        "help": help,
        "flag": flag,
        "short": short,
        "choices": choices,
        "minimum": minimum,
        "maximum": maximum,
        "keyed": keyed,
        "path": path,
        "metavar": metavar,
    }
    return field(default=default, metadata=meta)


# Named settings as sorted (name, value) items: overrides and world knobs, hashable in a spec.
Items = tuple[tuple[str, Any], ...]


def freeze(value: Any) -> Any:
    """Lists (from JSON or TOML) as tuples, so that a spec stays hashable."""
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def items_of(mapping: Mapping[str, Any] | Iterable[tuple[str, Any]] | None) -> Items:
    """``{"a": 1}`` or ``[("a", 1)]`` → sorted ``(("a", 1),)`` with frozen values."""
    items = mapping.items() if isinstance(mapping, Mapping) else (mapping or ())
    out = {}
    for key, value in items:
        if not isinstance(key, str) or not key:
            raise ConfigError(f"override names must be non-empty strings, got {key!r}")
        out[key] = freeze(value)
    return tuple(sorted(out.items()))


@dataclass(frozen=True)
class RunSpec:
    """Everything a user can ask of one run (see the module docstring)."""

    # -- method ------------------------------------------------------------------------------
    backbone: str = option(
        "cmvae", group="method", flag="--backbone", short="-b", help="Backbone plugin name."
    )
    debias: str = option(
        "none",
        group="method",
        flag="--debias",
        short="-d",
        help="Strategy or stack, e.g. 'ips' or 'decrs+label_distill'.",
    )
    setting: str = option(
        "auto",
        group="method",
        choices=SETTINGS,
        help="Data setting: UGC only (ugc = D_s) or UGC with PGC (ugc+pgc = D_s ∪ D_t); "
        "auto = ugc+pgc when the stack consumes PGC and the data has it.",
    )
    overrides: Items = option(
        (),
        group="method",
        flag="--set",
        metavar="KEY=VALUE",
        help="Override a hyperparameter; 'strategy.key=value' for a strategy's (repeatable).",
    )
    labels: str = option(
        "observed",
        group="method",
        choices=LABELS,
        help="Train on the observed choices, or (a positive control, worlds with truth only) on "
        "the counterfactual ones — what the uploaders would have picked without their bias — "
        "early-stopped on the observed validation choices, as a real method is; "
        "counterfactual-val also validates on counterfactual choices (an upper bound that reads "
        "labels no method sees).",
    )
    # -- source ------------------------------------------------------------------------------
    preset: str = option(
        "small",
        group="source",
        keyed=False,
        help="Synthetic-world size: tiny, small or paper.",
    )
    world: Items = option(
        (),
        group="source",
        metavar="KNOB=VALUE",
        keyed=False,
        help="Change a knob of the synthetic world, e.g. taste_strength=0 (repeatable).",
    )
    world_seed: int = option(
        0,
        group="source",
        minimum=0,
        maximum=2**32 - 1,
        keyed=False,
        help="Seed of the synthetic world (and of the test-set split).",
    )
    data: str | None = option(
        None,
        group="source",
        path=True,
        keyed=False,
        help="A dataset on disk (DebCM release layout or tables) instead of the world.",
    )
    pgc: str | None = option(
        None,
        group="source",
        path=True,
        keyed=False,
        help="PGC clips (a data_pgc/ folder or a tables pgc/ folder).",
    )
    normalise_weights: bool = option(
        False,
        group="source",
        keyed=False,
        help="Rescale stored evaluation weights that do not sum to 1.",
    )
    # -- split -------------------------------------------------------------------------------
    test_set: str = option(
        "given",
        group="split",
        keyed=False,
        help="given, random, diverse (T_diverse), matching (T_matching; matching:COLUMN on real "
        "data) or ratio:X.",
    )
    split: str = option("test", group="split", help="The split scored at the end.")
    # -- training ----------------------------------------------------------------------------
    seed: int = option(
        1234,
        group="training",
        minimum=0,
        maximum=MAX_SEED,
        help="Seed of initialisation and batching.",
    )
    epochs: int | None = option(
        None,
        group="training",
        minimum=1,
        help="Cap on training epochs (default: the card's); early stopping still applies.",
    )
    patience: int = option(
        DEFAULT_PATIENCE,
        group="training",
        minimum=1,
        help="Stop after this many epochs without a better validation score.",
    )
    precision: str = option(
        "auto",
        group="training",
        choices=PRECISIONS,
        help="Training precision: auto = bf16 autocast on CPUs with native bfloat16, else "
        "fp32 (evaluation always scores in float32).",
    )
    features: str = option(
        "float32",
        group="training",
        choices=FEATURE_DTYPES,
        help="Feature storage (float16 halves its memory).",
    )
    features_norm: str = option(
        "zscore",
        group="training",
        choices=FEATURE_NORMS,
        help="Feature preprocessing, fitted on the training rows only: zscore (per dimension), "
        "l2 (per row) or none.",
    )
    priors: str = option(
        "loo",
        group="training",
        choices=PRIOR_KINDS,
        help="Uploader priors d_u of the training videos: loo (from the uploader's other "
        "training videos: a row's own label is not in its confounder) or in-sample (the DebCM "
        "release's form).",
    )
    device: str = option("auto", group="training", help="auto, cpu or cuda[:N].")
    threads: int | None = option(
        None,
        group="training",
        minimum=1,
        maximum=1024,  # torch crashes (segfault) asked for a million threads
        help="CPU threads of each run (default: all of this process's; grid executors set it "
        "per worker). Part of the result key: float reductions depend on it.",
    )
    # -- evaluation --------------------------------------------------------------------------
    protocol: str = option(
        "paper",
        group="evaluation",
        flag="--protocol",
        short="-p",
        help="Evaluation protocol: paper (100 sampled negatives) or full (whole pool).",
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "overrides", items_of(self.overrides))
        object.__setattr__(self, "world", items_of(self.world))
        for f in fields(self):
            value = getattr(self, f.name)
            meta = f.metadata
            if value is None:
                continue
            if meta["path"] and isinstance(value, os.PathLike):
                value = os.fspath(value)
                object.__setattr__(self, f.name, value)
            if meta["choices"] and value not in meta["choices"]:
                raise ConfigError(
                    f"{flag_of(f.name)}: {value!r} is not one of {', '.join(meta['choices'])}"
                )
            wanted = _TYPES.get(f.name)
            if wanted is not None and not _is(value, wanted):
                raise ConfigError(f"{flag_of(f.name)}: expected {wanted.__name__}, got {value!r}")
            if meta["minimum"] is not None and value < meta["minimum"]:
                raise ConfigError(f"{flag_of(f.name)} must be at least {meta['minimum']}")
            if meta["maximum"] is not None and value > meta["maximum"]:
                raise ConfigError(f"{flag_of(f.name)} must be at most {meta['maximum']}")

    # -- conversions -------------------------------------------------------------------------

    def replace(self, **changes: Any) -> RunSpec:
        unknown = sorted(set(changes) - set(FIELD_NAMES))
        if unknown:
            raise ConfigError(f"unknown run option(s) {', '.join(unknown)}")
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["overrides"] = dict(self.overrides)
        out["world"] = dict(self.world)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RunSpec:
        unknown = sorted(set(values) - set(FIELD_NAMES))
        if unknown:
            raise ConfigError(
                f"unknown run option(s) {', '.join(unknown)}; valid: {', '.join(FIELD_NAMES)}"
            )
        return cls(**dict(values))

    def keyed(self) -> dict[str, Any]:
        """The requested values that enter the result key directly."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata["keyed"]}

    def data_key(self) -> tuple[Any, ...]:
        """What decides the dataset a run sees (workers cache datasets by it)."""
        source = [getattr(self, f.name) for f in fields(self) if f.metadata["group"] == "source"]
        return (*source, self.test_set, self.features)


_TYPES: dict[str, type] = {
    "labels": str,
    "backbone": str,
    "debias": str,
    "setting": str,
    "preset": str,
    "world_seed": int,
    "data": str,
    "pgc": str,
    "normalise_weights": bool,
    "test_set": str,
    "split": str,
    "seed": int,
    "epochs": int,
    "patience": int,
    "precision": str,
    "features": str,
    "features_norm": str,
    "priors": str,
    "device": str,
    "threads": int,
    "protocol": str,
}


def _is(value: Any, wanted: type) -> bool:
    if wanted is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, wanted)


FIELD_NAMES = tuple(f.name for f in fields(RunSpec))


def flag_of(name: str) -> str:
    meta = next(f.metadata for f in fields(RunSpec) if f.name == name)
    return meta["flag"] or "--" + name.replace("_", "-")


def fields_in(*groups: str, exclude: Iterable[str] = ()) -> list[Any]:
    skip = set(exclude)
    return [f for f in fields(RunSpec) if f.metadata["group"] in groups and f.name not in skip]


# ---------------------------------------------------------------------------------------------
# Command-line options generated from the fields


def _value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        text = raw.strip()
        if text.startswith("[") and text.endswith("]"):
            inner = text[1:-1].strip()
            return [_value(item.strip()) for item in inner.split(",")] if inner else []
        return raw


def parse_set(values: Iterable[str], flag: str = "--set") -> Items:
    """``KEY=VALUE`` strings; values are read as JSON when they parse (numbers, true, [..]) else
    kept as text; a bracketed list that is not JSON is a list of its comma-separated items, each
    read the same way (``[recall,ndcg]``)."""
    import click

    out: dict[str, Any] = {}
    for item in values:
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=flag)
        out[key.strip()] = _value(raw)
    return items_of(out)


def click_options(*groups: str, exclude: Iterable[str] = ()) -> Callable[[Any], Any]:
    """A decorator adding one click option per RunSpec field of ``groups``; the command receives
    them under the field names (see :func:`spec_from_options`)."""
    import click

    def decorate(f: Any) -> Any:
        for spec_field in reversed(fields_in(*groups, exclude=exclude)):
            f = _click_option(click, spec_field)(f)
        return f

    return decorate


def _click_option(click: Any, spec_field: Any) -> Any:
    meta = spec_field.metadata
    names = [
        n for n in (meta["flag"] or "--" + spec_field.name.replace("_", "-"), meta["short"]) if n
    ]
    kwargs: dict[str, Any] = {"help": meta["help"], "metavar": meta["metavar"]}
    default = spec_field.default if spec_field.default is not MISSING else None
    wanted = _TYPES.get(spec_field.name)
    if spec_field.name in ("overrides", "world"):
        flag = names[0]
        kwargs.update(multiple=True, callback=lambda _c, _p, v: parse_set(v, flag))
    elif wanted is bool:
        kwargs.update(is_flag=True, default=default)
    else:
        if meta["choices"]:
            kwargs["type"] = click.Choice(list(meta["choices"]))
        elif meta["path"]:
            kwargs["type"] = click.Path(exists=True)
        elif wanted is int:
            kwargs["type"] = click.IntRange(min=meta["minimum"], max=meta["maximum"])
        kwargs.update(default=default, show_default=default is not None)
    return click.option(*names, spec_field.name, **kwargs)


def spec_from_options(options: Mapping[str, Any], base: RunSpec | None = None) -> RunSpec:
    """A RunSpec from a command's keyword arguments (those that are RunSpec fields)."""
    chosen = {k: v for k, v in options.items() if k in FIELD_NAMES}
    return (base or RunSpec()).replace(**chosen)
