"""The committed protos/judge_pb2*.py match judge.proto: edit the .proto,
then run `python -m protos.generate`."""

import pytest

from protos import generate

GENERATED = ("judge_pb2.py", "judge_pb2.pyi", "judge_pb2_grpc.py")


@pytest.mark.parametrize("name", GENERATED)
def test_generated_code_matches_the_proto(tmp_path, name):
  generate.generate(tmp_path)
  committed = generate.ROOT / "protos" / name
  fresh = tmp_path / "protos" / name
  assert fresh.read_bytes() == committed.read_bytes(), (
      f"protos/{name} is stale: run `python -m protos.generate`")
