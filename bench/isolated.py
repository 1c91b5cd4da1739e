"""Running a bench's stage in a fresh process."""

import concurrent.futures
import multiprocessing


def run(fn, *args):
  """fn(*args) in a new (spawned) process, its result returned: jax keeps
  the models and compiled programs of a stage alive, and several 270M
  stages in one process outgrow this machine's memory (the scaffold bench
  reached 12 GB and was killed)."""
  with concurrent.futures.ProcessPoolExecutor(
      1, mp_context=multiprocessing.get_context("spawn")) as pool:
    return pool.submit(fn, *args).result()
