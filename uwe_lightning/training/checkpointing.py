"""Checkpoints a run can trust: atomic, finite-only writes; a checkpoint at the final step and on SIGTERM.

- :class:`AtomicCheckpointIO` writes every checkpoint to a temporary file in the checkpoint's own directory,
  fsyncs it and publishes it with ``os.replace`` (atomic on POSIX): a crash mid-write leaves the previous
  file intact. Lightning's default goes through an fsspec transaction that writes to the system temp dir and
  then *moves* the file, which is a copy (not atomic) when /tmp is on another filesystem. It also refuses to
  save weights holding NaN/inf, so a good checkpoint is never replaced by a diverged model.
- :class:`UWECheckpoint` is Lightning's ``ModelCheckpoint`` that also keeps the run's final step: it saves
  ``last.ckpt`` at the end of training when the last periodic save was earlier, considers a validation at the
  final step for the best checkpoint even when ``max_steps`` is not a multiple of the period, and saves
  ``last.ckpt`` when the run is stopped by SIGTERM (preemption), so that ``resume=true`` continues.
"""

from __future__ import annotations

import errno
import logging
import os
import pickle
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from uwe_lightning.io import DataError, atomic_write_path

log = logging.getLogger(__name__)

LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


def nonfinite_tensors(state_dict: dict[str, Any]) -> list[str]:
    """Names of floating-point tensors in ``state_dict`` that hold NaN or inf."""
    return [
        name
        for name, value in state_dict.items()
        if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file next to ``path``, fsync, then ``os.replace`` onto ``path``.

    A failed write (torch reports a full disk as ``enforce fail at inline_container.cc ... unexpected pos``)
    becomes an ``OSError`` naming the file and the free space left; the previous file stays in place.
    """
    try:
        with atomic_write_path(path, suffix=".partial") as tmp:
            torch.save(obj, tmp)
    except (OSError, RuntimeError) as err:
        free = shutil.disk_usage(Path(path).parent).free if Path(path).parent.is_dir() else 0
        code = getattr(err, "errno", None) or errno.ENOSPC
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise OSError(code, f"cannot write checkpoint {path} ({free / 2**20:.0f} MiB free on its disk): {first}") \
            from err


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
        """On SIGTERM (preemption) or Ctrl-C (:class:`StopOnInterrupt`) save ``last.ckpt``: Lightning stops only
        between steps, so the state is a consistent, finished step and ``resume=true`` continues exactly there.
        Other exceptions save nothing (the last periodic checkpoint stays the one to resume from)."""
        super().on_exception(trainer, pl_module, exception)
        unsaved = self._last_global_step_saved != trainer.global_step
        if (
            isinstance(exception, SIGTERMException)
            and self.save_last
            and unsaved
            and not trainer.fast_dev_run
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            if trainer.is_global_zero:
                log.warning("stopped by signal: saved %s at step %d", self.last_model_path, trainer.global_step)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        unsaved = self._last_global_step_saved != trainer.global_step
        if self.save_last and unsaved and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)


class StopOnInterrupt(Callback):
    """Ctrl-C (SIGINT) stops a run the way SIGTERM does: at the end of the current step, after ``last.ckpt``
    is saved, so ``resume=true`` continues exactly there. A second Ctrl-C interrupts at once.

    Lightning's own Ctrl-C handling stops wherever the ``KeyboardInterrupt`` lands (possibly inside an
    optimiser step) and saves nothing; this routes SIGINT through Lightning's SIGTERM flag instead.

    Data parallel: a signal handler only notes the signal, and at the end of every step the ranks agree on it
    (one all-reduce of a flag), so every rank stops after the same step and saves together. Lightning's own
    SIGTERM handler is replaced there: it broadcasts from inside the handler, which pairs with whatever
    collective the other rank is in when the signal arrives (a signal sent to the whole process group reaches
    rank 1 twice, once from the shell and once from rank 0's launcher), and hangs the run.
    """

    def __init__(self) -> None:
        self.received: str | None = None  # "SIGINT" / "SIGTERM" once a stop was asked for on this rank
        self._previous: dict[int, Any] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        distributed = trainer.world_size > 1

        def handler(signum: int, frame: Any) -> None:
            name = signal.Signals(signum).name
            if self.received == "SIGINT" and name == "SIGINT":
                self._restore()
                raise KeyboardInterrupt
            if self.received is None:
                log.warning("%s: stopping after this step and saving last.ckpt%s", name,
                            " (Ctrl-C again stops at once)" if name == "SIGINT" else "")
            self.received = self.received or name
            if not distributed:
                trainer._signal_connector.received_sigterm = True  # Lightning's flag: stop after this step

        for signum in (signal.SIGINT, signal.SIGTERM) if distributed else (signal.SIGINT,):
            self._previous[signum] = signal.signal(signum, handler)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.world_size > 1:  # every rank at the same point of the same step: agree on stopping
            flag = torch.tensor([1.0 if self.received else 0.0], device=trainer.strategy.root_device)
            if bool(trainer.strategy.reduce(flag, reduce_op="max") > 0):
                self.received = self.received or "SIGTERM"
                trainer._signal_connector.received_sigterm = True

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            if previous is not None:
                signal.signal(signum, previous)
        self._previous = {}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()


def remove_partial_files(directory: Path) -> list[Path]:
    """Delete temporary files left by a write that was killed midway (``.<name>.*.partial``, staging dirs)."""
    removed = []
    if directory.is_dir():
        for path in directory.glob(".*.partial"):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def find_checkpoint_callback(trainer: pl.Trainer) -> ModelCheckpoint | None:
    return next((cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint)), None)


def load_module_weights(module: torch.nn.Module, ckpt_path: str | Path) -> dict[str, Any]:
    """Load a Lightning checkpoint's ``state_dict`` into ``module``; returns the checkpoint's other fields."""
    ckpt = torch.load(str(ckpt_path), map_location="cpu", weights_only=False)
    if "state_dict" not in ckpt:
        raise KeyError(f"{ckpt_path}: not a Lightning checkpoint (no 'state_dict')")
    module.load_state_dict(ckpt["state_dict"])
    return {k: v for k, v in ckpt.items() if k not in ("state_dict", "optimizer_states")}


def resume_checkpoint(resume: bool, run_dir: Path) -> Path | None:
    """``<run_dir>/checkpoints/last.ckpt`` when ``resume=true`` (it must exist), else None."""
    if not resume:
        return None
    path = run_dir / LAST_CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(
            f"resume=true but {path} does not exist; point at the earlier run with hydra.run.dir=<its dir>"
        )
    return path


def last_checkpoint_note(run_dir: Path) -> str:
    last = run_dir / LAST_CHECKPOINT
    if not last.is_file():
        return "no checkpoint was written before this step"
    return f"the last good checkpoint {last} (step {checkpoint_step(last)}) was not overwritten"


def checkpoint_step(path: Path) -> int:
    """The ``global_step`` stored in a Lightning checkpoint (read lazily: weights are memory-mapped); a damaged
    checkpoint is one :class:`DataError` naming it, before the run starts from it."""
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=False, mmap=True)
        return int(ckpt["global_step"])
    except (RuntimeError, OSError, EOFError, KeyError, ValueError, TypeError, pickle.UnpicklingError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise DataError(f"checkpoint {path} is damaged ({type(err).__name__}: {first}); move it away to resume "
                        "from the checkpoint before it, or start again with overwrite=true") from err
