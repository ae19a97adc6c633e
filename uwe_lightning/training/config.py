"""The schema of ``conf/train.yaml``: typed sections, so a typo or a wrong type fails when Hydra composes.

``train.yaml`` starts its defaults list with ``train_schema`` (registered here in Hydra's ConfigStore on
import). The sections read key by key (``optim``, ``train``, ``validation``, ``test``, ``export``) are typed
dataclasses; the config groups (``model``, ``scorer``, ``loss``, ``data``, ``trainer``, ``logger``,
``callbacks``) are instantiated through their ``_target_`` and checked by their targets' signatures.
An unknown key (``validation.max_querys=5``) or a wrong type (``optim.lr=abc``) is a Hydra error naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from uwe_lightning.io import ConfigError, check_whole_number
from uwe_lightning.workbench.metric_names import LEGACY_NAMES
from uwe_lightning.workbench.registry import is_zero_shot_only, task_suite


@dataclass
class OptimConfig:
    """AdamW + linear warm-up / linear decay (Appendix A)."""

    lr: float = 8.0e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1.0e-8


@dataclass
class TrainSection:
    """Token budget and memory controls of the in-batch scoring and of the encoder."""

    max_length: int = 64
    score_chunk_size: int | None = 64
    score_checkpoint: bool = True
    grad_cache: bool = False
    grad_cache_size: int = 64
    grad_cache_unit: str = "texts"
    backbone_checkpointing: bool = False


@dataclass
class ValidationConfig:
    """WorkBench validation of the live model (callback), also at step 0."""

    tasks: list[str] = field(default_factory=list)
    every_n_steps: int | None = 50
    max_queries: int | None = 1000
    at_start: bool = True
    batch_size: int = 128
    seed: int = 0


@dataclass
class TestConfig:
    """Final evaluation of the exported model on the test splits."""

    __test__ = False  # not a pytest test class

    tasks: list[str] = field(default_factory=list)
    max_queries: int | None = None
    batch_size: int = 128
    seed: int = 0
    knowledge_gain: bool = False
    skill_views: float | None = None
    device: str = "auto"


@dataclass
class ExportConfig:
    """Which weights become ``best_model/``: ``best`` (validation) or ``last``; ``wandb_artifact``: also log
    them as a W&B model Artifact when W&B logs the run (a staged copy of the model's files per run)."""

    select: str = "best"
    wandb_artifact: bool = True


@dataclass
class TrainAppConfig:
    """The whole ``train`` config; groups stay free-form (their ``_target_`` checks them)."""

    paths: Any = MISSING
    model: Any = MISSING
    scorer: Any = MISSING
    loss: Any = MISSING
    data: Any = MISSING
    trainer: Any = MISSING
    logger: Any = None
    callbacks: Any = None
    debug: Any = None
    hparams_search: Any = None
    search: Any = None  # hparams_search=optuna: the Optuna study (uwe_lightning/training/optuna_study.py)
    experiment: Any = None
    scale: Any = None
    task_name: str = "train"
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainSection = field(default_factory=TrainSection)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    test: TestConfig = field(default_factory=TestConfig)
    export: ExportConfig = field(default_factory=ExportConfig)


#: The sections checked against their schema again at run time (``+section.key=...`` appends bypass struct mode).
SECTIONS = {"optim": OptimConfig, "train": TrainSection, "validation": ValidationConfig, "test": TestConfig,
            "export": ExportConfig}


def check_sections(cfg: DictConfig) -> None:
    """Validate the typed sections of a composed config; an unknown key or a wrong type names the key.

    Hydra already enforces the schema for plain overrides; a ``+validation.every_n_step=10`` append (or a config
    built by hand) is caught here, before anything is built.
    """
    for name, schema in SECTIONS.items():
        if name not in cfg:
            raise ConfigError(f"config section {name!r} is missing")
        base = OmegaConf.structured(schema)
        unknown = sorted(set(cfg[name].keys()) - set(base.keys()))
        if unknown:
            keys = ", ".join(f"{name}.{key}" for key in unknown)
            raise ConfigError(f"unknown config key {keys}: section {name!r} knows {sorted(base.keys())}; fix the "
                              "spelling (a `+` override adds a key the schema does not have)")
        OmegaConf.merge(base, cfg[name])  # type errors name the key


def check_values(cfg: DictConfig) -> None:
    """Values the schema cannot type (the ``trainer`` / ``data`` groups) or bound: one line naming the key."""
    for key in ("trainer.max_steps", "data.skills_per_step"):
        check_whole_number(OmegaConf.select(cfg, key), key)
    for key in ("validation.every_n_steps", "validation.max_queries", "test.max_queries"):
        check_whole_number(OmegaConf.select(cfg, key), key, optional=True)
    if cfg.export.select not in ("best", "last"):
        raise ConfigError(f"export.select={cfg.export.select!r}: must be 'best' or 'last'")
    check_whole_number(cfg.train.grad_cache_size, "train.grad_cache_size")
    if cfg.train.grad_cache_unit not in ("texts", "tokens"):
        raise ConfigError(f"train.grad_cache_unit={cfg.train.grad_cache_unit!r}: must be 'texts' or 'tokens'")
    check_validation_tasks(list(cfg.validation.tasks or []))
    for name, node in (cfg.get("callbacks") or {}).items():
        monitor = node.get("monitor") if isinstance(node, DictConfig) else None
        if monitor in LEGACY_NAMES:  # an older config's name: it would monitor nothing
            raise ConfigError(f"callbacks.{name}.monitor={monitor} is the old name (fractions); use "
                              f"callbacks.{name}.monitor={LEGACY_NAMES[monitor]} (percent)")


def check_validation_tasks(tasks: list[str]) -> None:
    """No training protocol validates (or selects a checkpoint) on a zero-shot task (O*NET): its target space
    must stay unseen. A ConfigError names the key and the task."""
    zero_shot = [name for name in tasks if is_zero_shot_only(name)]
    if zero_shot:
        raise ConfigError(
            f"validation.tasks: {zero_shot} are zero-shot tasks (suite {task_suite(zero_shot[0])!r}); no training "
            "run may validate or select checkpoints on them. Drop them from validation.tasks and evaluate the "
            "trained model afterwards: python -m uwe_lightning.evaluate model=trained model.backbone=<run>/"
            f"best_model tasks=[{','.join(zero_shot)}]"
        )


def register_schemas() -> None:
    """Register the schema under the name ``train.yaml``'s defaults list uses (idempotent)."""
    ConfigStore.instance().store(name="train_schema", node=TrainAppConfig)


register_schemas()
