"""What a Hydra multirun becomes on a launcher, without a cluster: the sweep's jobs and submitit's sbatch script."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from uwe_lightning.paths import CONF_DIR


def compose_with_hydra(*overrides: str):
    import uwe_lightning.training.config  # noqa: F401  (the train schema)

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def sweep_jobs(cfg, cli_sweeps: tuple[str, ...] = ()) -> list[list[str]]:
    """The job overrides Hydra's basic sweeper makes of ``hydra.sweeper.params`` (+ command-line sweeps)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    node = cfg.hydra.sweeper.get("params")
    params = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()] + list(cli_sweeps))
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def sbatch_script(cfg, folder: Path) -> str:
    """The sbatch script submitit writes for one job of ``cfg``'s submitit_slurm launcher, parameters mapped as
    hydra-submitit-launcher maps them. A stand-in ``srun`` on PATH lets submitit build it without a cluster."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    fake = bin_dir / "srun"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    params.pop("_target_")
    old_path = os.environ["PATH"]
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{old_path}"
    try:
        executor = submitit.AutoExecutor(cluster="slurm", folder=str(folder / "%j"),
                                         slurm_max_num_timeout=params.pop("max_num_timeout"))
    finally:
        os.environ["PATH"] = old_path
    params.pop("submitit_folder")
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    return executor._executor._make_submission_file_text("python -u -m submitit.core._submit <folder>", "<uid>")
