"""Experiment grids as data: a TOML file says which runs make a table or a figure.

Two kinds:

- ``table`` — ``rows`` (methods: label, group, backbone, debias — one stack or one per setting,
  optional ``set`` overrides, ``labels``, ``world`` knobs) × ``test_sets`` × ``settings`` ×
  ``metrics`` (Table 3);
- ``figure`` — ``series`` (label, backbone, debias, setting, test_set, ``set``, ``labels``,
  ``world``) over an ``x`` axis whose values fill a test-set pattern (``test_set = "ratio:{x}"``,
  Fig. 3), a hyperparameter (``set = "kl_distill.weight"``, Fig. 4) or a knob of the world
  (``set = "world.style_strength"``); one panel per metric.

Both may name ``controls = { baseline = "ROW", positive = "ROW" }`` — the backbone trained on the
observed choices and the same backbone trained on the counterfactual ones — and every row then
reports the headroom it closes; ``replicates`` (the default number of replicates: fresh worlds,
each with its own split, negatives, truth, teacher and training seed) and ``seeds`` (seeds within a
replicate); a grid-wide ``world``; mark a row ``optional = true`` (a control that needs the world's
truth: on data that cannot run it, it is left out of the table instead of failing the grid) and
``control = true`` (a control or an oracle: reported, never ranked as a method; rows trained on
counterfactual labels and oracle rows are controls anyway).

Replicate r of a grid runs on world seed (the grid's first world seed) + r with training seeds
``BASE_SEED + 1000 r + i``. World seeds from :data:`REPORT_WORLD_SEED` up are the reporting
worlds; those below are for tuning and development (the shipped defaults were chosen on world 0),
so that no table reports on the world its defaults were chosen on.

The built-in grids live in ``benchkit/experiments/grids``; copy one, edit it, and run it with
``benchkit experiment FILE``. Plugins' methods are named exactly like built-ins.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from benchkit.errors import ConfigError
from benchkit.files import write_text
from benchkit.spec import RunSpec, items_of

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

BUILTIN = ("table3", "fig3", "fig3_taste", "fig4", "headroom", "bias")
BASE_SEED = 1234
REPORT_WORLD_SEED = 1000  # world seeds below it are for tuning and development
MAX_REPLICATES = 100


@dataclass(frozen=True)
class Job:
    """One run of a grid: where it goes (row, column) and the RunSpec fields the grid decides
    (``own``: backbone, debias, setting, test set, seed, overrides, protocol); the command line's
    shared options fill the rest (:meth:`spec`)."""

    row: str
    column: tuple[str, ...]
    own: tuple[tuple[str, Any], ...]
    x: float | None = None
    optional: bool = False  # a control the data may not support: dropped, not an error
    replicate: int = 0

    def spec(self, base: RunSpec | None = None) -> RunSpec:
        """This job's spec on top of ``base``: its own fields replace the base's, except the
        world's knobs, which add to the base's (``--world`` on the command line), and the world
        seed, which is the base's plus the job's replicate."""
        base = base or RunSpec()
        own = dict(self.own)
        if "world" in own:
            own["world"] = {**dict(base.world), **dict(own["world"])}
        if self.replicate:
            own["world_seed"] = base.world_seed + self.replicate
        return base.replace(**own)

    def _get(self, name: str) -> Any:
        return dict(self.own).get(name, getattr(RunSpec(), name))

    @property
    def backbone(self) -> str:
        return str(self._get("backbone"))

    @property
    def debias(self) -> str:
        return str(self._get("debias"))

    @property
    def setting(self) -> str:
        return str(self._get("setting"))

    @property
    def test_set(self) -> str:
        return str(self._get("test_set"))

    @property
    def seed(self) -> int:
        return int(self._get("seed"))

    def overrides_dict(self) -> dict[str, Any]:
        return dict(self._get("overrides"))


def make_job(
    row: str,
    column: tuple[str, ...],
    x: float | None = None,
    optional: bool = False,
    replicate: int = 0,
    **own: Any,
) -> Job:
    """A job whose own fields are validated as a RunSpec (a typo fails at load time)."""
    RunSpec().replace(**own)
    for key in ("overrides", "world"):
        if key in own:
            own[key] = items_of(own[key])
    return Job(row, column, tuple(sorted(own.items())), x, optional, replicate)


def training_seed(replicate: int, i: int) -> int:
    """The training seed of seed ``i`` of ``replicate``: replicate 0 keeps the historical seeds
    (1234, 1235, …), each replicate has its own."""
    return BASE_SEED + MAX_SEEDS * replicate + i


@dataclass
class Grid:
    name: str
    title: str
    kind: str
    protocol: str
    metrics: list[str]
    jobs: list[Job]
    rows: list[str]
    groups: dict[str, str] = field(default_factory=dict)
    columns: list[tuple[str, ...]] = field(default_factory=list)
    x_label: str = ""
    x_short: str = "x"
    x_values: list[float] = field(default_factory=list)
    x_log: bool = False
    source: str = ""
    controls: dict[str, str] = field(default_factory=dict)  # baseline / positive row labels
    tune: dict[str, Any] = field(default_factory=dict)  # trials, sampler, metric: equal budgets
    control_rows: set[str] = field(default_factory=set)  # controls and oracles: never ranked
    replicates: int = 1
    seeds: int = 1
    replication: dict[str, Any] = field(default_factory=dict)  # what the driver ran (footers)

    def panels(self) -> list[tuple[str, ...]]:
        """A figure's panels: one per test set it crosses its x with (``()`` when it does not)."""
        return list(dict.fromkeys(c[1:] for c in self.columns))

    def points(self, panel: tuple[str, ...] = ()) -> list[tuple[float, tuple[str, ...]]]:
        """(x, column) of one panel of a figure, x ascending."""
        return sorted(
            (x, c) for x, c in zip(self.x_values, self.columns, strict=True) if c[1:] == panel
        )


def _need(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise ConfigError(f"{where}: missing key {key!r}")
    return d[key]


def _check_keys(d: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )


def _overrides(d: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(d.get("set", {}).items()))  # a table: checked by _row_fields


def builtin_text(name: str) -> str:
    """The TOML text of a built-in grid (what ``benchkit experiment --copy`` writes)."""
    if name not in BUILTIN:
        raise ConfigError(f"no built-in grid {name!r}; built-in grids: {', '.join(BUILTIN)}")
    return resources.files("benchkit.experiments").joinpath(f"grids/{name}.toml").read_text()


def copy_builtin(name: str, folder: Path) -> Path:
    """Write the built-in grid ``name`` to ``folder/<name>.toml`` to be edited (``--copy``); an
    existing file is never overwritten."""
    target = folder / f"{name}.toml"
    text = builtin_text(name)
    if target.exists():
        raise ConfigError(f"--copy: {target.name} exists; move it away first")
    write_text(target, text)
    return target


def builtin_grids() -> list[tuple[str, str]]:
    """(name, title) of every built-in grid (``benchkit experiment --list``)."""
    return [(name, str(tomllib.loads(builtin_text(name)).get("title", ""))) for name in BUILTIN]


def read_grid(source: str | Path) -> tuple[dict[str, Any], str]:
    """The TOML of a built-in grid (by name) or of a file."""
    if str(source) in BUILTIN and not Path(source).is_file():
        return tomllib.loads(builtin_text(str(source))), f"built-in grid {source!r}"
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"{path}: no such grid file (built-in grids: {', '.join(BUILTIN)})")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8")), str(path)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save the grid as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror or exc})") from None


MAX_SEEDS = 1000  # a grid's jobs are listed up front: a typo like 10**12 must not fill the memory
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _typed(value: Any, kind: type | tuple[type, ...], what: str, where: str) -> Any:
    """``value`` if it is of ``kind`` (a bool only where ``kind`` is bool), else one line."""
    if kind is bool:
        ok = isinstance(value, bool)
    else:
        ok = not isinstance(value, bool) and isinstance(value, kind)
    if not ok:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}: {what} must be {names}, got {value!r}")
    return value


def _strings(spec: dict[str, Any], key: str, where: str, default: list[str] | None = None) -> list:
    """A non-empty list of strings (a lone string is refused: it is not a list of one)."""
    value = spec.get(key, default) if default is not None else _need(spec, key, where)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(
            f'{where}: {key} must be a non-empty list of strings, like ["a", "b"]; got {value!r}'
        )
    return value


def _tables(spec: dict[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    value = _need(spec, key, where)
    if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
        raise ConfigError(
            f"{where}: {key} must be a non-empty list of tables ([[{key}]] blocks); got {value!r}"
        )
    return value


ROW_KEYS = {"label", "backbone", "debias", "set", "labels", "world", "optional", "run", "control"}
# RunSpec fields a row may set through ``run = { … }`` (the others come from the grid itself).
ROW_RUN_FIELDS = {"features_norm", "epochs", "patience", "precision"}


def _label(row: dict[str, Any], taken: list[str], here: str) -> str:
    label = _typed(_need(row, "label", here), str, "label", here)
    if label in taken:
        raise ConfigError(f"{here}: label {label!r} is used twice; each row needs its own")
    return label


def _row_fields(row: dict[str, Any], here: str) -> dict[str, Any]:
    """The RunSpec fields a row or series sets (besides its debias stack and test set)."""
    own: dict[str, Any] = {"backbone": _typed(_need(row, "backbone", here), str, "backbone", here)}
    if "labels" in row:
        own["labels"] = _typed(row["labels"], str, "labels", here)
    _typed(row.get("optional", False), bool, "optional", here)
    extra = _typed(row.get("run", {}), dict, "run", here)
    unknown = sorted(set(extra) - ROW_RUN_FIELDS)
    if unknown:
        raise ConfigError(
            f"{here}: run may set {', '.join(sorted(ROW_RUN_FIELDS))}; not {', '.join(unknown)}"
        )
    own.update(extra)
    for key in ("set", "world"):
        if key in row and not isinstance(row[key], dict):
            raise ConfigError(f"{here}: {key} must be a table of KEY = VALUE, not {row[key]!r}")
    return own


def _is_control(row: dict[str, Any], here: str) -> bool:
    declared = _typed(row.get("control", False), bool, "control", here)
    return declared or row.get("labels") == "counterfactual" or row.get("backbone") == "oracle"


def load_grid(source: str | Path, seeds: int | None = None, replicates: int | None = None) -> Grid:
    """Expand a grid into its jobs: each job once per replicate (``replicates``, else the grid's
    own ``replicates`` key, else 1) and per seed within it (``seeds``, else the grid's ``seeds``,
    else 1)."""
    if seeds is not None and not 1 <= seeds <= MAX_SEEDS:
        raise ConfigError(f"--seeds must be from 1 to {MAX_SEEDS}")
    if replicates is not None and not 1 <= replicates <= MAX_REPLICATES:
        raise ConfigError(f"--replicates must be from 1 to {MAX_REPLICATES}")
    spec, where = read_grid(source)
    kind = _need(spec, "kind", where)
    common = {
        "name",
        "title",
        "kind",
        "protocol",
        "metrics",
        "controls",
        "world",
        "seeds",
        "replicates",
        "tune",
    }
    name = _typed(_need(spec, "name", where), str, "name", where)
    if not NAME.match(name) or ".." in name:
        raise ConfigError(
            f"{where}: name {name!r} must be a file name of letters, digits, '_', '-' and '.' "
            f"(it names the tables and figures written to --out)"
        )
    if seeds is None:
        seeds = _typed(spec.get("seeds", 1), int, "seeds", where)
        if not 1 <= seeds <= MAX_SEEDS:
            raise ConfigError(f"{where}: seeds must be from 1 to {MAX_SEEDS}")
    if replicates is None:
        replicates = _typed(spec.get("replicates", 1), int, "replicates", where)
        if not 1 <= replicates <= MAX_REPLICATES:
            raise ConfigError(f"{where}: replicates must be from 1 to {MAX_REPLICATES}")
    runs = [(r, training_seed(r, i)) for r in range(replicates) for i in range(seeds)]
    metrics = _strings(spec, "metrics", where)
    world = dict(_typed(spec.get("world", {}), dict, "world", where))
    grid = Grid(
        name=name,
        title=_typed(spec.get("title", ""), str, "title", where),
        kind=kind,
        protocol=_typed(spec.get("protocol", "paper"), str, "protocol", where),
        metrics=metrics,
        jobs=[],
        rows=[],
        source=where,
        replicates=replicates,
        seeds=seeds,
    )
    if kind == "table":
        _check_keys(spec, common | {"rows", "test_sets", "settings"}, where)
        test_sets = _strings(spec, "test_sets", where, ["given"])
        settings = _strings(spec, "settings", where, ["auto"])
        for i, row in enumerate(_tables(spec, "rows", where)):
            here = f"{where}: rows[{i}]"
            _check_keys(row, ROW_KEYS | {"group"}, here)
            label = _label(row, grid.rows, here)
            grid.rows.append(label)
            if _is_control(row, here):
                grid.control_rows.add(label)
            grid.groups[label] = _typed(row.get("group", ""), str, "group", here)
            debias = _typed(_need(row, "debias", here), (str, dict), "debias", here)
            if isinstance(debias, dict) and not all(isinstance(v, str) for v in debias.values()):
                raise ConfigError(f"{here}: debias must map each setting to a stack (a string)")
            own = _row_fields(row, here)
            for test_set in test_sets:
                for setting in settings:
                    stack = debias.get(setting) if isinstance(debias, dict) else debias
                    if stack is None:
                        raise ConfigError(f"{here}: no debias stack for setting {setting!r}")
                    for replicate, seed in runs:
                        grid.jobs.append(
                            make_job(
                                label,
                                (test_set, setting),
                                optional=bool(row.get("optional", False)),
                                replicate=replicate,
                                **own,
                                debias=stack,
                                setting=setting,
                                test_set=test_set,
                                seed=seed,
                                overrides=_overrides(row),
                                world={**world, **row.get("world", {})},
                                protocol=grid.protocol,
                            )
                        )
        grid.columns = [(t, s) for t in test_sets for s in settings]
    elif kind == "figure":
        _check_keys(spec, common | {"series", "x", "test_sets"}, where)
        x = _typed(_need(spec, "x", where), dict, "x", where)
        _check_keys(x, {"label", "short", "values", "test_set", "set", "log"}, f"{where}: x")
        values = _need(x, "values", f"{where}: x")
        if (
            not isinstance(values, list)
            or not values
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        ):
            raise ConfigError(
                f"{where}: x.values must be a non-empty list of numbers; got {values!r}"
            )
        values = [float(v) for v in values]
        if ("test_set" in x) == ("set" in x):
            raise ConfigError(
                f"{where}: x needs exactly one of test_set (a pattern with {{x}}) "
                f"or set (a hyperparameter, or world.KNOB for a knob of the world)"
            )
        # A figure may cross its x with test sets (a panel each), unless x itself is one.
        panels: list[str | None] = [None]
        if "test_sets" in spec:
            if "test_set" in x:
                raise ConfigError(f"{where}: test_sets cannot be crossed with x.test_set")
            panels = list(_strings(spec, "test_sets", where))
        grid.x_label = _typed(x.get("label", "x"), str, "x.label", where)
        grid.x_log = _typed(x.get("log", False), bool, "x.log", where)
        grid.x_short = _typed(x.get("short", "x"), str, "x.short", where)
        if "test_set" in x:
            pattern = _typed(x["test_set"], str, "x.test_set", where)
            try:
                pattern.format(x=1)
            except (KeyError, IndexError, ValueError):
                raise ConfigError(
                    f"{where}: x.test_set {pattern!r} may only use {{x}}, e.g. 'ratio:{{x}}'"
                ) from None
        else:
            _typed(x["set"], str, "x.set", where)
        places = [(v, t) for t in panels for v in values]
        grid.x_values = [v for v, _ in places]
        grid.columns = [(f"{v:g}",) if t is None else (f"{v:g}", t) for v, t in places]
        for i, series in enumerate(_tables(spec, "series", where)):
            here = f"{where}: series[{i}]"
            _check_keys(series, ROW_KEYS | {"setting", "test_set", "fixed"}, here)
            label = _label(series, grid.rows, here)
            grid.rows.append(label)
            if _is_control(series, here):
                grid.control_rows.add(label)
            own = _row_fields(series, here)
            _typed(_need(series, "debias", here), str, "debias", here)
            # A fixed series (a control, a baseline) does not vary with x: one run per
            # replicate (and test set), drawn across the x axis.
            fixed = _typed(series.get("fixed", False), bool, "fixed", here)
            for key in ("setting", "test_set"):
                if key in series:
                    _typed(series[key], str, key, here)
            if "test_set" in series and panels != [None]:
                raise ConfigError(f"{here}: the grid's test_sets decide each series' test set")
            for (value, panel), column in zip(places, grid.columns, strict=True):
                overrides = dict(_overrides(series))
                knobs = {**world, **series.get("world", {})}
                test_set = panel or series.get("test_set", "given")
                if "test_set" in x:
                    test_set = x["test_set"].format(x=f"{value:g}")
                elif fixed:
                    pass
                elif str(x["set"]).startswith("world."):
                    knobs[x["set"][len("world.") :]] = value
                else:
                    overrides[x["set"]] = value
                for replicate, seed in runs:
                    grid.jobs.append(
                        make_job(
                            label,
                            column,
                            value,
                            optional=bool(series.get("optional", False)),
                            replicate=replicate,
                            **own,
                            debias=_need(series, "debias", here),
                            setting=series.get("setting", "auto"),
                            test_set=test_set,
                            seed=seed,
                            overrides=overrides,
                            world=knobs,
                            protocol=grid.protocol,
                        )
                    )
    else:
        raise ConfigError(f"{where}: kind must be 'table' or 'figure', not {kind!r}")
    grid.jobs.sort(key=lambda j: j.replicate)  # a replicate's world is built once, then used
    controls = _typed(spec.get("controls", {}), dict, "controls", where)
    _check_keys(controls, {"baseline", "positive"}, f"{where}: controls")
    for role, row_label in controls.items():
        if row_label not in grid.rows:
            raise ConfigError(
                f"{where}: controls.{role} names {row_label!r}, which is not a row of the grid"
            )
    if controls and set(controls) != {"baseline", "positive"}:
        raise ConfigError(f"{where}: controls needs both baseline and positive")
    grid.controls = controls
    tune = dict(_typed(spec.get("tune", {}), dict, "tune", where))
    _check_keys(tune, {"trials", "sampler", "metric"}, f"{where}: tune")
    if tune:
        _typed(tune.get("trials"), int, "tune.trials", where)
        for key in ("sampler", "metric"):
            if key in tune:
                _typed(tune[key], str, f"tune.{key}", where)
        if tune["trials"] < 1:
            raise ConfigError(f"{where}: tune.trials must be at least 1")
    grid.tune = tune
    return grid


def paper_table3() -> dict[str, dict[str, dict[str, list[float]]]]:
    """The paper's Table 3 numbers: test set → setting → row → [R@15, N@15, R@25, N@25]."""
    text = resources.files("benchkit.experiments").joinpath("grids/paper_table3.toml").read_text()
    return tomllib.loads(text)
