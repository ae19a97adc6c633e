"""Who a run is in W&B: a readable name, one group per multirun invocation, tags, and an id kept for resume.

- name: the run's own command-line overrides (``loss=mtm,seed=1``), paths and Hydra's keys left out; a run
  without overrides is named by its ``task_name``;
- group: ``<task_name>/<sweep start>`` for every job of one ``-m`` invocation (all jobs share the sweep dir), the
  ``task_name`` for a single run;
- tags: the experiment (``task_name``), ``scale:<name>`` when the config has a ``scale`` group, and the mode;
- id: generated once and stored in ``run_info.json`` (``wandb.id``), so ``resume=true`` continues the same W&B run.
Offline by default (``logger.wandb.mode``), never a login.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from uwe_lightning.paths import RUN_INFO_FILE

#: Override keys that say where a run writes, not what it is.
NAME_EXCLUDED_PREFIXES = ("hydra.", "paths.", "resume=", "overwrite=", "logger", "experiment=", "trainer.enable_")


def run_name(task_overrides: list[str], task_name: str) -> str:
    """``loss=mtm,seed=1`` from the job's overrides (sorted, so every job of a sweep is named alike).

    >>> run_name(["+experiment=ablation_loss", "seed=1", "loss=mtm", "hydra.run.dir=x"], "ablation_loss")
    'loss=mtm,seed=1'
    >>> run_name([], "train")
    'train'
    """
    kept = sorted(o.lstrip("+~") for o in task_overrides if not o.lstrip("+~").startswith(NAME_EXCLUDED_PREFIXES))
    return ",".join(kept) or task_name


def wandb_identity(cfg: DictConfig, hydra_cfg: Any | None, run_dir: Path) -> dict[str, Any]:
    """Keyword arguments for ``WandbLogger`` (name, group, tags, job_type, id, resume) for this run."""
    task_name = str(cfg.task_name)
    overrides = list(hydra_cfg.overrides.task) if hydra_cfg is not None else []
    multirun = hydra_cfg is not None and str(hydra_cfg.mode) in ("MULTIRUN", "RunMode.MULTIRUN")
    group = f"{task_name}/{Path(str(hydra_cfg.sweep.dir)).name}" if multirun else task_name
    tags = [task_name, "multirun" if multirun else "run"]
    scale = OmegaConf.select(cfg, "scale.name")
    if scale:
        tags.append(f"scale:{scale}")
    return {
        "name": run_name(overrides, task_name),
        "group": group,
        "tags": tags,
        "job_type": "train",
        "id": stored_wandb_id(run_dir) or secrets.token_hex(4),
        "resume": "allow",
    }


def stored_wandb_id(run_dir: Path) -> str | None:
    path = run_dir / RUN_INFO_FILE
    if not path.is_file():
        return None
    return (json.loads(path.read_text()).get("wandb") or {}).get("id")


def log_test_table(loggers: list, results: dict) -> None:
    """The final test results as a W&B Table (``test/results``) and summary scalars."""
    for logger in loggers:
        if type(logger).__name__ != "WandbLogger":
            continue
        rows = [[task, row["map"], row["rp@10"], row.get("n_queries")] for task, row in results["tasks"].items()]
        rows.append(["macro", results["macro"]["map"], results["macro"]["rp@10"], None])
        logger.log_table(key="test/results", columns=["task", "map", "rp@10", "n_queries"], data=rows)
        logger.experiment.summary.update({f"test/{r[0]}/map": r[1] for r in rows})


def finish_wandb(loggers: list) -> None:
    """Close the W&B run so that the next job of a multirun starts its own."""
    if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
        import wandb

        wandb.finish()
