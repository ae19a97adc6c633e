"""The ranker a command's config names: ``model`` (+ ``scorer``, ``max_length``), for evaluate, rank and serve."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from uwe_lightning.io import ConfigError
from uwe_lightning.model.pretrained import ModelSpec, load_model
from uwe_lightning.ranking.ranker import Ranker


def model_spec(cfg: DictConfig) -> ModelSpec:
    return hydra.utils.instantiate(cfg.model)


def ranker_from_config(cfg: DictConfig, tool: str, spec: ModelSpec | None = None) -> Ranker:
    """A :class:`Ranker` on the configured model; no ``scorer`` given = a saved model's own, else ``mean``.

    The lexical model has no encoder: ``tool`` (the command) names who refused it.
    """
    spec = spec or model_spec(cfg)
    if spec.kind == "lexical":
        raise ConfigError(f"{tool} needs an encoder model, got model={spec.name} (lexical TF-IDF)")
    scorer = cfg.get("scorer")
    model = load_model(spec, scorer=scorer.name if scorer else None, tau=scorer.tau if scorer else None,
                       max_length=cfg.get("max_length") or None, model_dir=cfg.paths.model_dir)
    return Ranker.from_model(model, batch_size=cfg.batch_size, device=cfg.device, model_id=spec.name,
                             query_backend=cfg.get("query_backend") or "torch")
