"""A training progress bar that counts optimiser steps: ``train 120/600 [04:10<16:40, 2.08 s/step, loss=1.93,
val_map=34.91%]``.

Lightning's own bar counts batches of an epoch; the UWE data stream is one endless epoch that stops at
``trainer.max_steps``, so Lightning shows ``Epoch 0/-2`` and no total. This bar's total is ``max_steps``, its
position the global step (a resumed run starts where it stopped), and its rate the average since the bar
started, WorkBench validations included, so the ETA is the time the run still needs rather than the speed of
the last steps. It shows the training loss and the latest validation macro MAP in percent.
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar

from uwe_lightning.workbench.metric_names import VAL_MACRO_MAP

#: The validation score the bar shows (in percent).
VAL_SCORE = VAL_MACRO_MAP


class StepProgressBar(TQDMProgressBar):
    """TQDM bar over ``global_step / max_steps`` with loss and the last validation macro MAP (percent)."""

    def init_train_tqdm(self):
        bar = super().init_train_tqdm()
        bar.unit = "step"
        return bar

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        super().on_train_epoch_start(trainer)
        bar = self.train_progress_bar
        bar.reset(total=trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None)
        bar.initial = bar.n = trainer.global_step  # rate and ETA from the steps this start trains
        bar.set_description("train")
        bar.refresh()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        bar = self.train_progress_bar
        if bar is not None and not bar.disable and self._should_update(step, bar.total or 0):
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=True)

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = {k: v for k, v in super().get_metrics(trainer, pl_module).items() if k != "v_num"}
        loss = items.pop("train/loss", None)
        shown: dict[str, Any] = {}
        if loss is not None:
            shown["loss"] = loss
        score = trainer.callback_metrics.get(VAL_SCORE)
        if score is not None and math.isfinite(float(score)):
            shown["val_map"] = f"{float(score):.2f}%"
        return {**shown, **items}
