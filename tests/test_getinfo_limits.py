"""GetInfo reports every limit the server enforces: each field of the
`limits` config under its own name, the batcher's max_batch and
max_calls_in_flight, and the OpenRLHF HTTP face's (openrlhf_*), seen from a
real `python -m judge_server` process started with none of them at its
default (the openai backend pointed at a
port where nothing listens: no jax, and GetInfo never reaches it).

A field added to judge_server.config.Limits without being added to the
proto's Limits (and so to GetInfo) fails here."""

import dataclasses

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
import grpc
import pytest

from judge_server.config import Limits, OpenRLHFConfig
from protos import judge_pb2, judge_pb2_grpc
import processes

BATCHER = {"max_batch": 3, "max_calls_in_flight": 5}
HTTP_FACE = {"max_body_bytes": 12345, "max_connections": 17,
             "max_requests_per_connection": 9, "header_deadline_s": 7.5,
             "keepalive_timeout_s": 2.5}


def _non_default(i: int, field: dataclasses.Field):
  """A valid value unlike the default and unlike every other field's."""
  return field.default * 2 + 7 + i


LIMITS = {f.name: _non_default(i, f)
          for i, f in enumerate(dataclasses.fields(Limits))}


@pytest.fixture(scope="module")
def info(tmp_path_factory) -> judge_pb2.GetInfoResponse:
  assert all(LIMITS[f.name] != f.default for f in dataclasses.fields(Limits))
  assert Limits(**LIMITS)  # valid
  proc = processes.start_judge(
      {"backend": {"kind": "openai",
                   "max_batch": BATCHER["max_batch"],
                   "openai": {
                       "base_url":
                           f"http://127.0.0.1:{processes.free_port()}/v1",
                       "model": "nobody",
                       "max_calls_in_flight": BATCHER["max_calls_in_flight"]}},
       "limits": LIMITS,
       "openrlhf": {"port": processes.free_port(), **HTTP_FACE}},
      tmp_path_factory.mktemp("judge"))
  try:
    target = processes.judge_address(proc)
    with grpc.insecure_channel(target) as channel:
      yield judge_pb2_grpc.JudgeServiceStub(channel).GetInfo(
          judge_pb2.GetInfoRequest(), timeout=30)
  finally:
    processes.stop(proc)


def test_every_field_of_limits_is_reported_as_configured(info):
  assert info.backend == "openai" and info.model == "nobody"
  for f in dataclasses.fields(Limits):
    name = f.name
    assert name in judge_pb2.Limits.DESCRIPTOR.fields_by_name, (
        f"Limits.{name} is enforced but GetInfo does not report it: add it "
        "to protos/judge.proto's Limits")
    assert getattr(info.limits, name) == LIMITS[name], name


def test_the_batchers_limits_are_reported(info):
  for name, value in BATCHER.items():
    assert getattr(info.limits, name) == value, name


def test_the_http_faces_limits_are_reported(info):
  defaults = OpenRLHFConfig()
  for name, value in HTTP_FACE.items():
    assert value != getattr(defaults, name), name
    assert getattr(info.limits, f"openrlhf_{name}") == value, name


def test_every_reported_limit_is_checked_here():
  reported = set(judge_pb2.Limits.DESCRIPTOR.fields_by_name)
  assert reported == {f.name for f in dataclasses.fields(Limits)} | set(
      BATCHER) | {f"openrlhf_{name}" for name in HTTP_FACE}


# The Limits message as the proto had it before GetInfo reported every limit.
OLD_FIELDS = ["max_batch", "max_prompt_chars", "max_completion_chars",
              "max_criteria", "max_requests_per_batch_call"]


def _old_limits_class():
  proto = descriptor_pb2.FileDescriptorProto(
      name="old_judge_limits.proto", package="old.grar.judge.v1",
      syntax="proto3")
  message = proto.message_type.add(name="Limits")
  for number, name in enumerate(OLD_FIELDS, start=1):
    message.field.add(
        name=name, number=number,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
  pool = descriptor_pool.DescriptorPool()
  pool.Add(proto)
  return message_factory.GetMessageClass(
      pool.FindMessageTypeByName("old.grar.judge.v1.Limits"))


def test_the_proto_change_is_backwards_compatible(info):
  fields = judge_pb2.Limits.DESCRIPTOR.fields_by_name
  for number, name in enumerate(OLD_FIELDS, start=1):
    assert fields[name].number == number
    assert fields[name].type == fields[name].TYPE_INT32
  old = _old_limits_class()
  # An old client reads a new server's answer: the fields it knows.
  seen = old.FromString(info.limits.SerializeToString())
  assert [getattr(seen, n) for n in OLD_FIELDS] == [
      getattr(info.limits, n) for n in OLD_FIELDS]
  # A new client reads an old server's answer: the rest are 0.
  read = judge_pb2.Limits.FromString(
      old(**{n: getattr(info.limits, n) for n in OLD_FIELDS})
      .SerializeToString())
  for name in fields:
    assert getattr(read, name) == (
        getattr(info.limits, name) if name in OLD_FIELDS else 0), name
