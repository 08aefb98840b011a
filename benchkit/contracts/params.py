"""A hyperparameter's contract: its type (from its default), its range and its search space."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from benchkit.errors import ConfigError

__all__ = [
    "AT_LEAST_ONE",
    "AT_LEAST_TWO",
    "LR_SEARCH",
    "NON_NEGATIVE",
    "OPTIMISER_SEARCH",
    "POSITIVE",
    "PROBABILITY",
    "TRAINING_RANGES",
    "UNIT",
    "Configurable",
    "Param",
    "Range",
    "Space",
    "tower_params",
    "training_params",
]


def _coerce(name: str, default: Any, value: Any, owner: str) -> Any:
    """Make an override take the type of its default (CLI values arrive as str/int/float)."""
    if default is None or value is None:
        return value
    kind = type(default)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "false", "1", "0", "yes", "no"}:
            return value.lower() in {"true", "1", "yes"}
        raise ConfigError(f"{owner}: hyperparameter {name!r} is a boolean, got {value!r}")
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{owner}: hyperparameter {name!r} must be finite, got {value!r}")
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind in (tuple, list) and isinstance(value, (tuple, list)):
        return kind(value)
    if isinstance(value, kind):
        return value
    raise ConfigError(
        f"{owner}: hyperparameter {name!r} expects {kind.__name__} (default {default!r}), "
        f"got {value!r}"
    )


@dataclass(frozen=True)
class Range:
    """The values a numeric hyperparameter may take (each element, for a tuple of numbers)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (
            self.high is not None and (value >= self.high if self.high_open else value > self.high)
        )

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '≥'} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.high_open else '≤'} {self.high:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


POSITIVE = Range(0.0, low_open=True)
NON_NEGATIVE = Range(0.0)
AT_LEAST_ONE = Range(1.0)
AT_LEAST_TWO = Range(2.0)
UNIT = Range(0.0, 1.0)
PROBABILITY = Range(0.0, 1.0, high_open=True)  # a dropout rate, say: 1 would drop everything
# What every trained backbone's optimisation hyperparameters may be.
TRAINING_RANGES: dict[str, Range | tuple[str, ...]] = {
    "lr": POSITIVE,
    "weight_decay": NON_NEGATIVE,
    "batch_size": AT_LEAST_TWO,
    "epochs": AT_LEAST_ONE,
}


@dataclass(frozen=True)
class Space:
    """Where a hyperparameter search may look for one value (``benchkit tune``): ``log`` and
    ``uniform`` floats in [low, high], ``int`` integers in [low, high], or one of ``choices``."""

    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple[Any, ...] = ()

    KINDS: ClassVar[tuple[str, ...]] = ("log", "uniform", "int", "choice")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ConfigError(
                f"a search space is one of {', '.join(self.KINDS)}, not {self.kind!r}"
            )
        if self.kind == "choice":
            if not self.choices:
                raise ConfigError("a choice space needs at least one value")
        elif not self.low < self.high or (self.kind == "log" and self.low <= 0):
            raise ConfigError(
                f"an empty or invalid range [{self.low}, {self.high}] for a {self.kind} space"
            )

    @staticmethod
    def log(low: float, high: float) -> Space:
        return Space("log", low, high)

    @staticmethod
    def uniform(low: float, high: float) -> Space:
        return Space("uniform", low, high)

    @staticmethod
    def integer(low: int, high: int) -> Space:
        return Space("int", low, high)

    @staticmethod
    def choice(*values: Any) -> Space:
        return Space("choice", choices=tuple(values))


def _out_of_range(value: Any, allowed: Range | tuple[str, ...]) -> str | None:
    """Why ``value`` is not allowed (``None`` when it is)."""
    if isinstance(allowed, tuple):
        if value not in allowed:
            return f"must be one of {', '.join(map(str, allowed))}, not {value!r}"
        return None
    values = value if isinstance(value, (tuple, list)) else (value,)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not allowed.contains(v):
            return f"must be {allowed}, got {value!r}"
    return None


@dataclass(frozen=True)
class Param:
    """One hyperparameter, declared once: its ``default`` (the value its method card gives, which
    also fixes its type), what it may be (``allowed``: a :class:`Range` for a number or each number
    of a tuple, a tuple of strings for a choice; ``None`` when anything of its type goes) and where
    ``benchkit tune`` searches it (``space``; ``None``: tuning leaves it at its default)."""

    default: Any
    allowed: Range | tuple[str, ...] | None = None
    space: Space | None = None


def training_params(
    lr: float,
    weight_decay: float,
    batch_size: int,
    epochs: int,
    search: Mapping[str, Space] | None = None,
) -> dict[str, Param]:
    """The optimisation hyperparameters every trained backbone has, with their ranges;
    ``search`` gives those that tuning searches their space (``{"lr": Space.log(1e-4, 1e-2)}``)."""
    values = {"lr": lr, "weight_decay": weight_decay, "batch_size": batch_size, "epochs": epochs}
    spaces = dict(search or {})
    unknown = sorted(set(spaces) - set(values))
    if unknown:
        raise ConfigError(f"training_params: no training hyperparameter {', '.join(unknown)}")
    return {k: Param(v, TRAINING_RANGES[k], spaces.get(k)) for k, v in values.items()}


# The search spaces most backbones tune their optimiser in: the learning rate alone, or with decay.
LR_SEARCH: Mapping[str, Space] = {"lr": Space.log(1e-4, 1e-2)}
OPTIMISER_SEARCH: Mapping[str, Space] = {**LR_SEARCH, "weight_decay": Space.log(1e-5, 1e-2)}


def tower_params(
    embed_dim: int, music_hidden: tuple[int, ...], video_hidden: tuple[int, ...]
) -> dict[str, Param]:
    """The sizes of a two-tower backbone: the shared code width and each tower's hidden widths."""
    return {
        "embed_dim": Param(embed_dim, AT_LEAST_ONE),
        "music_hidden": Param(music_hidden, AT_LEAST_ONE),
        "video_hidden": Param(video_hidden, AT_LEAST_ONE),
    }


class Configurable:
    """Scikit-learn hygiene: the constructor only stores validated hyperparameters.

    A class declares its hyperparameters once, in ``params`` (name → :class:`Param`); ``defaults``,
    ``ranges`` and ``search_space`` are derived from it, and are what ``--set`` validation, the run
    spec, tuning and the docs read. Overrides must name a hyperparameter and take its type; every
    value, the defaults included, is checked against its range, so a bad ``--set`` fails in one
    line before anything runs.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    params: ClassVar[Mapping[str, Param]] = {}
    defaults: ClassVar[Mapping[str, Any]] = {}
    ranges: ClassVar[Mapping[str, Range | tuple[str, ...]]] = {}
    search_space: ClassVar[Mapping[str, Space]] = {}  # what ``benchkit tune`` searches by default

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = cls.__dict__.get("params")
        if declared is None:
            return
        for key, param in declared.items():
            if not isinstance(param, Param):
                raise ConfigError(f"{cls.__name__}.params[{key!r}] is not a Param: {param!r}")
        cls.defaults = {k: p.default for k, p in declared.items()}
        cls.ranges = {k: p.allowed for k, p in declared.items() if p.allowed is not None}
        cls.search_space = {k: p.space for k, p in declared.items() if p.space is not None}

    hparams: dict[str, Any]

    def _set_hparams(self, overrides: Mapping[str, Any]) -> None:
        owner = f"{type(self).__name__}({self.name!r})"
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            valid = ", ".join(sorted(self.defaults)) or "none"
            raise ConfigError(
                f"{owner}: unknown hyperparameter(s) {', '.join(unknown)}; valid: {valid}"
            )
        merged = dict(self.defaults)
        for key, value in overrides.items():
            merged[key] = _coerce(key, self.defaults[key], value, owner)
        for key, allowed in self.ranges.items():
            if key not in merged:  # a hand-written ``ranges`` entry without its default
                continue
            problem = _out_of_range(merged[key], allowed)
            if problem:
                raise ConfigError(f"{owner}: hyperparameter {key!r} {problem}")
        self.hparams = merged

    def get_params(self) -> dict[str, Any]:
        return dict(self.hparams)
