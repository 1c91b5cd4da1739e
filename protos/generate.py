"""Regenerates the Python modules from judge.proto.

`python -m protos.generate` writes them beside the .proto; `generate(out_dir)`
writes them elsewhere (the drift test compares the two).
"""

import pathlib
import sys

from grpc_tools import protoc
import grpc_tools

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO = "protos/judge.proto"


def generate(out_dir: pathlib.Path) -> None:
  include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
  args = [
      "protoc",
      f"-I{ROOT}",
      f"-I{include}",
      f"--python_out={out_dir}",
      f"--pyi_out={out_dir}",
      f"--grpc_python_out={out_dir}",
      str(ROOT / PROTO),
  ]
  if protoc.main(args) != 0:
    raise RuntimeError(f"protoc failed on {PROTO}")


if __name__ == "__main__":
  generate(ROOT)
  sys.exit(0)
