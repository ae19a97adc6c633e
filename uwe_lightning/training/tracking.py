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
from uwe_lightning.workbench.report import headline_average

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


#: The W&B test table's columns: one row per (model, task); the model column tells the trained model from step 0
#: and the baselines evaluated beside it on the same test queries.
TEST_TABLE_COLUMNS = ["model", "task", "map", "rp@10", "n_queries"]


def results_table_rows(results: dict) -> list[list[Any]]:
    """Rows of the test table: the trained model, step 0 (``results["step0"]``), then each baseline
    (``results["baselines"]``), each with its tasks and its average (WorkBench macro, or the own graph's).

    >>> res = {"model": "m", "tasks": {"edges": {"map": 0.5, "rp@10": 0.6, "n_queries": 3}},
    ...        "macro": {"map": None}, "suites": {"own": {"map": 0.5, "rp@10": 0.6}}}
    >>> [row[:3] for row in results_table_rows({**res, "baselines": {"popularity": res}})]
    [['m', 'edges', 0.5], ['m', 'average', 0.5], ['popularity', 'edges', 0.5], ['popularity', 'average', 0.5]]
    """
    beside = [("zero-shot (step 0)", results["step0"])] if results.get("step0") else []
    beside += list((results.get("baselines") or {}).items())
    rows = []
    for model, res in [(str(results.get("model", "model")), results), *beside]:
        rows += [[model, task, row["map"], row["rp@10"], row.get("n_queries")] for task, row in res["tasks"].items()]
        average = headline_average(res)
        name = "macro" if average is res.get("macro") else "average"
        rows.append([model, name, average.get("map"), average.get("rp@10"), None])
    return rows


def log_test_table(loggers: list, results: dict) -> None:
    """The final test results as a W&B Table (``test/results``: the model beside step 0 and the baselines) and
    summary scalars (``test/<task>/map`` for the model, ``test/<step0|baseline name>/<task>/map`` beside it)."""
    for logger in loggers:
        if type(logger).__name__ != "WandbLogger":
            continue
        rows = results_table_rows(results)
        logger.log_table(key="test/results", columns=TEST_TABLE_COLUMNS, data=rows)
        model = rows[0][0] if rows else None
        summary = {}
        for name, task, value, *_ in rows:
            prefix = "test" if name == model else f"test/{'step0' if name.startswith('zero-shot') else name}"
            summary[f"{prefix}/{task}/map"] = value
        logger.experiment.summary.update(summary)


def finish_wandb(loggers: list) -> None:
    """Close the W&B run so that the next job of a multirun starts its own."""
    if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
        import wandb

        wandb.finish()
