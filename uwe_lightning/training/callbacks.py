"""Training callbacks: WorkBench validation of the live model, and training throughput.

:class:`WorkBenchValidation` evaluates the model being trained on WorkBench validation tasks every
``every_n_steps`` optimiser steps and at step 0 (the zero-shot model), logging ``val/<task>/map``,
``val/<task>/rp@10``, ``val/macro/map`` and ``val/macro/rp@10`` in percent (task-type average, as the paper's
"task-average MAP"; names: :mod:`uwe_lightning.workbench.metric_names`), which the checkpoint callback
(:mod:`uwe_lightning.training.checkpointing`) monitors.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from uwe_lightning.io import atomic_write_json, atomic_write_text, strict_json
from uwe_lightning.ranking.ranker import Ranker
from uwe_lightning.workbench import metric_names as names
from uwe_lightning.workbench.report import headline_average
from uwe_lightning.workbench.runner import evaluate_ranker

log = logging.getLogger(__name__)

VAL_MONITOR = names.MONITOR


def val_metrics(results: dict) -> dict[str, float]:
    """Flatten :func:`evaluate_ranker` results into logged scalars (percent).

    >>> val_metrics({"tasks": {"JobNorm": {"map": 0.5, "rp@10": 0.25}}, "macro": {"map": 0.5, "rp@10": 0.25}})
    {'val/JobNorm/map': 50.0, 'val/JobNorm/rp@10': 25.0, 'val/macro/map': 50.0, 'val/macro/rp@10': 25.0}
    """
    # no WorkBench task: a data=edges run validates on its own held-out edges
    return names.val_metrics(results, headline_average(results))


class WorkBenchValidation(Callback):
    """Evaluate the live encoder on WorkBench validation tasks every ``every_n_steps`` steps and at step 0.

    The model is wrapped in a :class:`~uwe_lightning.ranking.ranker.Ranker` (``model_id="step<N>"``, no disk
    cache: the weights change every step) with no token limit, as at inference. ``task_options`` builds the
    tasks (``get_task(name, **options)``), e.g. the open protocol's ``@open`` tasks with the run's fractions. Each evaluation is appended to
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
        task_options: Mapping[str, Mapping[str, Any]] | None = None,
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
        self.task_options = {name: dict(opts) for name, opts in (task_options or {}).items()}
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
        # The file holds exactly the restored history: validations after the resumed checkpoint (done by a run
        # that was killed later) are dropped, and are done again by this run.
        self.history = [h for h in self.history if h["step"] <= trainer.global_step]
        if self.history_file is not None and trainer.is_global_zero:
            atomic_write_text(self.history_file, "".join(strict_json(h) + "\n" for h in self.history))
        if self.at_start and trainer.global_step == 0 and not any(h["step"] == 0 for h in self.history):
            self.validate(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kw: Any
    ) -> None:
        if self.due(trainer.global_step, trainer.max_steps):
            self.validate(trainer, pl_module)

    # -- evaluation -----------------------------------------------------------------------------------------

    def evaluate(self, pl_module: pl.LightningModule, step: int) -> dict:
        ranker = Ranker.from_model(
            pl_module.model,
            batch_size=self.batch_size,
            max_length=None,
            device=str(pl_module.device),
            model_id=f"step{step}",
        )
        return evaluate_ranker(
            ranker, self.tasks, "val", data_dir=self.data_dir, max_queries=self.max_queries, seed=self.seed,
            task_options=self.task_options,
        )

    def validate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        """Evaluate on rank 0 and broadcast the results, so that every rank logs and checkpoints alike (the
        checkpoint callback's decisions and its barrier must agree across ranks); other ranks wait for it."""
        step = trainer.global_step
        was_training = pl_module.training
        start = time.perf_counter()
        results: dict | None = None
        if trainer.is_global_zero:
            try:
                results = self.evaluate(pl_module, step)
            except Exception as err:  # reaches every rank below, instead of leaving them waiting
                results = {"error": f"{type(err).__name__}: {err}"}
                if trainer.world_size == 1:
                    raise
            finally:
                pl_module.train(was_training)  # the Ranker puts the encoder in eval mode
            results["seconds"] = round(time.perf_counter() - start, 2)
        results = trainer.strategy.broadcast(results, src=0)
        if "error" in results:
            raise RuntimeError(f"validation at step {step} failed on rank 0: {results['error']}")
        if not results["tasks"]:
            raise RuntimeError(f"no validation task is available: {results.get('unavailable')}")
        if results.get("unavailable") and not self._warned_unavailable:
            log.warning(
                "validation tasks unavailable (left out of %s): %s", VAL_MONITOR, results["unavailable"]
            )
            self._warned_unavailable = True
        metrics = val_metrics(results)
        metrics[names.VAL_SECONDS] = results["seconds"]
        self.publish(trainer, metrics, step)
        record = {"step": step, **metrics, "unavailable": sorted(results.get("unavailable", {}))}
        self.history.append(record)
        if self.history_file is not None and trainer.is_global_zero:
            self.history_file.parent.mkdir(parents=True, exist_ok=True)
            with open(self.history_file, "a") as fh:
                fh.write(strict_json(record) + "\n")
        if trainer.is_global_zero:
            log.info("step %d: %s %.2f %% (%.1f s)", step, VAL_MONITOR, metrics[VAL_MONITOR],
                     metrics[names.VAL_SECONDS])
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
        # a checkpoint of an older run holds fractions under the old names
        self.history = [names.upgrade_val_record(h) for h in state_dict.get("history", [])]

    def best(self) -> dict[str, Any] | None:
        """The evaluation with the highest ``val/macro/map`` so far."""
        scored = [h for h in self.history if math.isfinite(h.get(VAL_MONITOR, math.nan))]
        return max(scored, key=lambda h: h[VAL_MONITOR]) if scored else None


class TrainThroughput(Callback):
    """Steps/s and texts/s of the training steps alone (validation excluded), and peak memory (of rank 0).

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
        self.texts.append(batch.num_texts)  # the whole step's, over all data-parallel ranks

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


class RunProgress(Callback):
    """``<run dir>/progress.json`` every ``every`` steps: step, max_steps, wall seconds of training and of
    validation so far. What a watcher (``python -m uwe_lightning.campaign``) predicts a run's end from."""

    def __init__(self, path: str, every: int = 5) -> None:
        self.path = path
        self.every = max(1, int(every))
        self._start: float | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()  # before the step-0 validation, which counts as validation time

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.write(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every == 0 or trainer.global_step >= (trainer.max_steps or 0):
            self.write(trainer)

    def write(self, trainer: pl.Trainer) -> None:
        if self._start is None or not trainer.is_global_zero:
            return
        validation = next((cb for cb in trainer.callbacks if isinstance(cb, WorkBenchValidation)), None)
        history = validation.history if validation is not None else []
        val_seconds = sum(float(h.get(names.VAL_SECONDS, 0.0)) for h in history)
        elapsed = time.perf_counter() - self._start
        atomic_write_json(Path(self.path), {
            "step": int(trainer.global_step), "max_steps": int(trainer.max_steps or 0),
            "elapsed_s": round(elapsed, 2), "val_s": round(val_seconds, 2), "validations": len(history),
            "train_s": round(max(elapsed - val_seconds, 0.0), 2), "time": time.time(),
        })
