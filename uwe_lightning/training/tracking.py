"""Who a run is in W&B, and what it shows: a short name, one group per multirun, true tags, one portable config.

- name: the keys that tell this job from its siblings, ``scorer=softmax,seed=1``: in a multirun the swept keys
  only (the experiment's ``hydra.sweeper.params`` and command-line sweeps), in a single run its own
  overrides; paths and Hydra's keys left out, long values shortened, at most :data:`MAX_NAME` characters (a
  longer one ends in a hash of the whole, so names stay unique); a run without overrides is named by its
  ``task_name``;
- group: ``<task_name>/<sweep start>`` for every job of one ``-m`` invocation (all jobs share the sweep dir), the
  ``task_name`` for a single run;
- tags: the experiment (``task_name``), ``run``/``multirun``, ``scale:<name>`` only when the run's sizes are
  that scale's (else ``scale:custom``), ``model:<choice>`` and ``debug:<choice>`` from the composed groups;
- config: one nested copy of the resolved config (:func:`logged_config`), machine paths replaced by
  ``${paths.<key>}`` names;
- id: generated once and stored in ``run_info.json`` (``wandb.id``), so ``resume=true`` continues the same W&B run.
Offline by default (``logger.wandb.mode``), never a login.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from uwe_lightning.paths import RUN_INFO_FILE
from uwe_lightning.workbench.metric_names import (
    MACRO,
    MAP,
    METRICS,
    TEST,
    VAL_MACRO_MAP,
    in_percent,
    metric_name,
)
from uwe_lightning.workbench.report import headline_average

#: Override keys that say where a run writes, not what it is.
NAME_EXCLUDED_PREFIXES = ("hydra.", "paths.", "resume=", "overwrite=", "logger", "experiment=", "trainer.enable_")
#: The longest W&B run name written (W&B's tables stay readable; the full overrides are in the config).
MAX_NAME = 64
#: A value longer than this is shortened in a name (a path to its last part, anything else cut).
MAX_VALUE = 24


def short_value(value: str) -> str:
    """A value as a run name shows it: a path by its last part, a long value cut with ``~``.

    >>> short_value("/tmp/runs/tiny-bert0"), short_value("[JobNorm,SkillNorm,SkillExtr-H,SkillExtr-T]")
    ('tiny-bert0', '[JobNorm,SkillNorm,SkillExt~')
    """
    value = value.strip("'\"")
    if "/" in value and not value.startswith("["):
        value = value.rstrip("/").rsplit("/", 1)[-1] or value
    return value if len(value) <= MAX_VALUE else value[: MAX_VALUE + 3] + "~"


def fit_name(name: str, limit: int = MAX_NAME) -> str:
    """``name`` cut to ``limit`` characters; a cut name ends in a hash of the whole (unique within a group).

    >>> len(fit_name("x" * 100)), fit_name("x" * 100)[-9:]
    (64, '~50e48369')
    """
    if len(name) <= limit:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9]}~{digest}"


def swept_keys(hydra_cfg: Any | None, argv: list[str] | None = None) -> set[str] | None:
    """The keys a multirun sweeps (``hydra.sweeper.params`` and command-line sweeps); None outside a multirun."""
    if hydra_cfg is None or str(hydra_cfg.mode) not in ("MULTIRUN", "RunMode.MULTIRUN"):
        return None
    keys = {str(k) for k in (OmegaConf.select(hydra_cfg, "sweeper.params", default=None) or {})}
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create().parse_overrides(
            [a for a in (sys.argv[1:] if argv is None else argv) if "=" in a and not a.startswith("-")])
        keys |= {o.key_or_group for o in parsed if o.is_sweep_override()}
    except Exception:  # a launcher's own argv: fall back to the sweeper's params
        pass
    return keys


def run_name(task_overrides: list[str], task_name: str, swept: set[str] | None = None) -> str:
    """``loss=mtm,seed=1`` from the job's overrides (sorted, so every job of a sweep is named alike); with
    ``swept`` (a multirun), only those keys.

    >>> run_name(["+experiment=ablation_loss", "seed=1", "loss=mtm", "hydra.run.dir=x"], "ablation_loss")
    'loss=mtm,seed=1'
    >>> run_name(["trainer=gpu", "seed=1", "loss=mtm"], "ablation_loss", swept={"loss", "seed"})
    'loss=mtm,seed=1'
    >>> run_name([], "train")
    'train'
    """
    kept = []
    for override in sorted(o.lstrip("+~") for o in task_overrides):
        if override.startswith(NAME_EXCLUDED_PREFIXES):
            continue
        key, _, value = override.partition("=")
        if swept is not None and key not in swept:
            continue
        kept.append(f"{key}={short_value(value)}")
    return fit_name(",".join(kept) or task_name)


def scale_tag(cfg: DictConfig) -> str | None:
    """``scale:<name>`` when the run's sizes are the scale's (its skills per step, one of its step counts),
    else ``scale:custom`` (e.g. ``debug=fast``: 32 skills, 20 steps); None without a scale."""
    name = OmegaConf.select(cfg, "scale.name")
    if not name:
        return None
    steps = OmegaConf.select(cfg, "scale.steps", default=None) or {}
    sizes_match = (OmegaConf.select(cfg, "data.skills_per_step") == OmegaConf.select(cfg, "scale.skills_per_step")
                   and OmegaConf.select(cfg, "trainer.max_steps") in set(steps.values()))
    return f"scale:{name}" if sizes_match else "scale:custom"


def run_tags(cfg: DictConfig, hydra_cfg: Any | None, multirun: bool) -> list[str]:
    tags = [str(cfg.task_name), "multirun" if multirun else "run"]
    scale = scale_tag(cfg)
    if scale:
        tags.append(scale)
    choices = OmegaConf.select(hydra_cfg, "runtime.choices", default=None) if hydra_cfg is not None else None
    for group in ("model", "debug"):
        choice = (choices or {}).get(group)
        if choice:
            tags.append(f"{group}:{choice}")
    return tags


def wandb_identity(cfg: DictConfig, hydra_cfg: Any | None, run_dir: Path) -> dict[str, Any]:
    """Keyword arguments for ``WandbLogger`` (name, group, tags, job_type, id, resume) for this run."""
    task_name = str(cfg.task_name)
    overrides = list(hydra_cfg.overrides.task) if hydra_cfg is not None else []
    swept = swept_keys(hydra_cfg)
    multirun = swept is not None
    group = f"{task_name}/{Path(str(hydra_cfg.sweep.dir)).name}" if multirun else task_name
    return {
        "name": run_name(overrides, task_name, swept),
        "group": group,
        "tags": run_tags(cfg, hydra_cfg, multirun),
        "job_type": "train",
        "id": stored_wandb_id(run_dir) or secrets.token_hex(4),
        "resume": "allow",
    }


def portable(value: Any, roots: list[tuple[str, str]]) -> Any:
    """``value`` with machine paths replaced: under a ``paths.*`` root by ``${paths.<key>}``, any other
    absolute path by ``.../<last part>`` (the run's ``run_info.json`` keeps the full ones)."""
    if isinstance(value, dict):
        return {k: portable(v, roots) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v, roots) for v in value]
    if not isinstance(value, str) or not value.startswith("/"):
        return value
    for key, root in roots:
        if value == root or value.startswith(root.rstrip("/") + "/"):
            return "${paths." + key + "}" + value[len(root.rstrip("/")):]
    return ".../" + value.rstrip("/").rsplit("/", 1)[-1]


def logged_config(cfg: DictConfig, run_dir: Path | None = None) -> dict[str, Any]:
    """The config the loggers get: resolved and nested (one copy), ``hydra`` left out, no absolute path of
    this machine (see :func:`portable`); ``paths`` itself as written in the config (``${oc.env:...}``)."""
    data = OmegaConf.to_container(cfg, resolve=True)
    data.pop("hydra", None)
    resolved_paths = data.pop("paths", {}) or {}
    roots = sorted(((k, str(v)) for k, v in resolved_paths.items() if isinstance(v, str) and v.startswith("/")),
                   key=lambda kv: -len(kv[1]))
    out = portable(data, roots)
    written = OmegaConf.to_container(cfg.paths, resolve=False) if "paths" in cfg else {}
    out["paths"] = portable(written, [])
    return out


def define_wandb_metrics(loggers: list) -> None:
    """W&B's run summary keeps the best validation macro MAP (not the last); every metric's step axis is the
    optimiser step (Lightning defines that already)."""
    for logger in loggers:
        if type(logger).__name__ != "WandbLogger":
            continue
        run = logger.experiment
        if getattr(run, "define_metric", None) is None:
            return
        run.define_metric(VAL_MACRO_MAP, step_metric="trainer/global_step", summary="max")


def update_wandb_summary(loggers: list, summary: dict[str, Any]) -> None:
    """The run's final summary (:mod:`~uwe_lightning.training.summary`) in W&B's run summary: metrics under
    their own names (``val/macro/map``, ``test/macro/map``), the rest as ``run/...``."""
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            logger.experiment.summary.update({k if "/" in k else f"run/{k}": v for k, v in summary.items()})


def stored_wandb_id(run_dir: Path) -> str | None:
    path = run_dir / RUN_INFO_FILE
    if not path.is_file():
        return None
    return (json.loads(path.read_text()).get("wandb") or {}).get("id")


#: The W&B test table's columns: one row per (model, task); the model column tells the trained model from step 0
#: and the baselines evaluated beside it on the same test queries.
TEST_TABLE_COLUMNS = ["model", "task", *METRICS, "n_queries"]


def results_table_rows(results: dict) -> list[list[Any]]:
    """Rows of the test table: the trained model, step 0 (``results["step0"]``), then each baseline
    (``results["baselines"]``), each with its tasks and its average (WorkBench macro, or the own graph's).

    >>> res = {"model": "m", "tasks": {"edges": {"map": 0.5, "rp@10": 0.6, "n_queries": 3}},
    ...        "macro": {"map": None}, "suites": {"own": {"map": 0.5, "rp@10": 0.6}}}
    >>> [row[:3] for row in results_table_rows({**res, "baselines": {"popularity": res}})]
    [['m', 'edges', 50.0], ['m', 'average', 50.0], ['popularity', 'edges', 50.0], ['popularity', 'average', 50.0]]
    """
    results = in_percent(results)
    beside = [("zero-shot (step 0)", results["step0"])] if results.get("step0") else []
    beside += list((results.get("baselines") or {}).items())
    rows = []
    for model, res in [(str(results.get("model", "model")), results), *beside]:
        rows += [[model, task, *(row[m] for m in METRICS), row.get("n_queries")] for task, row in res["tasks"].items()]
        average = headline_average(res)
        name = MACRO if average is res.get("macro") else "average"
        rows.append([model, name, *(average.get(m) for m in METRICS), None])
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
        for name, task, *values, _ in rows:
            stage = TEST if name == model else f"{TEST}/{'step0' if name.startswith('zero-shot') else name}"
            summary.update({metric_name(stage, task, m): v for m, v in zip(METRICS, values, strict=True)})
        logger.experiment.summary.update(summary)
        log_test_bars(logger, [row for row in rows if row[0] == model])


#: The W&B chart of the model's test MAP per task (a bar chart over the test table's rows).
TEST_BARS_KEY = "test/map_by_task"


def log_test_bars(logger: Any, rows: list[list[Any]]) -> None:
    """The model's test MAP per task (and macro) as a W&B bar chart, ``test/map_by_task``."""
    import wandb

    table = wandb.Table(columns=["task", MAP], data=[[task, value] for _, task, value, *_ in rows if value is not None])
    logger.experiment.log({TEST_BARS_KEY: wandb.plot.bar(table, "task", MAP, title="test MAP by task (%)")})


def model_artifact_metadata(summary: dict[str, Any]) -> dict[str, Any]:
    """What the model artifact says about itself: the exported step and its scores (percent).

    >>> model_artifact_metadata({"export": {"provenance": {"step": 4}}, "selection": {"exported_val": 40.0},
    ...                          "best_val": {"val/macro/map": 41.0}, "test_macro": {"map": 30.0}})
    {'exported_step': 4, 'val/macro/map': 40.0, 'best val/macro/map': 41.0, 'test/macro/map': 30.0}
    """
    out = {"exported_step": ((summary.get("export") or {}).get("provenance") or {}).get("step"),
           VAL_MACRO_MAP: (summary.get("selection") or {}).get("exported_val"),
           f"best {VAL_MACRO_MAP}": (summary.get("best_val") or {}).get(VAL_MACRO_MAP),
           **{metric_name(TEST, MACRO, m): (summary.get("test_macro") or {}).get(m) for m in METRICS}}
    return {k: v for k, v in out.items() if v is not None}


def log_model_artifact(loggers: list, model_dir: Path, summary: dict[str, Any]) -> str | None:
    """The exported model (``best_model/``) as a W&B Artifact of type ``model`` (alias ``best``), named
    ``model-<run id>``, with :func:`model_artifact_metadata`. Offline, W&B stages a copy of its files with the run
    and ``wandb sync`` uploads it; returns the artifact's name (None without a W&B logger)."""
    metadata = model_artifact_metadata(summary)
    for logger in loggers:
        if type(logger).__name__ != "WandbLogger":
            continue
        import wandb

        run = logger.experiment
        artifact = wandb.Artifact(name=f"model-{run.id}", type="model", metadata=metadata,
                                  description="the run's exported model (best_model/): a sentence-transformers "
                                              "and UWE model directory")
        artifact.add_dir(str(model_dir))
        run.log_artifact(artifact, aliases=["best"])
        return artifact.name
    return None


def finish_wandb(loggers: list) -> None:
    """Close the W&B run so that the next job of a multirun starts its own."""
    if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
        import wandb

        wandb.finish()
