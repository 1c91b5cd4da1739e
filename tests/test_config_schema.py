"""`grar config schema KIND` prints the JSON schema of the config each
command reads, and that schema is the config class's own: the same keys,
the same defaults, and YAML a user writes from it loads."""

import dataclasses
import json

import pytest

from grar_config import strict
from orchestrator import cli


def _schema(kind, capsys):
  assert cli.main(["config", "schema", kind]) == 0
  return json.loads(capsys.readouterr().out)


def _config_class(kind):
  import importlib
  module, name = cli.CONFIG_KINDS[kind]
  return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("kind", sorted(cli.CONFIG_KINDS))
def test_the_schema_has_the_config_classes_keys_and_defaults(kind, capsys):
  cls = _config_class(kind)
  schema = _schema(kind, capsys)
  fields = {f.name: f for f in dataclasses.fields(cls)}
  assert set(schema["properties"]) == set(fields)
  # Through JSON, as a user's YAML would hold them (tuples are lists).
  defaults = json.loads(json.dumps(dataclasses.asdict(cls())))
  for name, prop in schema["properties"].items():
    if "default" in prop:
      assert prop["default"] == defaults[name], name
  # Every nested section is described too, down to its own keys.
  section = next(f for f in fields.values()
                 if dataclasses.is_dataclass(f.type))
  ref = schema["properties"][section.name]["$ref"].rsplit("/", 1)[-1]
  assert set(schema["$defs"][ref]["properties"]) == {
      f.name for f in dataclasses.fields(section.type)}


def test_a_config_written_from_the_schema_loads(tmp_path, capsys):
  schema = _schema("train", capsys)
  train = schema["$defs"][schema["properties"]["train"]["$ref"]
                          .rsplit("/", 1)[-1]]
  assert train["properties"]["steps"]["type"] == "integer"
  path = tmp_path / "run.yaml"
  # YAML 1.1 reads 3e-5 and 1E-4 as strings; they are numbers here.
  path.write_text("train:\n  steps: 7\ngrpo:\n  learning_rate: 3e-5\n"
                  "  max_grad_norm: 1E-1\n")
  cfg = strict.load(_config_class("train"), path)
  assert (cfg.train.steps, cfg.grpo.learning_rate,
          cfg.grpo.max_grad_norm) == (7, 3e-5, 0.1)


@pytest.mark.parametrize("override, message", [
    ("train.steps=7.0", "train.steps: expected int, got 7.0"),
    ("train.steps=true", "train.steps: expected int, got True"),
    ("run_name=5", "run_name: expected str, got 5"),
    ("mesh.policy=3", "mesh.policy: expected a mapping, got 3"),
    ("judge.placement=far", "judge.placement: 'far' is not one of "
     "'in-process', 'subprocess', 'remote', 'ray'"),
    ("judge.server.backend.openai.bogus=1",
     "judge.server.backend.openai.bogus: unknown key (known: api_key_env, "
     "base_url, max_calls_in_flight, max_concurrency, mode, model, "
     "timeout_s, top_logprobs)"),
    ("mesh.judge.tp=0", "mesh.judge.tp: must be >= 1"),
    ("rollout.engine=sglang", "rollout.engine: 'sglang' is not one of "
     "'tunix', 'vllm'"),
    ("rollout.vllm.tis_cap=0.5", "rollout.vllm.tis_cap: must be >= 1 (the "
     "weight of a token both engines agree on), got 0.5"),
])
def test_a_bad_value_is_one_line_naming_the_key(override, message):
  with pytest.raises(strict.ConfigError) as e:
    strict.load(_config_class("train"), None, [override])
  assert str(e.value) == message


def test_the_vllm_engine_is_refused_beside_ray_rollout_workers():
  with pytest.raises(strict.ConfigError, match="rollout.engine: vllm "
                     "generates every rollout; set ray.rollout_workers to 0"):
    strict.load(_config_class("train"), None, [
        "rollout.engine=vllm", "ray.rollout_workers=1"])
