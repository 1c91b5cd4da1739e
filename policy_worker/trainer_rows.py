"""What tunix's trainers log, as one row of numbers per step.

tunix's PeftTrainer (and the DPO trainer built on it) logs a step's metrics
one at a time through its MetricsLogger and then calls the training hooks'
`on_train_step_end`; it writes a step's train metrics one step late (to
overlap the host work with the next step), so the evaluation at step k is
logged before step k's train metrics. Collecting by step and emitting at
`on_train_step_end` therefore gives whole rows, eval included. The
evaluation before the first update is step 0.
"""

from collections.abc import Callable

import numpy as np
from tunix.sft import hooks
from tunix.sft import metrics_logger

Row = dict[str, float]


class RowLogger(metrics_logger.MetricsLogger):
  """tunix's logger (history only, no backends) that builds rows: a metric
  `a/b` is column `a_b`, and eval metrics are prefixed `eval_`."""

  def __init__(self):
    super().__init__(None)
    self._pending: dict[int, Row] = {}

  def log(self, metrics_prefix, metric_name, scalar_value, mode, step):
    super().log(metrics_prefix, metric_name, scalar_value, mode, step)
    column = metric_name.replace("/", "_")
    if mode == metrics_logger.Mode.EVAL:
      column = f"eval_{column}"
    self._pending.setdefault(step, {})[column] = float(np.asarray(scalar_value))

  def pop(self, step: int) -> Row:
    return self._pending.pop(step, {})


class RowHooks(hooks.TrainingHooks):
  """Hands `emit(step, row)` each finished step: step 0 (the evaluation
  before training, if any) when training starts, then every update."""

  def __init__(self, logger: RowLogger, emit: Callable[[int, Row], None]):
    self._logger = logger
    self._emit = emit

  def on_train_start(self, train_ctx):
    row = self._logger.pop(0)
    if row:
      self._emit(0, row)

  def on_train_step_end(self, train_ctx, train_step, train_loss):
    self._emit(train_step, self._logger.pop(train_step))

  def on_train_end(self, train_ctx):
    pass

  def on_train_step_start(self, train_ctx):
    pass

  def on_eval_step_start(self, train_ctx):
    pass

  def on_eval_step_end(self, train_ctx, eval_loss):
    pass


def attach(trainer, emit: Callable[[int, Row], None]) -> None:
  """Makes a PeftTrainer (or subclass) hand its rows to `emit`.

  Set after construction: the DPO trainer takes no logger argument.
  """
  logger = RowLogger()
  trainer.metrics_logger = logger
  trainer.with_training_hooks(RowHooks(logger, emit))
