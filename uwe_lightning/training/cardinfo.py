"""What a trained model's card says about its training, in words, from the run's config (the numbers it
measured come from results.json; see :mod:`uwe_lightning.model.card`)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf


def data_description(cfg: DictConfig) -> str:
    """The training data in a few words, for the model card: the source class and the graphs."""
    source = str(OmegaConf.select(cfg, "data.source._target_", default="") or "unknown source").rsplit(".", 1)[-1]
    return f"{source}, graphs {'/'.join(cfg.data.graphs)}, {cfg.data.skills_per_step} skills per step"


def training_summary(cfg: DictConfig) -> dict[str, Any]:
    """The training settings a model card states in words (loss, steps, skills per step, optimiser, seed)."""
    return {"loss": str(OmegaConf.select(cfg, "loss.name", default="") or "") or None,
            "steps": OmegaConf.select(cfg, "trainer.max_steps", default=None),
            "skills_per_step": OmegaConf.select(cfg, "data.skills_per_step", default=None),
            "sampling": OmegaConf.select(cfg, "data.sampling", default=None),
            "lr": OmegaConf.select(cfg, "optim.lr", default=None),
            "warmup_ratio": OmegaConf.select(cfg, "optim.warmup_ratio", default=None),
            "max_length": OmegaConf.select(cfg, "train.max_length", default=None),
            "seed": OmegaConf.select(cfg, "seed", default=None)}
