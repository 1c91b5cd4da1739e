"""The run journal: an append-only msgpack stream of every rollout.

msgpack objects are self-delimiting, so a crash that tears the last record
leaves every earlier one readable; `read` stops at the torn tail.
"""

import pathlib
from typing import Any, Iterator

import msgpack


class Journal:

  def __init__(self, path: pathlib.Path):
    self._file = open(path, "ab")
    self._packer = msgpack.Packer()

  def append(self, records: list[dict[str, Any]]) -> None:
    self._file.write(b"".join(self._packer.pack(r) for r in records))
    self._file.flush()

  def tell(self) -> int:
    """Bytes written so far: where a resumed run cuts the journal."""
    return self._file.tell()

  def close(self) -> None:
    self._file.close()


def read(path: pathlib.Path) -> Iterator[dict[str, Any]]:
  unpacker = msgpack.Unpacker(raw=False)
  unpacker.feed(pathlib.Path(path).read_bytes())
  try:
    yield from unpacker
  except (msgpack.OutOfData, ValueError):
    return
