"""Configs as pydantic dataclasses, loaded strictly from YAML.

`@strict.config` makes a frozen pydantic dataclass that refuses unknown
keys: the code keeps the dataclass API (fields, asdict, replace) and each
class its own range checks in __post_init__; pydantic checks the types and
gives the JSON schema (`grar config schema KIND`). `load` reads YAML with
strict types (an int field takes no "5", no 5.0, no true) and turns
pydantic's errors into one line that names the key path, e.g.
`train.steps: expected int, got 'x'`. The judge server and the trainer
share it, so both refuse bad input the same way.
"""

import dataclasses
import json
import pathlib
import re
import types
import typing
from typing import Any

import pydantic
import pydantic.dataclasses
import yaml


class ConfigError(ValueError):
  """A config value that cannot be used; the message names the key."""


def config(cls: type) -> type:
  """The decorator of every config class."""
  return pydantic.dataclasses.dataclass(
      frozen=True, config=pydantic.ConfigDict(extra="forbid"))(cls)


class _Loader(yaml.SafeLoader):
  """YAML 1.1 (PyYAML) reads 3e-5 and 1E4 as strings: a float needs a dot
  and a signed exponent there. As in YAML 1.2, they are floats here."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."))


def parse(text: str) -> Any:
  """YAML text as Python data, exponent-form numbers as floats."""
  return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader)


def _path(loc: tuple) -> str:
  out = ""
  for part in loc:
    out += f"[{part}]" if isinstance(part, int) else (
        f".{part}" if out else str(part))
  return out


def _dataclass_in(tp: Any) -> Any:
  """tp, or the config class among the alternatives of a union."""
  union = typing.get_origin(tp) in (typing.Union, types.UnionType)
  for alt in typing.get_args(tp) if union else ():
    if dataclasses.is_dataclass(alt):
      return alt
  return tp


def _class_at(cls: type, loc: tuple) -> type | None:
  """The config class at key path `loc` below `cls` (None if not one)."""
  tp: Any = cls
  for part in loc:
    tp = _dataclass_in(tp)
    if isinstance(part, int):
      args = typing.get_args(tp)
      tp = args[0] if typing.get_origin(tp) in (tuple, list) and args else None
    elif dataclasses.is_dataclass(tp):
      tp = typing.get_type_hints(tp).get(part)
    else:
      return None
  tp = _dataclass_in(tp)
  return tp if dataclasses.is_dataclass(tp) else None


_EXPECTED = {
    "int_type": "int", "int_parsing": "int", "int_from_float": "int",
    "float_type": "a number", "float_parsing": "a number",
    "string_type": "str", "bool_type": "bool", "bool_parsing": "bool",
    "dataclass_type": "a mapping", "dict_type": "a mapping",
    "list_type": "a list", "tuple_type": "a list",
}


def _message(cls: type, error: dict) -> str:
  """One pydantic error as `key.path: what is wrong`."""
  loc, kind = error["loc"], error["type"]
  where = _path(loc)
  prefix = f"{where}: " if where else ""
  if kind == "value_error":
    # A __post_init__'s ValueError("field: problem").
    text = str(error["ctx"]["error"])
    return f"{where}.{text}" if where else text
  if kind in ("unexpected_keyword_argument", "extra_forbidden"):
    parent = _class_at(cls, loc[:-1])
    known = (f" (known: {', '.join(sorted(f.name for f in dataclasses.fields(parent)))})"
             if parent is not None else "")
    return f"{where}: unknown key{known}"
  if kind == "literal_error":
    expected = error["ctx"]["expected"].replace(" or ", ", ")
    return f"{where}: {error['input']!r} is not one of {expected}"
  if kind in _EXPECTED:
    return f"{prefix}expected {_EXPECTED[kind]}, got {error['input']!r}"
  if kind == "missing":
    return f"{where}: missing"
  return f"{prefix}{error['msg']}"


def from_dict(cls: type, data: Any, where: str = "") -> Any:
  """Builds config class `cls` from parsed YAML/JSON; missing keys take
  defaults. Raises ConfigError naming the first bad key, below `where`."""
  if data is None:
    data = {}
  if not isinstance(data, dict):
    raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
  try:
    # JSON mode: a mapping becomes a dataclass even under strict types.
    text = json.dumps(data, default=str)
    return pydantic.TypeAdapter(cls).validate_json(text, strict=True)
  except pydantic.ValidationError as e:
    message = _message(cls, e.errors(include_url=False)[0])
    raise ConfigError(f"{where}.{message}" if where else message) from None


def set_path(data: dict, assignment: str) -> None:
  """Applies one `a.b.c=value` override; the value is parsed as YAML."""
  key, sep, raw = assignment.partition("=")
  if not sep or not key:
    raise ConfigError(f"--set {assignment!r}: expected KEY.PATH=VALUE")
  try:
    value = parse(raw)
  except yaml.YAMLError as e:
    raise ConfigError(f"{key}: cannot parse value {raw!r}: {e}") from None
  *parents, leaf = key.split(".")
  node = data
  for i, part in enumerate(parents):
    child = node.setdefault(part, {})
    if not isinstance(child, dict):
      raise ConfigError(f"{'.'.join(parents[:i + 1])}: is not a section")
    node = child
  node[leaf] = value


def load(cls: type, path: str | pathlib.Path | None,
         overrides: typing.Sequence[str] = ()) -> Any:
  """Reads YAML (or nothing: all defaults), applies overrides, validates."""
  data: Any = {}
  if path is not None:
    try:
      data = parse(pathlib.Path(path).read_text()) or {}
    except OSError as e:
      raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
      raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
      raise ConfigError(f"{path}: the top level must be a mapping")
  for assignment in overrides:
    set_path(data, assignment)
  return from_dict(cls, data)
