"""Small, local training configs: the tiny model, the fixture edge files and the miniature data pack."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

from tests.helpers.paths import EDGES, MINI_DATA
from uwe_lightning.paths import CONF_DIR

VAL_TASKS = "[JobNorm,SkillNorm,SkillExtr-H]"


def base_overrides(
    out_dir: Path | None,
    model_dir: Path,
    steps: int = 4,
    every: int | None = 2,
    test_tasks: str | None = "[JobNorm,SkillNorm]",
) -> list[str]:
    """Small, local settings for a run; ``None`` leaves that part of the config (or experiment) as it is."""
    overrides = [
        f"model.backbone='{model_dir}'",
        "data=edges",
        f"data.source.edge_files.J='{EDGES / 'J.csv'}'",
        f"data.source.edge_files.V='{EDGES / 'V.jsonl'}'",
        f"data.source.edge_files.A='{EDGES / 'A.tsv'}'",
        f"data.source.skill_vocab='{EDGES / 'vocab.csv'}'",
        "data.source.holdout.val=0",  # these runs validate on the mini pack's WorkBench, not on held-out edges
        "data.source.holdout.test=0",
        "data.source.evaluate_on=workbench",
        "data.skills_per_step=6",
        "data.num_workers=0",
        f"paths.data_dir='{MINI_DATA}'",
        "logger=none",
        "trainer=cpu",
        f"trainer.max_steps={steps}",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "trainer.log_every_n_steps=1",
        f"validation.tasks={VAL_TASKS}",
        "validation.max_queries=10",
        "test.max_queries=10",
        "test.device=cpu",
        "train.score_chunk_size=4",
    ]
    if out_dir is not None:
        overrides.append(f"paths.output_dir='{out_dir}'")
    if every is not None:
        overrides.append(f"validation.every_n_steps={every}")
    if test_tasks is not None:
        overrides.append(f"test.tasks={test_tasks}")
    return overrides


def make_cfg(out_dir: Path, model_dir: Path, *extra: str, steps: int = 4, every: int = 2):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[*base_overrides(out_dir, model_dir, steps, every), *extra])


def tool_cfg(config_name: str, backbone: Path | str, tmp_path: Path, *extra: str):
    """A composed config of a command-line tool (``rank``, ``serve``) on ``backbone``: CPU, no progress bars,
    run directory and caches under ``tmp_path``."""
    overrides = [f"model.backbone={backbone}", f"paths.output_dir={tmp_path / 'run'}",
                 f"paths.cache_dir={tmp_path / 'cache'}", "device=cpu", "show_progress=false", *extra]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def rank_cfg(backbone: Path | str, tmp_path: Path, *extra: str):
    """The ``rank`` config for ``backbone`` (see :func:`tool_cfg`)."""
    return tool_cfg("rank", backbone, tmp_path, *extra)
