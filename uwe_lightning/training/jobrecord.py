"""A Hydra job's record in its run directory (``.hydra/`` and ``<job>.log``), written once the command accepts
the run, so that a refused command changes no byte of an existing run directory.

Hydra itself writes ``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml`` before the command runs
(``hydra.output_subdir``) and opens ``<job>.log`` when it configures logging. A command that then refuses the
run, e.g. ``train`` into a directory that already holds a finished run, would already have rewritten the record
of the run it refused (which then says it was trained with the refused overrides). So ``conf/hydra/default.yaml``
sets ``output_subdir: null`` and logs through :class:`HeldFileHandler`, and each command with a run directory
(train, evaluate, rank, bench, serve) calls :func:`accept_run` where it starts writing its outputs: that writes
Hydra's three files and releases the log records held so far. A user error (:mod:`uwe_lightning.cli.errors`)
calls :func:`drop_held_log` instead.

Where a later start goes: the first accepted start in a directory writes ``.hydra/``; a later one (``resume=true``,
or ``evaluate``/``rank`` again into the same directory) writes its files to ``.hydra/restarts/<time>/`` beside
them, so the record of how the run was started is never replaced (``train overwrite=true`` removes the earlier
run's ``.hydra/`` together with its outputs: the new run is a new start). Its log lines are appended to the
same ``<job>.log``, as Hydra does.

A multirun's sweep directory gets the same care (:class:`JobRecordCallback`, a Hydra callback set in
``conf/hydra/default.yaml``): Hydra's basic sweeper rewrites ``<sweep dir>/multirun.yaml`` at every start, so a
second multirun into the same directory (to resume its jobs, or one whose jobs are all refused) would replace the
record of the first. The first start's file stays; a later one's goes to ``<sweep dir>/.restarts/<time>/``.
(A run directory Hydra created for a refused command is removed again while empty:
:mod:`uwe_lightning.cli.output_dir`.)
"""

from __future__ import annotations

import copy
import logging
import os
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from uwe_lightning.io import atomic_write_bytes, atomic_write_text

HYDRA_DIR = ".hydra"
#: Where the files of a later start into the same directory go (inside :data:`HYDRA_DIR`).
RESTARTS_DIR = "restarts"
HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")


class HeldFileHandler(logging.FileHandler):
    """Hydra's job log file, held back until the run is accepted.

    Records are kept in memory (the console shows them at once) until :func:`accept_run` writes them and lets
    later ones through; :func:`drop_held_log` (a refused command) forgets them, so the log of a run that was
    refused gains no line and no empty log file appears. A command that ends otherwise (a crash) has them
    written when logging shuts down. The file is opened at the first write (``delay``).
    """

    def __init__(self, filename: str, mode: str = "a", encoding: str | None = None, delay: bool = True,
                 errors: str | None = None) -> None:
        super().__init__(filename, mode, encoding, delay=True, errors=errors)
        self._held: list[logging.LogRecord] | None = []
        self._dropped = False

    def emit(self, record: logging.LogRecord) -> None:
        if self._held is None:
            super().emit(record)
            return
        held = copy.copy(record)  # the message as it reads now: its arguments may change before it is written
        held.msg, held.args = record.getMessage(), None
        self._held.append(held)

    def release_held(self) -> None:
        """Write the held records and every later one straight to the file. (Not ``release``: that name is
        ``logging.Handler``'s lock, which guards this against another thread's ``emit``.)"""
        self.acquire()
        try:
            held, self._held = self._held, None
            for record in held or []:
                super().emit(record)
        finally:
            self.release()

    def drop_held(self) -> None:
        """Forget the held records (and hold, then forget, any later one: the command is ending)."""
        self.acquire()
        try:
            self._held, self._dropped = [], True
        finally:
            self.release()

    def close(self) -> None:
        if self._held and not self._dropped:
            self.release_held()
        super().close()


def _held_handlers() -> list[HeldFileHandler]:
    return [h for h in logging.getLogger().handlers if isinstance(h, HeldFileHandler)]


def drop_held_log() -> None:
    """The command refused its run: the log lines held for its run directory are not written."""
    for handler in _held_handlers():
        handler.drop_held()


def _hydra_state():
    """The running Hydra job's config root (``{"hydra": ...}``), or None outside a Hydra app."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.instance().cfg if HydraConfig.initialized() else None


def _restart_dir(parent: Path) -> Path:
    """A new ``parent/<%Y%m%dT%H%M%S>[-n]`` (not created)."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target, n = parent / stamp, 0
    while target.exists():
        n += 1
        target = parent / f"{stamp}-{n}"
    return target


def hydra_files_dir(run_dir: Path) -> Path:
    """Where this start's files go in ``run_dir``: ``.hydra/`` for the first start, else a new
    ``.hydra/restarts/<%Y%m%dT%H%M%S>[-n]/``."""
    first = run_dir / HYDRA_DIR
    if not (first / HYDRA_FILES[0]).exists():
        return first
    return _restart_dir(first / RESTARTS_DIR)


def accept_run(cfg: DictConfig) -> Path | None:
    """The command accepted its run: write this Hydra job's ``config.yaml`` (``cfg``, unresolved as Hydra
    saves it), ``hydra.yaml`` and ``overrides.yaml`` into its run directory (see the module docstring for where)
    and release the held log; returns where the files went. Call it once per job.

    No files outside a Hydra app (a test, a library call) or where Hydra wrote them itself (a user's
    ``hydra.output_subdir=<dir>``).
    """
    for handler in _held_handlers():
        handler.release_held()
    state = _hydra_state()
    run_dir = None if state is None else OmegaConf.select(state, "hydra.runtime.output_dir", default=None)
    if run_dir is None or state.hydra.output_subdir is not None:
        return None
    target = hydra_files_dir(Path(run_dir))
    contents = (OmegaConf.to_yaml(cfg), OmegaConf.to_yaml(state), OmegaConf.to_yaml(state.hydra.overrides.task))
    for name, text in zip(HYDRA_FILES, contents, strict=True):
        atomic_write_text(target / name, text)
    return target


MULTIRUN_FILE = "multirun.yaml"
#: A sweep directory's first ``multirun.yaml``, kept aside while Hydra's sweeper writes its own.
KEPT_MULTIRUN_FILE = ".multirun.yaml.first"
SWEEP_RESTARTS_DIR = ".restarts"


class JobRecordCallback(Callback):
    """Keep the first ``multirun.yaml`` of a sweep directory; a later start's goes to ``.restarts/<time>/``.

    Hydra's basic sweeper writes ``multirun.yaml`` between ``on_multirun_start`` and the first job, so the first
    start's file is copied aside at ``on_multirun_start`` and put back at the first ``on_job_start`` (in the job's
    process, so joblib and submitit jobs do it too; the first to rename wins). A start that died in between
    leaves the copy, which the next start puts back first.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        kept, current = sweep_dir / KEPT_MULTIRUN_FILE, sweep_dir / MULTIRUN_FILE
        if kept.exists():  # an earlier start died before its first job: its first record comes back first
            os.replace(kept, current)
        if current.exists():
            atomic_write_bytes(kept, current.read_bytes())

    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = OmegaConf.select(config, "hydra.sweep.dir", default=None)
        if sweep_dir is None or "MULTIRUN" not in str(OmegaConf.select(config, "hydra.mode", default="")):
            return
        kept, current = Path(str(sweep_dir)) / KEPT_MULTIRUN_FILE, Path(str(sweep_dir)) / MULTIRUN_FILE
        if not kept.exists():
            return
        later = _restart_dir(Path(str(sweep_dir)) / SWEEP_RESTARTS_DIR) / MULTIRUN_FILE
        later.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(current, later)
            os.replace(kept, current)
        except FileNotFoundError:  # another job of this sweep did it first
            pass
