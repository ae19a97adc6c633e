"""The run directory must be writable before Hydra creates it, and a refused command leaves no empty one behind.

Hydra creates ``hydra.run.dir`` (or ``hydra.sweep.dir``) and opens its log file before the command runs; a
directory it cannot write fails there with a traceback (or, for a directory that exists but is read-only, with
logging's own tracebacks later). :class:`WritableOutputDir` is a Hydra callback (``conf/hydra/default.yaml``)
that checks first and ends the command with one line and exit status 2. It also remembers whether the run
directory existed, so that a command refusing its run (:mod:`uwe_lightning.cli.errors`) removes the directory
it created, if it is still empty.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

_created: dict[str, Path | None] = {"run_dir": None}


def unwritable_reason(path: Path) -> str | None:
    """Why a directory cannot be created or written at ``path`` (None: it can).

    >>> unwritable_reason(Path("/proc/self/status/x"))
    '/proc/self/status is not a directory'
    """
    path = path.absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable by this user"
    return None


def check_output_dir(path: Path, key: str, tool: str) -> None:
    """One line and exit status 2 when ``path`` (the value of ``key``) cannot be written."""
    reason = unwritable_reason(path)
    if reason is not None:
        print(f"[{tool}] error: cannot write the run directory {key}={path}: {reason}; choose another one "
              f"with {key}=<dir>", file=sys.stderr, flush=True)
        raise SystemExit(2)


class WritableOutputDir(Callback):
    """Hydra callback: check the run (or sweep) directory before Hydra creates it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        path = Path(str(OmegaConf.select(config, "hydra.run.dir")))
        check_output_dir(path, "hydra.run.dir", str(OmegaConf.select(config, "hydra.job.name") or "uwe"))
        _created["run_dir"] = None if path.exists() else path.absolute()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        path = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        check_output_dir(path, "hydra.sweep.dir", str(OmegaConf.select(config, "hydra.job.name") or "uwe"))


def remove_created_empty_run_dir() -> None:
    """Remove the run directory this command created, if nothing was written into it (a refused run)."""
    path = _created["run_dir"]
    if path is None or not path.is_dir():
        return
    try:
        path.rmdir()  # only succeeds when empty
    except OSError:
        return
    _created["run_dir"] = None
