"""One training run from a composed config: build, fit, select and export, test.

One run = one Hydra run directory (``outputs/<task_name>/runs/<time>/``, or ``hydra.run.dir=...``) holding:

- ``run_info.json``: the resolved config, git commit ("unknown" outside a git checkout), package versions,
  and one entry per (re)start;
- ``checkpoints/``: the best checkpoint on ``val/macro/map`` and ``last.ckpt`` (atomic writes);
- ``val_history.jsonl``: every WorkBench validation (step 0 = the zero-shot model);
- ``csv/`` (and ``wandb/`` with ``logger=wandb``): training curves;
- ``best_model/``: the selected weights as a saved :class:`~uwe_lightning.model.pretrained.UWEModel`
  (``UWEModel.from_pretrained`` / ``Ranker.from_pretrained`` / ``model=trained model.backbone=<dir>`` load it);
- ``results.json`` + ``results.md``: the final test evaluation of ``best_model/`` (plus the knowledge gain
  over the step-0 model when ``test.knowledge_gain=true``);
- ``.hydra/``: Hydra's config.yaml, hydra.yaml, overrides.yaml, written once the run is accepted (a refused run
  changes nothing); a resume's own go to ``.hydra/restarts/<time>/`` (:mod:`~uwe_lightning.training.jobrecord`).

Resume an interrupted run in its own directory (same overrides as the original run)::

    python -m uwe_lightning.train +experiment=uwe hydra.run.dir=outputs/train/runs/<that run> resume=true

Training continues from ``<run dir>/checkpoints/last.ckpt`` and the data stream at the checkpoint's step.

Data parallel (``trainer=ddp``): Lightning starts ranks ``1..n-1`` as copies of the command (or SLURM starts
every rank); each builds the same module, data and trainer, but only rank 0 prepares the run directory, writes
``run_info.json`` and the loggers' files, validates (and broadcasts the result), checkpoints, exports and
tests. The other ranks return after training.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
import torch
from hydra.errors import InstantiationException
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from uwe_lightning.data.datamodule import UWEDataModule
from uwe_lightning.io import atomic_write_text
from uwe_lightning.losses import GraphLoss
from uwe_lightning.model.backbones import backbone_identity
from uwe_lightning.model.pretrained import ModelSpec, write_model_card
from uwe_lightning.paths import PROGRESS_FILE
from uwe_lightning.ranking.ranker import Ranker
from uwe_lightning.training import owndata
from uwe_lightning.training.callbacks import (
    VAL_MONITOR,
    RunProgress,
    TrainThroughput,
    WorkBenchValidation,
)
from uwe_lightning.training.cardinfo import data_description, training_summary
from uwe_lightning.training.checkpointing import (
    LAST_CHECKPOINT,
    AtomicCheckpointIO,
    StopOnInterrupt,
    checkpoint_step,
    find_checkpoint_callback,
    last_checkpoint_note,
    load_module_weights,
)
from uwe_lightning.training.config import check_sections, check_values
from uwe_lightning.training.distributed import check_launch, launched_as_rank_zero
from uwe_lightning.training.jobrecord import accept_run
from uwe_lightning.training.module import NonFiniteError, UWEModule
from uwe_lightning.training.preflight import check_accelerator
from uwe_lightning.training.progress import StepProgressBar
from uwe_lightning.training.provenance import add_info, add_summary, current_hydra_config, record_start
from uwe_lightning.training.rundir import EXIT_STATUS, prepare_run_dir, resume_command
from uwe_lightning.training.summary import console_summary, headline, run_outputs, selection_summary
from uwe_lightning.training.tracking import (
    define_wandb_metrics,
    finish_wandb,
    log_model_artifact,
    log_test_table,
    logged_config,
    update_wandb_summary,
    wandb_identity,
)
from uwe_lightning.training.views import NO_VIEWS, SkillViews, skill_views
from uwe_lightning.workbench.metric_names import METRICS, UNIT, UNIT_KEY, in_percent
from uwe_lightning.workbench.report import (
    card_markdown,
    headline_average,
    knowledge_gain,
    knowledge_gain_markdown,
    model_index_rows,
    write_results,
)
from uwe_lightning.workbench.runner import evaluate_ranker

log = logging.getLogger("uwe_lightning.train")

# ----------------------------------------------------------------------------------------------------------
# Building blocks (everything comes from the config groups' _target_)
# ----------------------------------------------------------------------------------------------------------


def build_loss(cfg: DictConfig) -> GraphLoss:
    """The ``loss`` group restricted to ``data.graphs``; raises ValueError when no graph has a weight."""
    return hydra.utils.instantiate(cfg.loss, graphs=list(cfg.data.graphs))


def build_module(cfg: DictConfig, loss: GraphLoss | None = None) -> UWEModule:
    """The LightningModule of the config (``loss``: the run's already built :func:`build_loss`)."""
    spec: ModelSpec = hydra.utils.instantiate(cfg.model)
    if spec.kind != "encoder":
        raise ValueError(f"model={spec.name} (kind {spec.kind}) cannot be trained; use an encoder model")
    o, t = cfg.optim, cfg.train
    return UWEModule(
        backbone=str(spec.backbone),
        scorer=hydra.utils.instantiate(cfg.scorer),
        loss=loss if loss is not None else build_loss(cfg),
        graphs=list(cfg.data.graphs),
        lr=o.lr,
        weight_decay=o.weight_decay,
        warmup_ratio=o.warmup_ratio,
        betas=list(o.betas),
        eps=o.eps,
        max_steps=cfg.trainer.max_steps,
        train_max_length=t.max_length,
        score_chunk_size=t.score_chunk_size,
        score_checkpoint=t.score_checkpoint,
        model_dir=cfg.paths.model_dir,
        seed=cfg.seed,
        grad_cache=t.grad_cache,
        grad_cache_size=t.grad_cache_size,
        grad_cache_unit=t.grad_cache_unit,
        backbone_checkpointing=t.backbone_checkpointing,
    )


def build_datamodule(cfg: DictConfig) -> UWEDataModule:
    return hydra.utils.instantiate(cfg.data, _recursive_=True)


def loss_or_skip_reason(cfg: DictConfig) -> tuple[GraphLoss | None, str | None]:
    """The run's loss, or why the run has nothing to train (a grid point with every loss weight 0)."""
    try:
        return build_loss(cfg), None
    except InstantiationException as err:
        if isinstance(err.__cause__, ValueError) and "weight 0" in str(err.__cause__):
            return None, str(err.__cause__)
        raise


def validation_enabled(cfg: DictConfig) -> bool:
    return bool(cfg.validation.tasks)


def build_callbacks(cfg: DictConfig, run_dir: Path, task_options: dict) -> list[pl.Callback]:
    """Callbacks of the ``callbacks`` group, plus WorkBench validation when ``validation.tasks`` is non-empty.

    Without validation the checkpoint callback monitors nothing (``best`` = the latest checkpoint).
    """
    callbacks_cfg = OmegaConf.create(OmegaConf.to_container(cfg.callbacks, resolve=True))
    callbacks: list[pl.Callback] = [TrainThroughput(), RunProgress(str(run_dir / PROGRESS_FILE))]
    if validation_enabled(cfg):
        v = cfg.validation
        callbacks.append(
            WorkBenchValidation(
                tasks=list(v.tasks),
                every_n_steps=v.every_n_steps,
                max_queries=v.max_queries,
                data_dir=cfg.paths.data_dir,
                seed=v.seed,
                batch_size=v.batch_size,
                at_start=v.at_start,
                history_file=str(run_dir / "val_history.jsonl"),
                task_options=task_options,
            )
        )
    for name, node in callbacks_cfg.items():
        if node is None or "_target_" not in node:
            continue
        if not validation_enabled(cfg) and node.get("monitor") == VAL_MONITOR:
            with open_dict(node):
                node.monitor = None
                node.mode = "min"
            log.info("validation disabled: checkpoint callback %r keeps the latest checkpoint", name)
        callbacks.append(hydra.utils.instantiate(node))
    if OmegaConf.select(cfg, "trainer.enable_progress_bar", default=True) and not any(
            isinstance(cb, pl.callbacks.ProgressBar) for cb in callbacks):
        callbacks.append(StepProgressBar())  # step k/max_steps with an ETA (Lightning's counts epoch batches)
    return callbacks


def build_loggers(cfg: DictConfig, run_dir: Path) -> tuple[list[pl.loggers.Logger], dict[str, Any] | None]:
    """The ``logger`` group's loggers; W&B gets this run's name, group, tags and id (:mod:`.tracking`)."""
    loggers, identity = [], None
    for node in (cfg.get("logger") or {}).values():
        if node is None or "_target_" not in node:
            continue
        if node["_target_"].endswith("WandbLogger"):
            identity = wandb_identity(cfg, current_hydra_config(), run_dir)
            logger = hydra.utils.instantiate(node, **identity)
            # Lightning passes anonymous=None, which wandb answers with a warning nobody can act on
            getattr(logger, "_wandb_init", {}).pop("anonymous", None)
            loggers.append(logger)
        else:
            loggers.append(hydra.utils.instantiate(node))
    return loggers, identity


# ----------------------------------------------------------------------------------------------------------
# After training: select, export, test
# ----------------------------------------------------------------------------------------------------------


def select_and_export(cfg: DictConfig, trainer: pl.Trainer, module: UWEModule, run_dir: Path) -> dict[str, Any]:
    """Load the selected weights (best checkpoint, or the final model) and save them as ``best_model/``."""
    select = cfg.export.select  # "best" or "last" (check_values)
    ckpt_cb = find_checkpoint_callback(trainer)
    best_path = ckpt_cb.best_model_path if ckpt_cb is not None else ""
    source, step, val_metric = "final in-memory model", trainer.global_step, None
    if select == "best" and best_path and Path(best_path).is_file():
        fields = load_module_weights(module, best_path)
        source, step = best_path, int(fields.get("global_step", -1))
        if ckpt_cb.monitor and ckpt_cb.best_model_score is not None:
            val_metric = {"name": ckpt_cb.monitor, "value": float(ckpt_cb.best_model_score)}
    elif select == "best":
        log.warning("no best checkpoint (validation off or fast_dev_run); exporting the final model")
    module.model.cpu()
    identity = backbone_identity(str(cfg.model.backbone))
    source_datasets = getattr(getattr(trainer.datamodule, "source", None), "card_datasets", ())
    provenance = {"backbone": str(cfg.model.backbone), "base_model": identity["base_model"],
                  "license": identity["license"], "step": int(step), "val_metric": val_metric,
                  "source_checkpoint": source, "data": data_description(cfg), "training": training_summary(cfg),
                  "datasets": [dict(d) for d in source_datasets],
                  "training_data": owndata.training_data(trainer.datamodule)}
    out = module.model.save_pretrained(run_dir / "best_model", **provenance)
    log.info("exported %s (step %d) to %s", source, step, out)
    return {"dir": str(out), **module.model.config()}


def run_test(cfg: DictConfig, model_dir: Path, run_dir: Path, task_options: dict,
             views: SkillViews = NO_VIEWS) -> dict[str, Any] | None:
    """Evaluate the exported model on the test splits; write results.json/.md into the run dir (+ ``views``)."""
    t = cfg.test
    if not t.tasks:
        log.info("test.tasks is empty: no final test evaluation")
        return None
    kwargs = {"batch_size": t.batch_size, "device": t.device}
    evaluate = {"tasks": list(t.tasks), "split": "test", "data_dir": cfg.paths.data_dir,
                "max_queries": t.max_queries, "seed": t.seed, "task_options": task_options, "views": views[0]}
    ranker = Ranker.from_pretrained(str(model_dir), model_id=f"{cfg.task_name}/best_model", **kwargs)
    results = evaluate_ranker(ranker, **evaluate)
    del ranker
    results.update({"skill_holdout": views[1]} if views[1] else {})  # test.skill_views: what the halves are
    results.update(owndata.baselines(cfg, run_dir, {**evaluate, "views": None}))  # data=edges: the popularity prior
    if t.knowledge_gain:
        base = Ranker.from_pretrained(str(cfg.model.backbone), scorer=cfg.scorer.name, tau=cfg.scorer.tau,
                                      model_dir=cfg.paths.model_dir, model_id="step0", **kwargs)
        base_results = evaluate_ranker(base, **evaluate)
        results["step0"] = {k: base_results[k] for k in ("tasks", "macro", "suites", "views") if k in base_results}
        results["knowledge_gain"] = knowledge_gain(results, base_results)
    results = in_percent(results)  # the run's record: every score in percent (metric_names)
    write_results(results, run_dir, title=f"{cfg.task_name}: {model_dir.name} on the test split")
    write_model_card(model_dir, card_markdown(results, title="test split"),
                     evaluations=model_index_rows({**results, "seed": t.seed}))
    if t.knowledge_gain:
        atomic_write_text(run_dir / "knowledge_gain.md", knowledge_gain_markdown(results["knowledge_gain"]))
    return results


# ----------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------


def train(cfg: DictConfig, extra_callbacks: Sequence[pl.Callback] = ()) -> dict[str, Any]:
    """Train, export and test as configured; returns a summary (also merged into ``run_info.json``).
    ``extra_callbacks`` run after the configured ones (a search's pruning, :mod:`.optuna_study`)."""
    started = time.perf_counter()
    check_sections(cfg)
    check_values(cfg)
    check_accelerator(cfg)  # before anything is written: a run that cannot start leaves nothing behind
    run_dir = Path(cfg.paths.output_dir)
    rank_zero = launched_as_rank_zero()
    if rank_zero:
        ckpt_path = prepare_run_dir(run_dir, bool(cfg.resume), bool(cfg.overwrite))
    else:  # rank 0 decided about the directory already; follow it
        last = run_dir / LAST_CHECKPOINT
        ckpt_path = last if cfg.resume and last.is_file() else None
    pl.seed_everything(cfg.seed, workers=True)

    owndata.resolve_data_graphs(cfg)
    loss, skip = loss_or_skip_reason(cfg)
    if skip:
        log.warning("skipping this run: %s", skip)
        if not rank_zero:
            return {"skipped": skip}
        accept_run(cfg)
        record_start(run_dir, cfg, None, 0)
        return add_summary(run_dir, {"skipped": skip})
    module = build_module(cfg, loss)
    datamodule = build_datamodule(cfg)
    datamodule.set_tokenizer(module.encoder.tokenizer)
    datamodule.setup("fit")  # graphs load here, so bad data fails before anything is written
    graph_report = datamodule.graph_report()
    for name, counts in graph_report.items():
        log.info("graph %s: %s", name, counts)
    task_options = owndata.resolve_evaluation_tasks(cfg, datamodule.source)  # and the options of those tasks
    start_step = checkpoint_step(ckpt_path) if ckpt_path else 0
    if ckpt_path is not None:
        datamodule.set_start_step(start_step)
        log.info("resuming from %s at step %d", ckpt_path, start_step)
    if rank_zero:  # the run is accepted and its data loaded: the first byte written into the run directory
        accept_run(cfg)
        record_start(run_dir, cfg, ckpt_path, start_step, data={**datamodule.source.describe(), "graphs": graph_report,
                                                                **({"controls": datamodule.controls} if datamodule.controls else {})})
        owndata.write_heldout(datamodule.source, run_dir)

    loggers, wandb_run = build_loggers(cfg, run_dir) if rank_zero else ([], None)
    stop = StopOnInterrupt()
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer,
        callbacks=[*build_callbacks(cfg, run_dir, task_options), stop, *extra_callbacks],
        logger=loggers or False,
        plugins=[AtomicCheckpointIO()],
    )
    check_launch(trainer)
    # Only now does W&B start its run (log_hyperparams opens it): a Trainer that cannot be built leaves none.
    if wandb_run is not None:
        add_info(run_dir, wandb={"id": wandb_run["id"], "name": wandb_run["name"], "group": wandb_run["group"]})
    for lg in loggers:
        lg.log_hyperparams(logged_config(cfg, run_dir))
    define_wandb_metrics(loggers)
    try:  # W&B stays open until the test table and the summary are logged; closed whatever happens
        summary = _fit_export_test(cfg, trainer, module, datamodule, run_dir, ckpt_path, task_options, stop, loggers)
        if trainer.is_global_zero:
            summary["wall_s"] = round(time.perf_counter() - started, 1)  # this start's, from config to test
            summary["outputs"] = run_outputs(run_dir)
            update_wandb_summary(loggers, headline(summary))
    finally:
        finish_wandb(loggers)
    if not trainer.is_global_zero:
        return summary
    summary = add_summary(run_dir, summary)
    log.info("%s", console_summary(summary, run_dir))
    return summary


def _fit_export_test(cfg: DictConfig, trainer: pl.Trainer, module: UWEModule, datamodule: UWEDataModule,
                     run_dir: Path, ckpt_path: Path | None, task_options: dict, stop: StopOnInterrupt,
                     loggers: list) -> dict[str, Any]:
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
    except NonFiniteError as err:
        raise NonFiniteError(f"{err}. Training stopped; {last_checkpoint_note(run_dir)}") from err
    except SIGTERMException as err:  # Lightning exits with status 0 here; a stopped run is not a success
        if not trainer.is_global_zero:  # rank 0 reports it; a non-zero exit here would make Lightning's launcher
            return {"final_step": trainer.global_step, "stopped": True}  # kill rank 0 mid-report
        signal_name, command = stop.received or "SIGTERM", resume_command(run_dir)
        log.error("stopped by %s at step %d (last.ckpt saved); continue with:\n  %s", signal_name,
                  trainer.global_step, command)
        print(f"[train] stopped by {signal_name} at step {trainer.global_step}; continue with:\n  {command}",
              file=sys.stderr, flush=True)
        raise SystemExit(EXIT_STATUS[signal_name]) from err

    if not trainer.is_global_zero:  # export, test and the run summary are rank 0's
        return {"final_step": trainer.global_step, "rank": trainer.global_rank}
    summary: dict[str, Any] = {"final_step": trainer.global_step, "data": datamodule.source.describe(),
                               UNIT_KEY: UNIT}  # every score in it in percent (metric_names)
    throughput = next((cb for cb in trainer.callbacks if isinstance(cb, TrainThroughput)), None)
    if throughput is not None:
        summary["throughput"] = throughput.summary()
    validation = next((cb for cb in trainer.callbacks if isinstance(cb, WorkBenchValidation)), None)
    if validation is not None:
        summary["best_val"] = validation.best()
        summary["val_step0"] = next((h for h in validation.history if h["step"] == 0), None)
    summary["export"] = select_and_export(cfg, trainer, module, run_dir)
    if validation is not None:
        summary["selection"] = selection_summary(validation.history, summary["export"]["provenance"]["step"])
    module.cpu()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    results = run_test(cfg, Path(summary["export"]["dir"]), run_dir, task_options, skill_views(cfg, datamodule))
    if results is not None:
        summary["test_macro"] = headline_average(results)  # a data=edges run: its held-out edges' average
        summary["test_tasks"] = {task: {k: row.get(k) for k in METRICS}
                                 for task, row in results["tasks"].items()}
        if "knowledge_gain" in results:
            summary["knowledge_gain"] = results["knowledge_gain"]["macro"]
        log_test_table(loggers, results)
    artifact = (log_model_artifact(loggers, Path(summary["export"]["dir"]), summary)
                if cfg.export.wandb_artifact else None)
    if artifact:
        summary["wandb_artifact"] = artifact
    return summary
