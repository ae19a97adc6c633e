"""Train UWE: ``python -m uwe_lightning.train [+experiment=uwe] [key=value ...]``.

One run = one Hydra run directory (``outputs/<task_name>/runs/<time>/``, or ``hydra.run.dir=...``) holding:

- ``run_info.json``: the resolved config, git commit ("unknown" outside a git checkout), package versions,
  and one entry per (re)start;
- ``checkpoints/``: the best checkpoint on ``val/macro_map`` and ``last.ckpt`` (atomic writes);
- ``val_history.jsonl``: every WorkBench validation (step 0 = the zero-shot model);
- ``csv/`` (and ``wandb/`` with ``logger=wandb``): training curves;
- ``best_model/``: the selected checkpoint exported as a HF model dir with ``uwe.json``
  (``Ranker.from_pretrained`` / ``model=trained model.backbone=<dir>`` load it);
- ``results.json`` + ``results.md``: the final test evaluation of ``best_model/`` (plus the knowledge gain
  over the step-0 model when ``test.knowledge_gain=true``).

Resume an interrupted run in its own directory::

    python -m uwe_lightning.train +experiment=uwe hydra.run.dir=outputs/train/runs/<that run> resume=true

(pass the same overrides as the original run). Training continues from ``<run dir>/checkpoints/last.ckpt``
and the data stream continues at the checkpoint's step (``UWEDataModule.set_start_step``).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import math
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from uwe_lightning.io import atomic_write_text
from uwe_lightning.paths import REPO_DIR
from uwe_lightning.training.callbacks import (
    VAL_MONITOR,
    AtomicCheckpointIO,
    TrainThroughput,
    WorkBenchValidation,
    find_checkpoint_callback,
)
from uwe_lightning.training.export import export_hf_model, load_module_weights, uwe_config
from uwe_lightning.training.module import NonFiniteError, UWEModule, active_graphs

log = logging.getLogger("uwe_lightning.train")

SIGTERM_EXIT_STATUS = 128 + 15  # the shell convention for "terminated by SIGTERM"

VERSIONED_PACKAGES = (
    "uwe_lightning",
    "torch",
    "lightning",
    "transformers",
    "tokenizers",
    "hydra-core",
    "omegaconf",
    "numpy",
    "pandas",
    "wandb",
)
#: Config sections read key by key here (not through ``_target_``): any other key in them is a typo.
SECTION_KEYS = {
    "optim": {"lr", "weight_decay", "warmup_ratio", "betas", "eps"},
    "train": {"max_length", "score_chunk_size", "score_checkpoint"},
    "validation": {"tasks", "every_n_steps", "max_queries", "at_start", "batch_size", "seed"},
    "test": {"tasks", "max_queries", "batch_size", "seed", "knowledge_gain", "device"},
    "export": {"select"},
}


# ----------------------------------------------------------------------------------------------------------
# Provenance
# ----------------------------------------------------------------------------------------------------------


def git_commit(repo: Path = REPO_DIR) -> dict[str, Any]:
    """HEAD commit and whether the tree has uncommitted changes; "unknown" outside a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain"], capture_output=True, text=True, timeout=30
        ).stdout
        return {"commit": commit or "unknown", "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


def package_versions(names: tuple[str, ...] = VERSIONED_PACKAGES) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain data, without Hydra's own node."""
    data = OmegaConf.to_container(cfg, resolve=True)
    data.pop("hydra", None)
    return data


def write_json_atomic(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def add_summary(run_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """Merge the run's summary into ``run_info.json``; returns the summary."""
    path = run_dir / "run_info.json"
    write_json_atomic(path, {**json.loads(path.read_text()), "summary": summary})
    return summary


def record_start(
    run_dir: Path, cfg: DictConfig, resumed_from: Path | None, start_step: int
) -> dict[str, Any]:
    """Write ``run_info.json`` for this (re)start, keeping the earlier starts of the same run dir."""
    path = run_dir / "run_info.json"
    previous = json.loads(path.read_text()).get("starts", []) if path.is_file() else []
    info = {
        "config": plain_config(cfg),
        "git": git_commit(),
        "versions": package_versions(),
        "device": torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else platform.processor() or "cpu",
        "command": sys.argv,
        "starts": [
            *previous,
            {
                "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "resumed_from": str(resumed_from) if resumed_from else None,
                "start_step": start_step,
            },
        ],
    }
    write_json_atomic(path, info)
    return info


# ----------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------


def check_sections(cfg: DictConfig) -> None:
    """Fail on typos in the sections read key by key (Hydra's struct mode covers command-line overrides)."""
    for section, allowed in SECTION_KEYS.items():
        node = cfg.get(section)
        if node is None:
            raise KeyError(f"config section {section!r} is missing")
        unknown = sorted(set(node.keys()) - allowed)
        if unknown:
            raise KeyError(
                f"unknown key(s) {unknown} in config section {section!r}; known: {sorted(allowed)}"
            )


def build_module(cfg: DictConfig) -> UWEModule:
    if cfg.model.get("kind", "encoder") != "encoder":
        raise ValueError(
            f"model={cfg.model.name} (kind {cfg.model.kind}) cannot be trained; use an encoder model"
        )
    return UWEModule(
        backbone=str(cfg.model.backbone),
        scorer=cfg.scorer.name,
        scorer_tau=cfg.scorer.tau,
        loss=OmegaConf.to_container(cfg.loss, resolve=True),
        graphs=list(cfg.data.graphs),
        lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay,
        warmup_ratio=cfg.optim.warmup_ratio,
        betas=list(cfg.optim.betas),
        eps=cfg.optim.eps,
        max_steps=cfg.trainer.max_steps,
        train_max_length=cfg.train.max_length,
        score_chunk_size=cfg.train.score_chunk_size,
        score_checkpoint=cfg.train.score_checkpoint,
        model_dir=cfg.paths.model_dir,
    )


def build_datamodule(cfg: DictConfig):
    """The ``data`` group's datamodule; ``edge_files`` entries left null (graphs not trained) are dropped."""
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    if data_cfg.get("edge_files"):
        data_cfg["edge_files"] = {g: p for g, p in data_cfg["edge_files"].items() if p is not None}
    return hydra.utils.instantiate(data_cfg)


def skip_reason(cfg: DictConfig) -> str | None:
    """Why a configured run has nothing to train (a grid point with every loss weight 0), else None."""
    try:
        active_graphs(OmegaConf.to_container(cfg.loss, resolve=True), tuple(cfg.data.graphs))
    except ValueError as err:
        return str(err)
    return None


def validation_enabled(cfg: DictConfig) -> bool:
    return bool(cfg.validation.tasks)


def build_callbacks(cfg: DictConfig, run_dir: Path) -> list[pl.Callback]:
    """Callbacks of the ``callbacks`` group, plus WorkBench validation when ``validation.tasks`` is non-empty.

    Without validation the checkpoint callback monitors nothing (``best`` = the latest checkpoint).
    """
    callbacks_cfg = OmegaConf.create(OmegaConf.to_container(cfg.callbacks, resolve=True))
    callbacks: list[pl.Callback] = [TrainThroughput()]
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
    return callbacks


def build_loggers(cfg: DictConfig) -> list[pl.loggers.Logger]:
    loggers = []
    for node in (cfg.get("logger") or {}).values():
        if node is not None and "_target_" in node:
            loggers.append(hydra.utils.instantiate(node))
    return loggers


def resume_checkpoint(cfg: DictConfig, run_dir: Path) -> Path | None:
    """``<run_dir>/checkpoints/last.ckpt`` when ``resume=true`` (it must exist), else None."""
    if not cfg.resume:
        return None
    path = run_dir / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise FileNotFoundError(
            f"resume=true but {path} does not exist; point at the earlier run with hydra.run.dir=<its dir>"
        )
    return path


def last_checkpoint_note(run_dir: Path) -> str:
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return "no checkpoint was written before this step"
    return f"the last good checkpoint {last} (step {checkpoint_step(last)}) was not overwritten"


def checkpoint_step(path: Path) -> int:
    """The ``global_step`` stored in a Lightning checkpoint (read lazily: weights are memory-mapped)."""
    ckpt = torch.load(str(path), map_location="cpu", weights_only=False, mmap=True)
    return int(ckpt["global_step"])


# ----------------------------------------------------------------------------------------------------------
# After training: select, export, test
# ----------------------------------------------------------------------------------------------------------


def select_and_export(
    cfg: DictConfig, trainer: pl.Trainer, module: UWEModule, run_dir: Path
) -> dict[str, Any]:
    """Load the selected weights (best checkpoint, or the final model) and export them to ``best_model/``."""
    select = cfg.export.select
    if select not in ("best", "last"):
        raise ValueError(f"export.select must be 'best' or 'last', got {select!r}")
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
    meta = uwe_config(
        scorer=module.scorer.name,
        tau=module.scorer.tau,
        backbone=str(cfg.model.backbone),
        step=step,
        val_metric=val_metric,
        train_max_length=cfg.train.max_length,
        source=source,
    )
    out = export_hf_model(module.encoder.cpu(), run_dir / "best_model", meta)
    log.info("exported %s (step %d) to %s", source, step, out)
    return {"dir": str(out), **meta}


def knowledge_gain(final: dict, base: dict) -> dict[str, Any]:
    """MAP(final) - MAP(step 0) per task and for the macro average (paper section 7).

    >>> gain = knowledge_gain({"tasks": {"A": {"map": 0.5}}, "macro": {"map": 0.5}},
    ...                       {"tasks": {"A": {"map": 0.25}}, "macro": {"map": 0.25}})
    >>> gain["tasks"]["A"]
    {'map_final': 0.5, 'map_step0': 0.25, 'gain': 0.25}
    >>> gain["macro"]["gain"]
    0.25
    """
    rows = {}
    for task, row in final["tasks"].items():
        if task in base["tasks"]:
            before = float(base["tasks"][task]["map"])
            rows[task] = {
                "map_final": float(row["map"]),
                "map_step0": before,
                "gain": float(row["map"]) - before,
            }
    f, b = float(final["macro"]["map"]), float(base["macro"]["map"])
    return {"tasks": rows, "macro": {"map_final": f, "map_step0": b, "gain": f - b}}


def knowledge_gain_markdown(gain: dict) -> str:
    lines = [
        "### Knowledge gain: MAP(final) - MAP(step 0)",
        "",
        "| task | step 0 | final | gain |",
        "|---|---:|---:|---:|",
    ]
    for task, r in {**gain["tasks"], "macro average": gain["macro"]}.items():
        lines.append(
            f"| {task} | {100 * r['map_step0']:.2f} | {100 * r['map_final']:.2f} | {100 * r['gain']:+.2f} |"
        )
    return "\n".join(lines) + "\n"


def run_test(cfg: DictConfig, model_dir: Path, run_dir: Path) -> dict[str, Any] | None:
    """Evaluate the exported model on the test splits; write results.json/.md into the run dir."""
    from uwe_lightning.ranking.ranker import Ranker
    from uwe_lightning.training.callbacks import register_protocol_tasks
    from uwe_lightning.workbench.runner import evaluate_ranker, write_results

    t = cfg.test
    if not t.tasks:
        log.info("test.tasks is empty: no final test evaluation")
        return None
    register_protocol_tasks()
    kwargs = {"batch_size": t.batch_size, "device": t.device}
    ranker = Ranker.from_pretrained(str(model_dir), model_id=f"{cfg.task_name}/best_model", **kwargs)
    results = evaluate_ranker(ranker, list(t.tasks), "test", cfg.paths.data_dir, t.max_queries, t.seed)
    del ranker
    if t.knowledge_gain:
        base = Ranker.from_pretrained(
            str(cfg.model.backbone),
            scorer=cfg.scorer.name,
            tau=cfg.scorer.tau,
            model_dir=cfg.paths.model_dir,
            model_id="step0",
            **kwargs,
        )
        base_results = evaluate_ranker(base, list(t.tasks), "test", cfg.paths.data_dir, t.max_queries, t.seed)
        results["step0"] = {"tasks": base_results["tasks"], "macro": base_results["macro"]}
        results["knowledge_gain"] = knowledge_gain(results, base_results)
    write_results(results, run_dir, title=f"{cfg.task_name}: {model_dir.name} on the test split")
    if t.knowledge_gain:
        (run_dir / "knowledge_gain.md").write_text(knowledge_gain_markdown(results["knowledge_gain"]))
    return results


# ----------------------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------------------


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train, export and test as configured; returns a summary (also merged into ``run_info.json``)."""
    check_sections(cfg)
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, workers=True)

    skip = skip_reason(cfg)
    if skip:
        log.warning("skipping this run: %s", skip)
        record_start(run_dir, cfg, None, 0)
        return add_summary(run_dir, {"skipped": skip})
    module = build_module(cfg)
    datamodule = build_datamodule(cfg)
    datamodule.set_tokenizer(module.encoder.tokenizer)
    ckpt_path = resume_checkpoint(cfg, run_dir)
    start_step = checkpoint_step(ckpt_path) if ckpt_path else 0
    if ckpt_path is not None:
        datamodule.set_start_step(start_step)
        log.info("resuming from %s at step %d", ckpt_path, start_step)
    record_start(run_dir, cfg, ckpt_path, start_step)

    loggers = build_loggers(cfg)
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer,
        callbacks=build_callbacks(cfg, run_dir),
        logger=loggers or False,
        plugins=[AtomicCheckpointIO()],
    )
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
    except NonFiniteError as err:
        raise NonFiniteError(f"{err}. Training stopped; {last_checkpoint_note(run_dir)}") from err
    except SIGTERMException as err:  # Lightning exits with status 0 here; a stopped run is not a success
        log.error("stopped by SIGTERM at step %d; continue with resume=true", trainer.global_step)
        raise SystemExit(SIGTERM_EXIT_STATUS) from err
    finally:
        finish_wandb(loggers)

    summary: dict[str, Any] = {"final_step": trainer.global_step}
    throughput = next((cb for cb in trainer.callbacks if isinstance(cb, TrainThroughput)), None)
    if throughput is not None:
        summary["throughput"] = throughput.summary()
    validation = next((cb for cb in trainer.callbacks if isinstance(cb, WorkBenchValidation)), None)
    if validation is not None:
        summary["best_val"] = validation.best()
        summary["val_step0"] = next((h for h in validation.history if h["step"] == 0), None)
    summary["export"] = select_and_export(cfg, trainer, module, run_dir)
    del trainer, module, datamodule
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    results = run_test(cfg, Path(summary["export"]["dir"]), run_dir)
    if results is not None:
        summary["test_macro"] = results["macro"]
        if "knowledge_gain" in results:
            summary["knowledge_gain"] = results["knowledge_gain"]["macro"]
    return add_summary(run_dir, summary)


def finish_wandb(loggers: list) -> None:
    """Close the W&B run so that the next job of a multirun starts its own."""
    if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
        import wandb

        wandb.finish()


def objective(summary: dict[str, Any]) -> float | None:
    """The value a sweeper optimises: test macro MAP, else the best validation macro MAP."""
    if summary.get("test_macro"):
        return float(summary["test_macro"]["map"])
    best = summary.get("best_val")
    value = best.get(VAL_MONITOR) if best else None
    return float(value) if value is not None and math.isfinite(value) else None


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return objective(train(cfg))


if __name__ == "__main__":
    main()
