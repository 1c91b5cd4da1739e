"""The site's reference pages, generated from the code as `mkdocs build` runs
(an mkdocs hook, named in mkdocs.yml), so they cannot go stale and nobody
copies them by hand: the config schema from the pydantic config classes
each command reads (orchestrator.cli.CONFIG_KINDS), the CLI from `grar`'s
argparse parser, the judge contract from protos/judge.proto.
"""

import argparse
import dataclasses
import functools
import importlib
import inspect
import io
import json
import pathlib
import sys
import tokenize
import types
import typing

from mkdocs.structure.files import File

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The hook runs inside mkdocs' process, which may not have the checkout on
# its path (a plain `mkdocs build` from another working directory).
sys.path.insert(0, str(ROOT))


def on_files(files, config):
  for path, text in (("reference/config.md", config_page()),
                     ("reference/cli.md", cli_page()),
                     ("reference/proto.md", proto_page())):
    files.append(File.generated(config, path, content=text))
  return files


# --- config schema -----------------------------------------------------------

def _field_comments(cls: type) -> dict[str, str]:
  """The comments written beside a config class's fields: one at the end of
  the field's line, or a block of comment lines right above it."""
  try:
    source = inspect.getsource(cls)
  except (OSError, TypeError):
    return {}
  comments = {tok.start[0]: tok.string.lstrip("#").strip()
              for tok in tokenize.generate_tokens(io.StringIO(source).readline)
              if tok.type == tokenize.COMMENT}
  names = {f.name for f in dataclasses.fields(cls)}
  out, above = {}, []
  for row, line in enumerate(source.splitlines(), 1):
    stripped = line.strip()
    if stripped.startswith("#"):
      above.append(comments.get(row, ""))
      continue
    name = stripped.split(":", 1)[0].strip()
    if name in names and name not in out and line.startswith("  " + name):
      out[name] = " ".join(above + [comments.get(row, "")]).strip()
    above = []
  return out


def _config_classes(tp) -> list[type]:
  """The config classes a field's type names (itself, a union's members,
  a tuple's items)."""
  if dataclasses.is_dataclass(tp):
    return [tp]
  return [c for arg in typing.get_args(tp) for c in _config_classes(arg)]


def _type_text(tp) -> str:
  if typing.get_origin(tp) is typing.Literal:
    return " | ".join(json.dumps(a) for a in typing.get_args(tp))
  if dataclasses.is_dataclass(tp):
    return f"[{tp.__name__}](#{tp.__name__.lower()})"
  if typing.get_origin(tp) in (typing.Union, types.UnionType):
    return " | ".join(_type_text(a) for a in typing.get_args(tp))
  if typing.get_origin(tp) in (tuple, list):
    args = [a for a in typing.get_args(tp) if a is not Ellipsis]
    items = " | ".join(_type_text(a) for a in args)
    return f"list of {items or 'any'}"
  if typing.get_origin(tp) is dict:
    k, v = typing.get_args(tp) or (str, typing.Any)
    return f"map {_type_text(k)} → {_type_text(v)}"
  if tp is type(None):
    return "null"
  return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _default_text(field: dataclasses.Field) -> str:
  if field.default is not dataclasses.MISSING:
    value = field.default
  elif field.default_factory is not dataclasses.MISSING:
    value = field.default_factory()
  else:
    return "**required**"
  if dataclasses.is_dataclass(value):
    return "(section)"
  if isinstance(value, tuple):
    value = list(value)
  try:
    return f"`{json.dumps(value)}`"
  except TypeError:
    return f"`{value!r}`"


def _cell(text: str) -> str:
  return " ".join(text.split()).replace("|", "\\|")


def _walk(cls: type, prefix: str, where: dict, order: list) -> None:
  """Records, for every config class below `cls`, the key paths it sits at."""
  if cls not in where:
    where[cls] = []
    order.append(cls)
  hints = typing.get_type_hints(cls)
  for field in dataclasses.fields(cls):
    for sub in _config_classes(hints[field.name]):
      path = f"{prefix}{field.name}"
      if path not in where.get(sub, []):
        _walk(sub, path + ".", where, order)
        where[sub].append(path)


def config_page() -> str:
  from orchestrator.cli import CONFIG_KINDS
  out = ["# Config schema", "",
         "Generated from the config classes as the site builds (pydantic "
         "dataclasses, `grar_config/strict.py`). Every command reads one YAML "
         "file into one of these; unknown keys and values of the wrong type "
         "stop it with one line naming the key, and every field can be set "
         "on the command line with `--set KEY=VALUE`. "
         "`grar config schema KIND` prints the same as JSON schema.", ""]
  where, order, kinds = {}, [], []
  for kind, (module, name) in CONFIG_KINDS.items():
    cls = getattr(importlib.import_module(module), name)
    kinds.append((kind, cls))
    _walk(cls, f"{kind}: ", where, order)
  out += ["| config kind | top-level class |", "|---|---|"]
  out += [f"| `{kind}` | {_type_text(cls)} |" for kind, cls in kinds]
  out.append("")
  for cls in order:
    out += [f"## {cls.__name__}", ""]
    paths = [p for p in where[cls] if not p.endswith(": ")]
    tops = [k for k, c in kinds if c is cls]
    if tops:
      out += ["The whole file of " + ", ".join(f"`{k}`" for k in tops)
              + " configs.", ""]
    if paths:
      out += ["At " + ", ".join(f"`{p}`" for p in paths) + ".", ""]
    doc = inspect.getdoc(cls) or ""
    if doc and not doc.startswith(cls.__name__ + "("):
      out += [doc, ""]
    hints = typing.get_type_hints(cls)
    comments = _field_comments(cls)
    out += ["| key | type | default | about |", "|---|---|---|---|"]
    for field in dataclasses.fields(cls):
      out.append(f"| `{field.name}` | {_cell(_type_text(hints[field.name]))} "
                 f"| {_cell(_default_text(field))} "
                 f"| {_cell(comments.get(field.name, ''))} |")
    out.append("")
  return "\n".join(out)


# --- command line -------------------------------------------------------------

def _commands(parser: argparse.ArgumentParser, words: list[str]):
  """(words, help, parser) for `parser` and every subcommand below it."""
  for action in parser._actions:
    if isinstance(action, argparse._SubParsersAction):
      helps = {a.dest: a.help for a in action._choices_actions}
      for name, sub in action.choices.items():
        yield words + [name], helps.get(name, ""), sub
        yield from _commands(sub, words + [name])


def cli_page() -> str:
  from orchestrator.cli import parser
  top = parser()
  out = ["# Command line", "",
         "Generated from `grar`'s argparse parser (`orchestrator/cli.py`) as "
         "the site builds: each command's `--help`.", ""]
  for words, help_text, sub in [(["grar"], top.description, top)] + [
      (["grar"] + w, h, p) for w, h, p in _commands(top, [])]:
    sub.formatter_class = functools.partial(argparse.HelpFormatter, width=88)
    out += [f"## {' '.join(words)}", "", _cell(help_text or ""), "",
            "```text", sub.format_help().rstrip(), "```", ""]
  return "\n".join(out)


# --- the judge contract --------------------------------------------------------

def proto_page() -> str:
  from protos import judge_pb2
  service = judge_pb2.DESCRIPTOR.services_by_name["JudgeService"]
  out = ["# The judge contract", "",
         "Generated from `protos/judge.proto` as the site builds: the only "
         "contract between the trainer and the judge "
         f"(package `{judge_pb2.DESCRIPTOR.package}`). The Python modules "
         "beside it are generated with `make protos`.", "",
         f"## {service.name}", "",
         "| RPC | request | response |", "|---|---|---|"]
  for m in service.methods:
    stream_in = "stream " if m.client_streaming else ""
    stream_out = "stream " if m.server_streaming else ""
    out.append(f"| `{m.name}` | {stream_in}`{m.input_type.name}` "
               f"| {stream_out}`{m.output_type.name}` |")
  out += ["", "## Messages", "",
          "| message | fields |", "|---|---|"]
  for msg in judge_pb2.DESCRIPTOR.message_types_by_name.values():
    fields = ", ".join(f"`{f.name}`" for f in msg.fields)
    out.append(f"| `{msg.name}` | {fields or '(none)'} |")
  out += ["", "## judge.proto", "", "```protobuf",
          (ROOT / "protos" / "judge.proto").read_text().rstrip(), "```", ""]
  return "\n".join(out)
