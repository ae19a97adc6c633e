"""A run's directory: one run per directory, resumable, never silently overwritten; how a stopped run resumes."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from uwe_lightning.io import ConfigError
from uwe_lightning.paths import RUN_INFO_FILE
from uwe_lightning.training.checkpointing import LAST_CHECKPOINT, remove_partial_files
from uwe_lightning.training.jobrecord import HYDRA_DIR
from uwe_lightning.training.provenance import current_hydra_config
from uwe_lightning.workbench.report import RESULTS_FILE

log = logging.getLogger("uwe_lightning.train")

EXIT_STATUS = {"SIGTERM": 128 + 15, "SIGINT": 128 + 2}  # the shell convention for "terminated by <signal>"
#: What a run writes into its directory (a directory holding one of these holds a run).
RUN_OUTPUTS = ("checkpoints", "best_model", "val_history.jsonl", RESULTS_FILE, "results.md", "knowledge_gain.md",
               "csv", "wandb", RUN_INFO_FILE)
#: What ``overwrite=true`` (or a resume that starts again) removes: the outputs and the record of the earlier
#: start (``.hydra/``, see :mod:`~uwe_lightning.training.jobrecord`), which the new start writes afresh.
CLEARED = (*RUN_OUTPUTS, HYDRA_DIR)


def existing_outputs(run_dir: Path) -> list[str]:
    return [name for name in RUN_OUTPUTS if (run_dir / name).exists()]


def clear_outputs(run_dir: Path) -> None:
    for name in CLEARED:
        path = run_dir / name
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> Path | None:
    """The checkpoint to resume from, after deciding what may happen to what the directory already holds.

    - ``resume=true``: continue from ``checkpoints/last.ckpt``; a run killed before its first checkpoint starts
      again from step 0 (its partial outputs removed); a directory without a run is an error.
    - otherwise a directory holding a run is refused, unless ``overwrite=true`` (then its outputs are removed).

    Leftover temporary files of a write that was killed midway are removed once the run is accepted (a refused
    run changes nothing in the directory).
    """
    found = existing_outputs(run_dir)
    if found and not resume and not overwrite:
        raise ConfigError(
            f"{run_dir} already holds a run ({', '.join(found)}): continue it with resume=true, start a new one "
            "with another hydra.run.dir=<dir>, or replace it with overwrite=true"
        )
    if resume and not found:
        raise ConfigError(
            f"resume=true but {run_dir} holds no run to resume; point hydra.run.dir at the earlier run's directory"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    removed = remove_partial_files(run_dir / "checkpoints") + remove_partial_files(run_dir)
    if removed:
        log.warning("removed %d unfinished file(s) of a killed write: %s", len(removed), [p.name for p in removed])
    last = run_dir / LAST_CHECKPOINT
    if resume:
        if last.is_file():
            return last
        log.warning("resume=true: %s has no checkpoint yet (stopped before the first one); starting again", run_dir)
        clear_outputs(run_dir)
        return None
    if found:
        log.warning("overwrite=true: removing the earlier run's %s from %s", found, run_dir)
        clear_outputs(run_dir)
    return None


def resume_command(run_dir: Path) -> str:
    """The command that continues this run (the original overrides when Hydra knows them)."""
    hydra_cfg = current_hydra_config()
    if hydra_cfg is None:  # not inside a Hydra app
        overrides = ["<the same overrides>"]
    else:
        overrides = [o for o in hydra_cfg.overrides.task if not o.startswith(("resume=", "hydra.run.dir="))]
    return " ".join(["python -m uwe_lightning.train", *overrides, f"hydra.run.dir={run_dir}", "resume=true"])
