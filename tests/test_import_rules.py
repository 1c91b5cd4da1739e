"""The package rule of ../shared/ARCHITECTURE.md, from the real import graph:
the judge server with a remote backend (openai, gemini) starts on a machine
without jax, flax, tunix, qwix, optax, orbax, policy_worker and orchestrator;
only its local (jax) backend imports jax or policy_worker's model code; the
contract in protos/ and the trainer's judge client know nothing of the
judge's implementation.

Two ways: for real, in subprocesses where those modules cannot be imported
(processes.python_without), and statically, from every import statement of
the source files (ast), so a lazy import on a path the runtime check does not
take is caught too."""

import ast
import dataclasses
import json
import pathlib
import signal
import sys

import grpc
import pytest

import processes
from protos import judge_pb2, judge_pb2_grpc

ROOT = processes.ROOT
JUDGE = ROOT / "judge_server"
JAX_LOCAL = JUDGE / "backends" / "jax_local.py"
FACTORY = JUDGE / "backends" / "factory.py"
PROJECT = ("judge_server", "protos", "grar_config", "policy_worker",
           "orchestrator")
# Importing the jax backend imports jax: it counts as jax.
JAX_LOCAL_MODULE = "judge_server.backends.jax_local"
# The backends that run a tunix model in this process, and so may import jax.
LOCAL_BACKENDS = frozenset({JAX_LOCAL, JUDGE / "backends" / "reward_model.py"})
LOCAL_MODULES = frozenset({JAX_LOCAL_MODULE,
                           "judge_server.backends.reward_model"})
JAX_LIKE = frozenset(processes.JAX_FAMILY) | {"policy_worker"}


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _judge_modules() -> list[str]:
  """Every module of judge_server/ but the jax backend, packages included."""
  return sorted(_module_name(p) for p in JUDGE.rglob("*.py")
                if p not in LOCAL_BACKENDS)


def _remote_judge_modules() -> list[str]:
  return _judge_modules() + [
      "protos", "protos.contract", "protos.rubric",
      *sorted(_module_name(p) for p in (ROOT / "grar_config").rglob("*.py"))]


# --- for real: with the trainer's packages unimportable ----------------------

def test_the_blocker_blocks_what_is_installed():
  """Else the tests below would pass for the wrong reason: every blocked
  package is installed here, and the blocker makes each unimportable."""
  names = json.dumps(processes.NOT_IN_JUDGE)
  probe = f"""
import importlib, importlib.util, json
found = []
for name in json.loads({names!r}):
  found.append(importlib.util.find_spec(name) is not None)
"""
  free = processes.python_without(
      probe + "print(json.dumps(found))", blocked=())
  assert free.returncode == 0, free.stderr[-3000:]
  assert json.loads(free.stdout) == [True] * len(processes.NOT_IN_JUDGE)
  done = processes.python_without(f"""
import importlib, json
blocked = []
for name in json.loads({names!r}):
  for module in (name, name + ".sub"):
    try:
      importlib.import_module(module)
    except ModuleNotFoundError as e:
      blocked.append("blocked" in str(e))
    else:
      blocked.append(False)
print(json.dumps(blocked))
""")
  assert done.returncode == 0, done.stderr[-3000:]
  assert json.loads(done.stdout) == [True] * (2 * len(processes.NOT_IN_JUDGE))


def test_every_judge_module_imports_without_the_trainers_packages():
  modules = _remote_judge_modules()
  assert "judge_server.backends.factory" in modules
  assert "judge_server.__main__" in modules
  assert not LOCAL_MODULES & set(modules)
  failed, _ = processes.import_without(modules)
  assert failed == {}


def test_the_judge_starts_with_an_openai_backend_without_them(tmp_path):
  """`python -m judge_server` serving an OpenAI-compatible endpoint that
  nothing listens on: it starts (the endpoint is only asked when there is
  something to judge), says what it serves, and stops on SIGTERM."""
  port = processes.free_port()
  proc = processes.start_judge(
      {"backend": {"kind": "openai", "openai": {
          "base_url": f"http://127.0.0.1:{port}/v1", "model": "nobody"}}},
      tmp_path, blocked=processes.NOT_IN_JUDGE)
  try:
    try:
      address = processes.judge_address(proc)
    except AssertionError as e:
      # It may only fail for the endpoint, never for an import.
      if proc.poll() is None:
        raise
      err = proc.communicate()[1]
      assert "ModuleNotFoundError" not in err and "ImportError" not in err, (
          err[-3000:])
      assert str(port) in err, f"{e}\n{err[-3000:]}"
      return
    with grpc.insecure_channel(address) as channel:
      info = judge_pb2_grpc.JudgeServiceStub(channel).GetInfo(
          judge_pb2.GetInfoRequest(), timeout=10)
    assert (info.backend, info.model) == ("openai", "nobody")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, proc.stderr.read()[-3000:]
  finally:
    processes.stop(proc)


# --- statically: every import statement of the source ------------------------

@dataclasses.dataclass(frozen=True)
class Import:
  module: str  # absolute, dotted
  line: int
  lazy: bool  # inside a function (or under `if TYPE_CHECKING:`)
  function: str | None  # the innermost enclosing function
  jax_branch: bool  # under an `if` that compares with "jax"


def _compares_with_jax(test: ast.expr) -> bool:
  return any(isinstance(n, ast.Constant) and n.value == "jax"
             for n in ast.walk(test))


def _is_type_checking(test: ast.expr) -> bool:
  return any(isinstance(n, (ast.Name, ast.Attribute))
             and getattr(n, "id", getattr(n, "attr", "")) == "TYPE_CHECKING"
             for n in ast.walk(test))


def _resolve(module: str | None, level: int, here: str,
             is_package: bool) -> str:
  if not level:
    return module or ""
  base = here.split(".")
  if not is_package:
    base = base[:-1]
  base = base[:len(base) - (level - 1)]
  return ".".join(base + ([module] if module else []))


def _exists(module: str) -> bool:
  path = ROOT.joinpath(*module.split("."))
  return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports_of(path: pathlib.Path) -> list[Import]:
  """Every import of the file: import and from-import statements, and
  importlib.import_module / __import__ calls with a constant name. A
  from-import of a submodule (from pkg import mod) counts as importing
  pkg.mod too."""
  here = _module_name(path)
  is_package = path.name == "__init__.py"
  found: list[Import] = []

  def visit(node, function, lazy, jax_branch):
    def add(name):
      found.append(Import(name, node.lineno, lazy, function, jax_branch))
    if isinstance(node, ast.Import):
      for alias in node.names:
        add(alias.name)
    elif isinstance(node, ast.ImportFrom):
      base = _resolve(node.module, node.level, here, is_package)
      add(base)
      for alias in node.names:
        if _exists(f"{base}.{alias.name}"):
          add(f"{base}.{alias.name}")
    elif (isinstance(node, ast.Call) and node.args
          and isinstance(node.args[0], ast.Constant)
          and isinstance(node.args[0].value, str)
          and ((isinstance(node.func, ast.Attribute)
                and node.func.attr == "import_module")
               or (isinstance(node.func, ast.Name)
                   and node.func.id in ("__import__", "import_module")))):
      add(node.args[0].value)
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
      function, lazy = getattr(node, "name", "<lambda>"), True
    if isinstance(node, ast.If):
      visit(node.test, function, lazy, jax_branch)
      for child in node.body:
        visit(child, function, lazy or _is_type_checking(node.test),
              jax_branch or _compares_with_jax(node.test))
      for child in node.orelse:
        visit(child, function, lazy, jax_branch)
      return
    for child in ast.iter_child_nodes(node):
      visit(child, function, lazy, jax_branch)

  visit(ast.parse(path.read_text(), str(path)), None, False, False)
  return found


def _top(module: str) -> str:
  return module.split(".")[0]


def _where(path: pathlib.Path, i: Import) -> str:
  return f"{path.relative_to(ROOT)}:{i.line} imports {i.module}"


def _files(folder: str) -> list[pathlib.Path]:
  files = sorted((ROOT / folder).rglob("*.py"))
  assert files, f"no Python files under {folder}/"
  return files


def test_the_parser_sees_every_kind_of_import(tmp_path, monkeypatch):
  """The checks below are only as good as this reader of imports."""
  package = tmp_path / "pkg"
  (package / "sub").mkdir(parents=True)
  (package / "__init__.py").write_text("")
  (package / "sub" / "__init__.py").write_text("")
  (package / "sub" / "mod.py").write_text("")
  source = package / "sub" / "here.py"
  source.write_text(
      "import jax.numpy as jnp\n"
      "from . import mod\n"
      "from .. import other\n"
      "import importlib\n"
      "def f(kind):\n"
      "  if kind == 'jax':\n"
      "    from policy_worker import models\n"
      "  importlib.import_module('orchestrator.cli')\n"
      "  return __import__('flax')\n"
      "from typing import TYPE_CHECKING\n"
      "if TYPE_CHECKING:\n"
      "  import tunix\n")
  monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
  got = {(i.module, i.lazy, i.function, i.jax_branch)
         for i in imports_of(source)}
  assert got >= {
      ("jax.numpy", False, None, False),
      ("pkg.sub", False, None, False), ("pkg.sub.mod", False, None, False),
      ("pkg", False, None, False),
      ("policy_worker", True, "f", True),
      ("orchestrator.cli", True, "f", False), ("flax", True, "f", False),
      ("tunix", True, None, False)}
  assert ("pkg.other", False, None, False) not in got  # not a module


def test_no_judge_module_imports_orchestrator():
  found = [_where(p, i) for p in _files("judge_server")
           for i in imports_of(p) if _top(i.module) == "orchestrator"]
  assert not found, found


def _calls_only_in_jax_branches(tree: ast.Module, function: str) -> bool:
  """Whether every call of `function` in the module is under an `if` that
  compares with "jax" (and there is at least one)."""
  calls = []

  def visit(node, jax_branch):
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        and node.func.id == function):
      calls.append(jax_branch)
    if isinstance(node, ast.If):
      visit(node.test, jax_branch)
      for child in node.body:
        visit(child, jax_branch or _compares_with_jax(node.test))
      for child in node.orelse:
        visit(child, jax_branch)
      return
    for child in ast.iter_child_nodes(node):
      visit(child, jax_branch)

  visit(tree, False)
  return bool(calls) and all(calls)


def test_only_the_jax_backend_imports_jax_or_policy_worker():
  """...and backends/factory.py, lazily, on its jax branch: inside a
  function, under `if ... == "jax"`, or in a helper called only there."""
  factory_tree = ast.parse(FACTORY.read_text())
  found, lazily = [], []
  for path in _files("judge_server"):
    if path in LOCAL_BACKENDS:
      continue
    for i in imports_of(path):
      if _top(i.module) not in JAX_LIKE and i.module not in LOCAL_MODULES:
        continue
      if path == FACTORY and i.lazy and (
          i.jax_branch or (i.function is not None and
                           _calls_only_in_jax_branches(factory_tree,
                                                       i.function))):
        lazily.append(i.module)
        continue
      found.append(_where(path, i))
  assert not found, found
  # The factory does build the jax backend (else the rule above is empty).
  assert LOCAL_MODULES <= set(lazily)
  # ...and the jax backend is what imports jax and policy_worker.
  local = {_top(i.module) for i in imports_of(JAX_LOCAL)}
  assert {"jax", "policy_worker"} <= local


def _eager_graph() -> dict[str, set[str]]:
  """module -> what it imports when imported (not lazily), over the
  project's source files; importing a.b.c runs a and a.b first."""
  graph = {}
  for top in PROJECT:
    for path in _files(top):
      name = _module_name(path)
      edges = set()
      for i in imports_of(path):
        if i.lazy:
          continue
        parts = i.module.split(".")
        edges |= {".".join(parts[:k]) for k in range(1, len(parts) + 1)}
      parts = name.split(".")
      edges |= {".".join(parts[:k]) for k in range(1, len(parts))}
      graph[name] = edges - {name}
  return graph


def _chain(graph, start: str, bad) -> list[str] | None:
  """The first eager import path from `start` to a module under `bad`."""
  seen, queue = {start}, [[start]]
  while queue:
    path = queue.pop(0)
    for nxt in sorted(graph.get(path[-1], ())):
      if nxt in seen:
        continue
      if _top(nxt) in bad or nxt in LOCAL_MODULES:
        return path + [nxt]
      seen.add(nxt)
      if nxt in graph:
        queue.append(path + [nxt])
  return None


def test_no_judge_module_reaches_the_trainers_packages_when_imported():
  """The static twin of the subprocess test above: following every eager
  import through the project's modules, no judge module (but the jax
  backend) reaches the jax family, policy_worker, orchestrator or the jax
  backend."""
  graph = _eager_graph()
  bad = set(processes.NOT_IN_JUDGE)
  chains = {m: _chain(graph, m, bad) for m in _remote_judge_modules()}
  assert {m: " -> ".join(c) for m, c in chains.items() if c} == {}
  # The walk does find such a chain where there is one.
  assert _chain(graph, JAX_LOCAL_MODULE, bad) is not None


@pytest.mark.parametrize("path", ["protos/contract.py", "protos/rubric.py"])
def test_the_contract_imports_no_implementation(path):
  found = [_where(ROOT / path, i) for i in imports_of(ROOT / path)
           if _top(i.module) in {"judge_server", "orchestrator",
                                 "policy_worker"}]
  assert not found, found


@pytest.mark.parametrize("path", ["orchestrator/judge/client.py",
                                  "orchestrator/judge/channel.py"])
def test_the_judge_client_speaks_only_protos(path):
  found = [_where(ROOT / path, i) for i in imports_of(ROOT / path)
           if _top(i.module) == "judge_server"]
  assert not found, found
