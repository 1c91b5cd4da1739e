"""The version of grar that is running: what `grar --version` prints and
what each run directory's config copy records."""

import importlib.metadata
import pathlib
import tomllib

_PYPROJECT = pathlib.Path(__file__).resolve().parents[1] / "pyproject.toml"


def version() -> str:
  """The installed package's version; from a checkout that was never
  installed (the code run from its tree), pyproject.toml's."""
  try:
    return importlib.metadata.version("grar")
  except importlib.metadata.PackageNotFoundError:
    return tomllib.loads(_PYPROJECT.read_text())["project"]["version"]
