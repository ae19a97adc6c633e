"""Runs on your own graph (``data=edges``): the choices the data source makes for a run, applied to its config.

The graphs trained follow the edge files given (``data.graphs: null``); validation and test follow the source's
held-out edges unless ``data.source.evaluate_on=workbench``; the exported model records the vocabulary and edge
counts it was trained on, so its card makes no ESCO claim for a custom vocabulary.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from uwe_lightning.data.datamodule import UWEDataModule
from uwe_lightning.workbench.popularity import PopularityRankingModel
from uwe_lightning.workbench.runner import evaluate

log = logging.getLogger("uwe_lightning.train")


def training_data(datamodule: UWEDataModule | None) -> dict[str, Any] | None:
    """The vocabulary and edge counts the model was trained on (and held out), for a model card that tells the
    truth about a custom graph (no ESCO claim unless the vocabulary is ESCO's)."""
    if datamodule is None or datamodule.vocab is None:
        return None
    vocab = datamodule.vocab
    heldout = getattr(datamodule.source, "heldout", {}) or {}
    return {"vocabulary": {"name": vocab.name, "skills": len(vocab)},
            "esco": vocab.name.startswith("esco") or type(datamodule.source).__name__ != "EdgeFileSource",
            "graphs": datamodule.graph_summary(), "heldout": {s: g.summary() for s, g in heldout.items()}}


def resolve_data_graphs(cfg: DictConfig) -> None:
    """``data.graphs: null`` (``data=edges``): train the graphs that have an edge file, and say which."""
    if cfg.data.get("graphs") is not None:
        return
    source = hydra.utils.instantiate(cfg.data.source)
    graphs = source.available_graphs() if hasattr(source, "available_graphs") else ["J", "V", "A"]
    with open_dict(cfg):
        cfg.data.graphs = graphs
    log.info("data.graphs=%s (the graphs with an edge file)", graphs)


def resolve_evaluation_tasks(cfg: DictConfig, source: Any) -> dict[str, dict[str, Any]]:
    """Let the data source pick validation / test tasks (``data=edges``: its held-out edges unless
    ``data.source.evaluate_on=workbench``; logged, as it decides which checkpoint is exported); returns the
    options those tasks are built with (``source.task_options()``)."""
    pick = getattr(source, "evaluation_tasks", None)
    if pick is None:
        return source.task_options()
    with open_dict(cfg):
        for section in ("validation", "test"):
            tasks = pick(list(cfg[section].tasks))
            if tasks != list(cfg[section].tasks):
                log.info("%s.tasks=%s (data.source.evaluate_on=%s)", section, tasks, source.evaluate_on)
            cfg[section].tasks = tasks
    if not cfg.validation.tasks:
        log.warning("no held-out edges to validate on (data.source.holdout): the last checkpoint is exported")
    return source.task_options()


def write_heldout(source: Any, run_dir: Path) -> None:
    """Save the source's held-out edges into ``<run dir>/heldout/`` so they can be evaluated later."""
    save = getattr(source, "write_heldout", None)
    written = save(run_dir / "heldout") if save is not None else {}
    if written:
        log.info("held-out edges (evaluate them: evaluate 'tasks=[edges]' edges.file=<file>): %s", written)


def baselines(cfg: DictConfig, run_dir: Path, evaluate_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``{"baselines": {"popularity": results}}`` when the run held out edges: the popularity prior of the
    held-out graph's TRAINING edges (``<run>/heldout/train.csv``) on the same test tasks, so the trained model's
    number is read beside the score of "the same frequent skills for every title"; else ``{}``."""
    train_edges = run_dir / "heldout" / "train.csv"
    if not train_edges.is_file():
        return {}
    vocab = str(OmegaConf.select(cfg, "data.source.skill_vocab", default="esco-v1.2.0"))
    prior = PopularityRankingModel.from_edges([str(train_edges)], vocab, cfg.paths.data_dir)
    return {"baselines": {prior.name: evaluate(prior, **evaluate_kwargs)}}
