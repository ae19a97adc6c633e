"""Training callbacks: WorkBench validation of the live encoder, checkpointing keyed to it, atomic writes.

- :class:`WorkBenchValidation` evaluates the encoder being trained on WorkBench validation tasks every
  ``every_n_steps`` optimiser steps and at step 0 (the zero-shot model), logging ``val/<task>/map``,
  ``val/<task>/rp@10`` and ``val/macro_map`` (task-type average, as the paper's "task-average MAP").
- :class:`UWECheckpoint` is Lightning's ``ModelCheckpoint`` that also keeps the run's final step: it saves
  ``last.ckpt`` at the end of training when the last periodic save was earlier, and considers a validation
  at the final step for the best checkpoint even when ``max_steps`` is not a multiple of the period, and
  saves ``last.ckpt`` when the run is stopped by SIGTERM (preemption), so that ``resume=true`` continues.
- :class:`AtomicCheckpointIO` writes every checkpoint to a temporary file in the checkpoint's own directory,
  fsyncs it and publishes it with ``os.replace`` (atomic on POSIX): a crash mid-write leaves the previous
  file intact. Lightning's default goes through an fsspec transaction that writes to the system temp dir and
  then *moves* the file, which is a copy (not atomic) when /tmp is on another filesystem. It also refuses to
  save weights holding NaN/inf, so a good checkpoint is never replaced by a diverged model.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from uwe_lightning.io import atomic_write_path

log = logging.getLogger(__name__)

VAL_MONITOR = "val/macro_map"


# ----------------------------------------------------------------------------------------------------------
# Atomic, finite-only checkpoint writes
# ----------------------------------------------------------------------------------------------------------


def nonfinite_tensors(state_dict: dict[str, Any]) -> list[str]:
    """Names of floating-point tensors in ``state_dict`` that hold NaN or inf."""
    return [
        name
        for name, value in state_dict.items()
        if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file next to ``path``, fsync, then ``os.replace`` onto ``path``."""
    with atomic_write_path(path, suffix=".partial") as tmp:
        torch.save(obj, tmp)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Local checkpoint writes that are atomic and never store non-finite weights."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        bad = nonfinite_tensors(checkpoint.get("state_dict", {}))
        if bad:
            raise FloatingPointError(
                f"refusing to write checkpoint {path}: non-finite weights in {bad[:3]}"
                f"{' and more' if len(bad) > 3 else ''}; the previous checkpoint is kept"
            )
        atomic_torch_save(checkpoint, path)


# ----------------------------------------------------------------------------------------------------------
# Checkpointing
# ----------------------------------------------------------------------------------------------------------


class UWECheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that also covers the final step (see the module docstring)."""

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kw: Any
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, *args, **kw)
        step = trainer.global_step
        final = trainer.max_steps > 0 and step >= trainer.max_steps
        if not final or self._last_global_step_saved == step or self._should_skip_saving_checkpoint(trainer):
            return
        candidates = self._monitor_candidates(trainer)
        validated_now = getattr(trainer, "uwe_last_val_step", None) == step
        if self.monitor is None or (validated_now and self.monitor in candidates):
            self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """On SIGTERM (preemption) save ``last.ckpt``: Lightning stops only between steps, so the state is a
        consistent, finished step and ``resume=true`` continues exactly there. Other exceptions save nothing."""
        super().on_exception(trainer, pl_module, exception)
        unsaved = self._last_global_step_saved != trainer.global_step
        if (
            isinstance(exception, SIGTERMException)
            and self.save_last
            and unsaved
            and not trainer.fast_dev_run
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            log.warning("SIGTERM: saved %s at step %d", self.last_model_path, trainer.global_step)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        unsaved = self._last_global_step_saved != trainer.global_step
        if self.save_last and unsaved and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)


def find_checkpoint_callback(trainer: pl.Trainer) -> ModelCheckpoint | None:
    return next((cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint)), None)


# ----------------------------------------------------------------------------------------------------------
# WorkBench validation
# ----------------------------------------------------------------------------------------------------------


def val_metrics(results: dict) -> dict[str, float]:
    """Flatten :func:`evaluate_ranker` results into logged scalars.

    >>> val_metrics({"tasks": {"JobNorm": {"map": 0.5, "rp@10": 0.25}}, "macro": {"map": 0.5, "rp@10": 0.25}})
    {'val/JobNorm/map': 0.5, 'val/JobNorm/rp@10': 0.25, 'val/macro_map': 0.5, 'val/macro_rp@10': 0.25}
    """
    out: dict[str, float] = {}
    for task, row in results["tasks"].items():
        out[f"val/{task}/map"] = float(row["map"])
        out[f"val/{task}/rp@10"] = float(row["rp@10"])
    macro = results.get("macro", {})
    out[VAL_MONITOR] = float(macro.get("map", math.nan))
    out["val/macro_rp@10"] = float(macro.get("rp@10", math.nan))
    return out


def register_protocol_tasks() -> None:
    """Import the modules that register tasks beyond the built-in WorkBench ones (e.g. ``Job2Skill@open``)."""
    try:
        import uwe_lightning.data.protocol  # noqa: F401
    except ImportError as err:  # the open protocol is optional for a run on user edges
        log.debug("uwe_lightning.data.protocol not importable: %s", err)


class WorkBenchValidation(Callback):
    """Evaluate the live encoder on WorkBench validation tasks every ``every_n_steps`` steps and at step 0.

    The encoder is wrapped in a :class:`~uwe_lightning.ranking.ranker.Ranker` (``model_id="step<N>"``, no disk
    cache: the weights change every step) with no token limit, as at inference. Each evaluation is appended to
    ``history_file`` (JSON lines) and kept in the callback state, so a resumed run keeps the whole curve.
    Unavailable tasks are reported once and left out; if none is available the run stops with the reasons.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        every_n_steps: int | None = 50,
        max_queries: int | None = 1000,
        data_dir: str | None = None,
        seed: int = 0,
        batch_size: int = 128,
        at_start: bool = True,
        history_file: str | None = None,
        show_progress: bool = False,
    ) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("WorkBenchValidation needs at least one task (disable validation instead)")
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"validation every_n_steps must be >= 1 or null, got {every_n_steps}")
        self.tasks = list(tasks)
        self.every_n_steps = every_n_steps
        self.max_queries = max_queries
        self.data_dir = data_dir
        self.seed = seed
        self.batch_size = batch_size
        self.at_start = at_start
        self.history_file = Path(history_file) if history_file else None
        self.show_progress = show_progress
        self.history: list[dict[str, Any]] = []
        self._warned_unavailable = False

    # -- schedule -------------------------------------------------------------------------------------------

    def due(self, step: int, max_steps: int) -> bool:
        """Validate at every multiple of ``every_n_steps`` and at the final step.

        >>> cb = WorkBenchValidation(["JobNorm"], every_n_steps=50)
        >>> [s for s in range(1, 121) if cb.due(s, 120)]
        [50, 100, 120]
        """
        if self.every_n_steps is None:
            return max_steps > 0 and step == max_steps
        return step % self.every_n_steps == 0 or (max_steps > 0 and step == max_steps)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.at_start and trainer.global_step == 0 and not any(h["step"] == 0 for h in self.history):
            self.validate(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kw: Any
    ) -> None:
        if self.due(trainer.global_step, trainer.max_steps):
            self.validate(trainer, pl_module)

    # -- evaluation -----------------------------------------------------------------------------------------

    def evaluate(self, pl_module: pl.LightningModule, step: int) -> dict:
        from uwe_lightning.ranking.ranker import Ranker
        from uwe_lightning.workbench.runner import evaluate_ranker

        register_protocol_tasks()
        ranker = Ranker(
            pl_module.encoder,
            scorer=pl_module.scorer.name,
            tau=pl_module.scorer.tau,
            batch_size=self.batch_size,
            max_length=None,
            device=str(pl_module.device),
            model_id=f"step{step}",
        )
        return evaluate_ranker(
            ranker, self.tasks, "val", data_dir=self.data_dir, max_queries=self.max_queries, seed=self.seed
        )

    def validate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        step = trainer.global_step
        was_training = pl_module.training
        start = time.perf_counter()
        try:
            results = self.evaluate(pl_module, step)
        finally:
            pl_module.train(was_training)  # the Ranker puts the encoder in eval mode
        if not results["tasks"]:
            raise RuntimeError(f"no validation task is available: {results.get('unavailable')}")
        if results.get("unavailable") and not self._warned_unavailable:
            log.warning(
                "validation tasks unavailable (left out of val/macro_map): %s", results["unavailable"]
            )
            self._warned_unavailable = True
        metrics = val_metrics(results)
        metrics["val/seconds"] = round(time.perf_counter() - start, 2)
        self.publish(trainer, metrics, step)
        record = {"step": step, **metrics, "unavailable": sorted(results.get("unavailable", {}))}
        self.history.append(record)
        if self.history_file is not None and trainer.is_global_zero:
            self.history_file.parent.mkdir(parents=True, exist_ok=True)
            with open(self.history_file, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        log.info("step %d: val/macro_map %.4f (%.1f s)", step, metrics[VAL_MONITOR], metrics["val/seconds"])
        return metrics

    @staticmethod
    def publish(trainer: pl.Trainer, metrics: dict[str, float], step: int) -> None:
        """Send metrics to every logger and to ``callback_metrics`` (what ModelCheckpoint monitors)."""
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})
        trainer.uwe_last_val_step = step  # type: ignore[attr-defined]  # read by UWECheckpoint

    # -- state (survives resume) ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))

    def best(self) -> dict[str, Any] | None:
        """The evaluation with the highest ``val/macro_map`` so far."""
        scored = [h for h in self.history if math.isfinite(h.get(VAL_MONITOR, math.nan))]
        return max(scored, key=lambda h: h[VAL_MONITOR]) if scored else None


class TrainThroughput(Callback):
    """Steps/s and texts/s of the training steps alone (validation excluded), and peak memory.

    Peak memory is ``torch.cuda.max_memory_allocated`` on GPU, else the process's maximum resident set size
    (which includes validation and data loading in the main process).
    """

    def __init__(self) -> None:
        self.step_seconds: list[float] = []
        self.texts: list[int] = []
        self._start: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._start = time.perf_counter()
        self.texts.append(len(batch.skill_inputs["input_ids"]) + sum(
            len(g.text_inputs["input_ids"]) for g in batch.graphs.values()))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._start is None:
            return
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.step_seconds.append(time.perf_counter() - self._start)
        self._start = None
        pl_module.log("train/step_seconds", self.step_seconds[-1], on_step=True, prog_bar=False)

    def summary(self) -> dict[str, float]:
        if not self.step_seconds:
            return {}
        import resource

        seconds = sum(self.step_seconds)
        out = {
            "train_steps_timed": len(self.step_seconds),
            "steps_per_s": round(len(self.step_seconds) / seconds, 4),
            "texts_per_s": round(sum(self.texts[: len(self.step_seconds)]) / seconds, 1),
            "mean_texts_per_step": round(sum(self.texts) / len(self.texts), 1),
            "peak_cpu_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        }
        if torch.cuda.is_available():
            out["peak_gpu_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        return out
