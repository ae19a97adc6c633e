"""Launcher configs: they compose, their launchers instantiate, and a sweep becomes the expected cluster jobs."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from tests.helpers.launchers import compose_with_hydra, sbatch_script, sweep_jobs
from uwe_lightning.paths import CONF_DIR

LAUNCHERS = sorted(p.stem for p in (CONF_DIR / "hydra" / "launcher").glob("*.yaml"))


def test_every_launcher_is_here():
    assert LAUNCHERS == ["joblib", "submitit_local", "submitit_slurm"]


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_config_instantiates(name, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher" if name.startswith("submitit") else
                        "hydra_plugins.hydra_joblib_launcher")
    cfg = compose_with_hydra(f"hydra/launcher={name}", f"hydra.sweep.dir={tmp_path}")
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == {"joblib": "JoblibLauncher", "submitit_local": "LocalLauncher",
                                       "submitit_slurm": "SlurmLauncher"}[name]


@pytest.mark.parametrize(("scale", "jobs"), [("paper", 15), ("cpu", 9)])
def test_the_loss_ablation_is_one_job_per_loss_and_seed(scale, jobs):
    cfg = compose_with_hydra("+experiment=ablation_loss", f"scale={scale}", "hydra/launcher=submitit_slurm")
    found = sweep_jobs(cfg)
    assert len(found) == jobs
    assert {tuple(sorted(job)) for job in found} == {
        (f"loss={loss}", f"seed={seed}") for loss in ("infonce", "mtm_pairwise", "mtm") for seed in range(jobs // 3)}


def test_slurm_settings_reach_the_sbatch_script(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = compose_with_hydra(
        "+experiment=ablation_loss", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2",
        "hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu", "hydra.launcher.account=my-project",
        "hydra.launcher.gpus_per_node=4", "hydra.launcher.nodes=2", "hydra.launcher.timeout_min=300",
        f"hydra.sweep.dir={tmp_path}", "hydra.job.name=ablation_loss")
    script = sbatch_script(cfg, tmp_path)
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=my-project", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --time=300",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --job-name=ablation_loss"):
        assert line in script, script


def test_ddp_inside_a_local_multirun_is_refused(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from uwe_lightning.io import ConfigError
    from uwe_lightning.training import distributed

    cfg = compose_with_hydra("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                             f"paths.output_dir={tmp_path}")
    trainer = instantiate(cfg.trainer)
    monkeypatch.setattr(distributed, "current_hydra_config", lambda: SimpleNamespace(mode="RunMode.MULTIRUN"))
    with pytest.raises(ConfigError, match="ddp strategy in a local multirun"):
        distributed.check_launch(trainer)
    monkeypatch.setattr(distributed, "current_hydra_config", lambda: SimpleNamespace(mode="RunMode.RUN"))
    distributed.check_launch(trainer)  # a single run: Lightning starts the ranks
