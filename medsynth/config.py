"""One config source: ``params.yaml``, one top-level key per stage, read into frozen dataclasses.

Every stage does ``cfg = load_stage(IngestConfig, "ingest", params_path, overrides)``. Overrides
are ``key=value`` strings (``--set train.epochs=3`` on the CLI); each is checked against the field's
type and unknown keys are an error that lists the valid ones.

The defaults live in params.yaml only: a settings dataclass declares its fields without values and
:func:`params_defaults` fills each from params.yaml when an instance is built -- the file the run
reads (``MEDSYNTH_PARAMS`` or ``./params.yaml``), else the shipped one (``medsynth/params.yaml``, a
link to the checkout's ``params.yaml``, copied into a built wheel) -- so ``TrainConfig()`` in code
and a run get the same settings.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import functools
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from medsynth.errors import ConfigError

T = TypeVar("T")

DEFAULT_PARAMS = "params.yaml"
# The shipped params.yaml: every settings default (a link to the checkout's params.yaml; a copy in a wheel).
DEFAULTS_FILE = Path(__file__).with_name("params.yaml")


def read_params(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Read params.yaml (or ``path``) into a plain dict.

    Raises:
        ConfigError: the file is missing or is not a YAML mapping.
    """
    p = Path(path or os.environ.get("MEDSYNTH_PARAMS", DEFAULT_PARAMS))
    if not p.is_file():
        raise ConfigError(f"{p}: params file not found (run from the project root or pass --params)")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of stage names to settings")
    return data


@functools.cache
def shipped_params() -> dict[str, Any]:
    """The shipped params.yaml (:data:`DEFAULTS_FILE`), read once."""
    return read_params(DEFAULTS_FILE)


@functools.lru_cache(maxsize=8)
def _read_cached(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    return read_params(path)


def current_params() -> dict[str, Any]:
    """The params.yaml a run reads (``MEDSYNTH_PARAMS``, else ``./params.yaml``), else the shipped one;
    re-read when the file changes."""
    env = os.environ.get("MEDSYNTH_PARAMS")
    p = Path(env) if env else Path(DEFAULT_PARAMS)
    if not p.is_file():
        p = DEFAULTS_FILE
    st = p.stat()
    return _read_cached(str(p.resolve()), st.st_mtime_ns, st.st_size)


def _section(params: dict[str, Any], section: str) -> Any:
    node: Any = params
    for part in section.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _default(section: str, name: str, hint: Any, shipped: Any) -> Any:
    """A field's default when the dataclass is built: the run's params.yaml value (type-checked), or the
    shipped one where the run's file lacks the key."""
    node = _section(current_params(), section)
    value = _coerce(node[name], hint, f"{section}.{name}") if isinstance(node, dict) and name in node else shipped
    return copy.deepcopy(value)


def params_defaults(section: str) -> typing.Callable[[type[T]], type[T]]:
    """Class decorator, under ``@dataclass``: every field's default is ``section`` (dotted, e.g.
    ``monitor.drift``) of params.yaml, type-checked as a run's values are.

    The default is read when an instance is built, from the params.yaml the run reads
    (:func:`current_params`: ``MEDSYNTH_PARAMS`` or ``./params.yaml``; the shipped file otherwise), so
    code that builds ``PromoteConfig()`` applies the same limits as the run. At import every field is
    checked against the shipped params.yaml: a field written with a default in code, or missing from
    it, is an error -- params.yaml is the one place a default lives.
    """

    def wrap(cls: type[T]) -> type[T]:
        node = _section(shipped_params(), section)
        if not isinstance(node, dict):
            raise ConfigError(f"{DEFAULTS_FILE}: no section {section!r} for {cls.__name__}")
        hints = typing.get_type_hints(cls)
        for name in cls.__dict__.get("__annotations__", {}):
            if typing.get_origin(hints[name]) is typing.ClassVar:
                continue
            if name in cls.__dict__:
                raise ConfigError(f"{cls.__name__}.{name}: a default written in code; params.yaml {section}.{name} "
                                  "is the only place defaults live")
            if name not in node:
                raise ConfigError(f"{cls.__name__}.{name}: no default in params.yaml ({section}.{name})")
            shipped = _coerce(node[name], hints[name], f"{section}.{name}")
            setattr(cls, name, dataclasses.field(
                default_factory=functools.partial(_default, section, name, hints[name], shipped)))
        return cls

    return wrap


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    """Turn ``["train.epochs=3", ...]`` into ``{"train.epochs": "3"}``."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. train.epochs=3")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp`` (str values come from the CLI)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if isinstance(value, str) and tp not in (str, Any) and not (isinstance(tp, type) and issubclass(tp, enum.Enum)):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            pass
    if tp is Any:
        return value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            valid = ", ".join(str(m.value) for m in tp)
            raise ConfigError(f"{where}: unknown value {value!r}; valid: {valid}") from None
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as text
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
            if args and len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
        inner = args[0] if args else Any
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        vt = args[1] if args else Any
        return {str(k): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return build(tp, value, where)
    return value


def build(cls: type[T], data: dict[str, Any], where: str) -> T:
    """Build dataclass ``cls`` from a mapping, checking every key and type."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(fields))}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {', '.join(missing)}")
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if callable(check):
        check()
    return obj


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``data[a][b][c] = value`` for ``dotted`` ``"a.b.c"``, making (or replacing) non-dict levels.

    The value is stored as given: ``load_stage`` passes the override's text (``build`` coerces it to
    the field's type), the pipeline passes it parsed (its arguments are JSON).
    """
    parts = dotted.split(".")
    cur = data
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


def load_stage(
    cls: type[T],
    section: str,
    params: dict[str, Any] | str | os.PathLike | None = None,
    overrides: dict[str, str] | None = None,
) -> T:
    """Read stage ``section`` of params into ``cls``, applying ``section.key=value`` overrides.

    Overrides for other sections are ignored here (each stage takes its own).
    """
    data = params if isinstance(params, dict) else read_params(params)
    raw = json.loads(json.dumps(data.get(section) or {}))  # deep copy
    for key, value in (overrides or {}).items():
        head, _, rest = key.partition(".")
        if head == section and rest:
            set_dotted(raw, rest, value)
    return build(cls, raw, section)


def check_overrides(overrides: dict[str, str], sections: dict[str, Any]) -> None:
    """Fail early on overrides whose section is not one of ``sections`` or that name no key."""
    for key in overrides:
        head, _, rest = key.partition(".")
        if head not in sections:
            raise ConfigError(
                f"override {key!r}: unknown section {head!r}; valid: {', '.join(sorted(sections))}"
            )
        if not rest:
            raise ConfigError(f"override {key!r}: expected SECTION.KEY=VALUE, e.g. {head}.<key>=...")


# Every top-level section of params.yaml and the dataclass that reads it ("module", "class"),
# imported only when an override names the section (so `medsynth --help` stays instant).
PARAMS_SECTIONS: dict[str, tuple[str, str]] = {
    "project": ("medsynth.project", "ProjectConfig"),
    "ingest": ("medsynth.components.ingest", "IngestConfig"),
    "validate": ("medsynth.components.validate", "ValidateConfig"),
    "preprocess": ("medsynth.components.preprocess", "PreprocessConfig"),
    "features": ("medsynth.components.features", "FeaturesConfig"),
    "train": ("medsynth.training.train_config", "TrainConfig"),
    "evaluate": ("medsynth.components.evaluate", "EvaluateConfig"),
    "promote": ("medsynth.components.promote", "PromoteConfig"),
    "monitor": ("medsynth.components.monitor", "MonitorConfig"),
    "app": ("medsynth.app.settings", "AppConfig"),
}


def check_all_overrides(params: dict[str, Any], overrides: dict[str, str]) -> None:
    """Check every override against params.yaml's sections, whichever command runs.

    A command reads only its own sections, so a misspelt section (``trian.epochs``) or key
    (``train.epoch``) would otherwise be ignored silently. Each section an override names is built
    here with the overrides applied: unknown sections and keys fail naming the valid ones, values
    are type-checked.

    Raises:
        ConfigError: an unknown section or key, or a value of the wrong type.
    """
    import importlib

    check_overrides(overrides, PARAMS_SECTIONS)
    for section in sorted({k.partition(".")[0] for k in overrides}):
        module, cls = PARAMS_SECTIONS[section]
        load_stage(getattr(importlib.import_module(module), cls), section, params, overrides)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (enums as values)."""

    def conv(v: Any) -> Any:
        if isinstance(v, enum.Enum):
            return v.value
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(cfg)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (for MLflow params)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
