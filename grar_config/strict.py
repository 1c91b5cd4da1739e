"""Strict loading of nested dataclass configs from YAML.

Unknown keys, wrong types and bad values are errors that name the key path
(`train.steps: expected int, got 'x'`). Shared by the judge server's config
and the trainer's, so both refuse bad input the same way.
"""

import dataclasses
import pathlib
import re
import types
import typing
from typing import Any

import yaml


class ConfigError(ValueError):
  """A config value that cannot be used; the message names the key."""


# YAML 1.1 (PyYAML) reads 3e-5 and 1E4 as strings: a float needs a dot and
# a signed exponent there. Where a number is expected they are numbers.
_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _check(tp: Any, value: Any, where: str) -> Any:
  origin = typing.get_origin(tp)
  if origin in (typing.Union, types.UnionType):
    errors = []
    for alt in typing.get_args(tp):
      if alt is type(None):
        if value is None:
          return None
        continue
      try:
        return _check(alt, value, where)
      except ConfigError as e:
        errors.append(str(e))
    raise ConfigError(errors[0] if errors else f"{where}: must be null")
  if origin is typing.Literal:
    if value not in typing.get_args(tp):
      raise ConfigError(f"{where}: {value!r} is not one of "
                        f"{', '.join(map(repr, typing.get_args(tp)))}")
    return value
  if dataclasses.is_dataclass(tp):
    return from_dict(tp, value, where)
  if origin is dict:
    key_t, val_t = typing.get_args(tp)
    if not isinstance(value, dict):
      raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    return {_check(key_t, k, where): _check(val_t, v, f"{where}.{k}")
            for k, v in value.items()}
  if origin in (list, tuple):
    (item_t, *_) = typing.get_args(tp)
    if not isinstance(value, (list, tuple)):
      raise ConfigError(f"{where}: expected a list, got {value!r}")
    return origin(_check(item_t, v, f"{where}[{i}]")
                  for i, v in enumerate(value))
  if tp is float:
    if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
      return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ConfigError(f"{where}: expected a number, got {value!r}")
    return float(value)
  if tp is int or tp is bool or tp is str:
    if type(value) is not tp:
      raise ConfigError(
          f"{where}: expected {tp.__name__}, got {value!r}")
    return value
  raise TypeError(f"{where}: unsupported config type {tp!r}")


def from_dict(cls: type, data: Any, where: str = "") -> Any:
  """Builds dataclass `cls` from a mapping; missing keys take defaults.

  A dataclass's own __post_init__ may raise ValueError("field: problem"),
  which comes back as ConfigError("where.field: problem").
  """
  prefix = f"{where}." if where else ""
  if data is None:
    data = {}
  if not isinstance(data, dict):
    raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
  fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
  for key in data:
    if key not in fields:
      raise ConfigError(f"{prefix}{key}: unknown key (known: "
                        f"{', '.join(sorted(fields))})")
  hints = typing.get_type_hints(cls)
  kwargs = {name: _check(hints[name], data[name], f"{prefix}{name}")
            for name in fields if name in data}
  try:
    return cls(**kwargs)
  except ConfigError:
    raise
  except (ValueError, TypeError) as e:
    raise ConfigError(f"{prefix}{e}") from None


def set_path(data: dict, assignment: str) -> None:
  """Applies one `a.b.c=value` override; the value is parsed as YAML."""
  key, sep, raw = assignment.partition("=")
  if not sep or not key:
    raise ConfigError(f"--set {assignment!r}: expected KEY.PATH=VALUE")
  try:
    value = yaml.safe_load(raw)
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
      data = yaml.safe_load(pathlib.Path(path).read_text()) or {}
    except OSError as e:
      raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
      raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
      raise ConfigError(f"{path}: the top level must be a mapping")
  for assignment in overrides:
    set_path(data, assignment)
  return from_dict(cls, data)
