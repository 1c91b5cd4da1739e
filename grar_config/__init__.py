"""Config types that the trainer and the judge both name (the model to build,
a mesh's shape) and the strict YAML-to-dataclass loader they share.

Pure Python: it imports neither jax nor any other part of grar, so a judge
with a remote backend loads its config on a machine that has neither.
"""
