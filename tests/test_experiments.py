"""The experiment and hparams_search configs: what each one sets and sweeps (fast), and smoke runs (slow).

Slow smoke runs: every experiment file (one job of its sweep, taking each swept key's last value) trains the
tiny model for 2 steps on the fixture edges with validation/test on the miniature data pack; every multirun
experiment also runs once through the real CLI (``python -m uwe_lightning.train ...``) with the sweep pinned
to one job, which checks that ``hydra.mode: MULTIRUN`` and ``hydra.sweeper.params`` of the file work.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf

from tests.helpers.configs import base_overrides
from uwe_lightning.paths import CONF_DIR, REPO_DIR
from uwe_lightning.training.run import train

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
SEARCHES = sorted(p.stem for p in (CONF_DIR / "hparams_search").glob("*.yaml") if not p.stem.startswith("_"))
AXES = [name for name in SEARCHES if name != "optuna"]
SCALES = sorted(p.stem for p in (CONF_DIR / "scale").glob("*.yaml"))
ALL_FILES = [f"+experiment={name}" for name in EXPERIMENTS] + [f"hparams_search={name}" for name in AXES]


def compose_train(*overrides: str) -> DictConfig:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def sweep(cfg: DictConfig) -> dict[str, list[str]]:
    """The values each key of ``hydra.sweeper.params`` takes (Hydra's own override parser)."""
    params = cfg.hydra.sweeper.params or {}
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    return {o.key_or_group: list(o.sweep_string_iterator()) for o in parsed}


def last_job(cfg: DictConfig) -> list[str]:
    """The sweep's last job (for the grid, the first one has every loss weight 0 and is skipped by design)."""
    return [f"{key}={values[-1]}" for key, values in sweep(cfg).items()]


# ----------------------------------------------------------------------------------------------------------
# Fast: what each file sets
# ----------------------------------------------------------------------------------------------------------


def test_every_expected_file_exists():
    assert EXPERIMENTS == ["ablation_late_interaction", "ablation_loss", "batch_size", "cpu_minilm", "cross_task_transfer", "learning_curves",
                           "own_graph", "temperature", "transfer_holdout", "transfer_length", "transfer_shuffled", "uwe"]
    assert SEARCHES == ["alpha_a", "alpha_j", "alpha_v", "loss_tau_a", "loss_tau_j", "loss_tau_v", "lr", "optuna",
                        "scorer_tau"]
    assert SCALES == ["cpu", "paper"]


def test_uwe_is_the_paper_setup():
    cfg = compose_train("+experiment=uwe")
    assert (cfg.model.backbone, cfg.scorer.name, cfg.scorer.tau, cfg.loss.name) == (
        "mpnet",
        "softmax",
        0.1,
        "mtm",
    )
    assert dict(cfg.loss.tau) == {"J": 0.05, "V": 0.02, "A": 0.02}
    assert dict(cfg.loss.alpha) == {"J": 1.0, "V": 0.5, "A": 0.5}
    assert (cfg.data.source._target_, cfg.data.skills_per_step, cfg.data.max_length, cfg.data.augment_p) == (
        "uwe_lightning.protocol.OpenProtocolSource",
        512,
        64,
        0.8,
    )
    assert cfg.optim.lr == 8e-5 and cfg.optim.warmup_ratio == 0.1
    assert (cfg.validation.every_n_steps, cfg.export.select) == (50, "best")
    assert cfg.trainer.max_steps == 600  # the paper's ablation length (one pass over open J: 338 steps)
    assert cfg.hydra.mode is None and not sweep(cfg)


@pytest.mark.parametrize(
    ("override", "expected_sweep", "steps", "scorer"),
    [
        ("+experiment=ablation_loss", {"loss": ["infonce", "mtm_pairwise", "mtm"]}, 600, "mean"),
        (
            "+experiment=ablation_late_interaction",
            {"scorer": ["mean", "maxsim", "softmax_ymean", "softmax"]},
            600,
            "softmax",
        ),
        ("+experiment=cross_task_transfer", {"data.graphs": ["[J]", "[V]", "[A]"]}, 300, "mean"),
    ],
)
def test_ablations_sweep_five_seeds_without_early_stopping(override, expected_sweep, steps, scorer):
    cfg = compose_train(override)
    assert sweep(cfg) == {**expected_sweep, "seed": ["0", "1", "2", "3", "4"]}
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert (cfg.trainer.max_steps, cfg.scorer.name, cfg.export.select) == (steps, scorer, "last")
    assert cfg.test.knowledge_gain == (override == "+experiment=cross_task_transfer")


@pytest.mark.parametrize("scale", SCALES)
def test_transfer_controls_are_figure_3_at_length_and_its_two_controls(scale):
    """Issue 29: the same run (all graphs, MTM, mean, 300 steps, 2,000-query test, knowledge gain) aligned, with
    shuffled alignment and with half of the skills held out; Figure 3's single graphs beside it."""
    length, shuffled, holdout = (compose_train(f"+experiment={name}", f"scale={scale}")
                                 for name in ("transfer_length", "transfer_shuffled", "transfer_holdout"))
    assert sweep(length) == {"data.graphs": ["[J]", "[V]", "[A]", "[J,V,A]"], "seed": ["0", "1"]}
    assert sweep(shuffled) == sweep(holdout) == {"seed": ["0", "1", "2"]}
    for cfg in (length, shuffled, holdout):
        assert cfg.trainer.max_steps == 300 and cfg.export.select == "last" and cfg.test.knowledge_gain
        assert (cfg.scorer.name, cfg.loss.name) == ("mean", "mtm")
        assert cfg.test.max_queries == cfg.scale.test_max_queries_ablation
    assert (length.data.alignment, length.data.skill_holdout, length.test.skill_views) == ("aligned", None, None)
    assert list(shuffled.data.graphs) == list(holdout.data.graphs) == ["J", "V", "A"]
    assert (shuffled.data.alignment, shuffled.data.skill_holdout, shuffled.test.skill_views) == ("shuffled", None, None)
    assert (holdout.data.alignment, holdout.data.skill_holdout, holdout.test.skill_views) == ("aligned", 0.5, 0.5)
    assert holdout.data.holdout_seed == 0  # the same half for every training seed


def test_temperature_curve_is_figure_4():
    cfg = compose_train("+experiment=temperature")
    assert sweep(cfg) == {"scorer": ["softmax", "softmax_ymean"], "scorer.tau": ["2.0", "1.0", "0.5", "0.1"],
                          "seed": ["0", "1", "2", "3", "4"]}
    assert (cfg.loss.name, cfg.export.select, cfg.trainer.max_steps) == ("mtm", "last", 600)
    maxsim = compose_train("+experiment=temperature", "scorer=maxsim", "scorer.tau=null")
    assert maxsim.scorer.name == "maxsim" and maxsim.scorer.tau is None
    assert sweep(compose_train("+experiment=temperature", "scale=cpu"))["seed"] == ["0"]


def test_hparams_axes_are_the_appendix_grid_one_axis_at_a_time():
    """The paper's reading of its grid: each axis searched alone, the others at the optimum: 29 runs, not the
    27,648 of the cartesian product."""
    axes = {}
    for name in AXES:
        cfg = compose_train(f"hparams_search={name}")
        ((key, values),) = sweep(cfg).items()
        axes[key] = [float(v) for v in values]
        assert (cfg.scorer.name, cfg.loss.name, list(cfg.test.tasks), cfg.export.select) == ("softmax", "mtm", [], "last")
        assert cfg.validation.every_n_steps is None and cfg.trainer.max_steps == 600
        assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert axes["scorer.tau"] == [2.0, 1.0, 0.5, 0.1]
    assert axes["optim.lr"] == [1e-4, 8e-5, 5e-5, 1e-5]
    for graph in "JVA":
        assert axes[f"loss.alpha.{graph}"] == [0.0, 0.5, 1.0]
        assert axes[f"loss.tau.{graph}"] == [0.01, 0.02, 0.05, 0.1]
    assert sum(len(v) for v in axes.values()) == 29
    assert math.prod(len(v) for v in axes.values()) == 27_648  # what the old cartesian grid would have run


def test_optuna_search_covers_the_same_axes():
    """The Optuna study searches the grid's keys over the grid's values, prunes on intermediate validations, and
    runs as one process (the study drives the trials; no Hydra sweeper)."""
    cfg = compose_train("hparams_search=optuna", "scale=cpu")
    grid = {}
    for name in AXES:
        ((key, values),) = sweep(compose_train(f"hparams_search={name}")).items()
        grid[key] = [float(v) for v in values]
    assert {k: list(v) for k, v in cfg.search.params.items()} == grid
    assert cfg.search.n_trials == 22 and cfg.search.sampler._target_ == "optuna.samplers.TPESampler"
    assert cfg.search.pruner._target_ == "optuna.pruners.MedianPruner"
    assert list(cfg.test.tasks) == [] and cfg.validation.every_n_steps == 25 and cfg.trainer.max_steps == 75
    assert str(cfg.hydra.mode) == "RunMode.RUN" and cfg.hydra.sweeper._target_.endswith("BasicSweeper")


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("override", ALL_FILES)
def test_every_experiment_composes_with_every_scale(override, scale):
    """``scale`` changes sizes only: the method (scorer, loss, its tau / alpha, schedule, augmentation) is the
    experiment's; the sizes are the scale's (an experiment may pin its own, as cpu_minilm does)."""
    paper, scaled = compose_train(override), compose_train(override, f"scale={scale}")
    assert scaled.scale.name == scale
    for key in ("scorer", "loss", "optim", "data.augment_p", "data.graphs", "train", "export", "test.tasks",
                "test.knowledge_gain", "validation.tasks"):
        assert OmegaConf.select(scaled, key) == OmegaConf.select(paper, key), key
    if override not in ("+experiment=cpu_minilm", "+experiment=own_graph"):  # these pin their own length
        assert scaled.data.skills_per_step == scaled.scale.skills_per_step
        assert scaled.trainer.max_steps in scaled.scale.steps.values()
        assert scaled.model.name == ("minilm" if scale == "cpu" else "mpnet")


@pytest.mark.parametrize("override", ALL_FILES)
def test_every_job_of_every_sweep_composes(override):
    """Each sweep value is a valid override of the composed config (for the grid: each axis alone)."""
    cfg = compose_train(override)
    for key, values in sweep(cfg).items():
        for value in values:
            job = compose_train(override, f"{key}={value}")
            applied = job[key].name if key in ("loss", "scorer") else OmegaConf.select(job, key)
            assert same_value(applied, value), (key, value, applied)


def same_value(applied, text: str) -> bool:
    """A composed value against the sweep's string form (numbers by value, lists without quotes)."""
    if isinstance(applied, int | float) and not isinstance(applied, bool):
        return float(applied) == float(text)
    if isinstance(applied, ListConfig):
        return "[" + ",".join(map(str, applied)) + "]" == text
    return str(applied) == text


# ----------------------------------------------------------------------------------------------------------
# Slow: smoke runs
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("override", ALL_FILES)
def test_smoke_one_job_of_each_experiment(override, tmp_path, tiny_model_dir):
    job = last_job(compose_train(override))
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        overrides = [
            override,
            *job,
            *base_overrides(tmp_path, tiny_model_dir, steps=2, every=None, test_tasks=None),
        ]
        cfg = compose("train", overrides=overrides)
        if cfg.data.skill_holdout:  # the fixture's 10 skills, half held out: fewer per step than the 6 above
            cfg = compose("train", overrides=[*overrides, "data.skills_per_step=4"])
    summary = train(cfg)
    assert summary["final_step"] == 2
    assert json.loads((tmp_path / "best_model" / "uwe.json").read_text())["scorer"] == cfg.scorer.name
    if cfg.test.tasks:
        results = json.loads((tmp_path / "results.json").read_text())
        assert set(results["tasks"]) | set(results["unavailable"]) == set(cfg.test.tasks)
        assert ("knowledge_gain" in results) == cfg.test.knowledge_gain
        if cfg.test.skill_views:  # issue 29: the holdout's seen / unseen views, for the step-0 model too
            assert set(results["views"]) == set(results["step0"]["views"]) == {"unseen", "seen"}
            assert results["skill_holdout"]["held_out_skills"] == round(cfg.test.skill_views * 10)  # fixture: 10 skills


def cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"}
    return subprocess.run(
        [sys.executable, "-m", "uwe_lightning.train", *args], cwd=cwd, env=env, capture_output=True, text=True
    )


SINGLE_RUNS = ("+experiment=uwe", "+experiment=cpu_minilm", "+experiment=own_graph")  # the other files are multiruns by themselves


@pytest.mark.slow
@pytest.mark.parametrize("override", [f for f in ALL_FILES if f not in SINGLE_RUNS])
def test_cli_multirun_of_one_pinned_job(override, tmp_path, tiny_model_dir):
    """The experiment file alone makes it a multirun; command-line values pin the sweep to one job."""
    cfg = compose_train(override)
    pinned = last_job(cfg)
    sweep_dir = tmp_path / "sweep"
    small = base_overrides(None, tiny_model_dir, steps=2, every=None, test_tasks=None)
    if cfg.data.skill_holdout:  # the fixture's 10 skills, half held out: fewer per step
        small.append("data.skills_per_step=4")
    result = cli([override, *pinned, *small, f"hydra.sweep.dir='{sweep_dir}'"], REPO_DIR)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["0"], jobs
    info = json.loads((sweep_dir / "0" / "run_info.json").read_text())
    assert info["summary"]["final_step"] == 2
    assert info["config"]["task_name"] == cfg.task_name


@pytest.mark.slow
def test_cli_run_with_offline_wandb(tmp_path, tiny_model_dir):
    """The default logger (CSV + W&B offline) works with no login and writes under the run dir."""
    small = [o for o in base_overrides(None, tiny_model_dir, steps=2, every=1) if not o.startswith("logger=")]
    result = cli(["logger=wandb", *small, f"hydra.run.dir='{tmp_path}'"], REPO_DIR)
    assert result.returncode == 0, result.stderr[-3000:]
    assert list((tmp_path / "wandb").glob("offline-run-*"))
    assert (tmp_path / "csv" / "version_0" / "metrics.csv").is_file()
    assert (tmp_path / ".hydra" / "config.yaml").is_file()


@pytest.mark.slow
@pytest.mark.data
def test_smoke_uwe_on_the_open_protocol(tmp_path, tiny_model_dir, real_data_dir):
    """The paper experiment on the real data pack's open protocol, tiny model, 2 steps, few queries."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "+experiment=uwe",
                f"model.backbone='{tiny_model_dir}'",
                f"paths.data_dir='{real_data_dir}'",
                f"paths.output_dir='{tmp_path}'",
                "data.skills_per_step=32",
                "data.num_workers=0",
                "logger=none",
                "trainer=cpu",
                "trainer.max_steps=2",
                "trainer.enable_progress_bar=false",
                "validation.max_queries=20",
                "test.max_queries=20",
                "test.device=cpu",
                "train.score_chunk_size=8",
            ],
        )
    summary = train(cfg)
    assert summary["final_step"] == 2
    step0 = summary["val_step0"]
    for task in ("Job2Skill@open", "Skill2Job@open", "SkillNorm@heldout", "JobNorm"):
        assert 0.0 <= step0[f"val/{task}/map"] <= 100.0  # percent
    results = json.loads((tmp_path / "results.json").read_text())
    assert "SkillSim" in results["unavailable"] or "SkillSim" in results["tasks"]


def test_compare_sampling_counts_a_resumed_step_once(tmp_path):
    """A run resumed at a validated step writes that step twice in val_history.jsonl: the table shows it once,
    the last record winning (the shared reader of the learning-curve report)."""
    run = tmp_path / "per_graph"
    run.mkdir()
    (run / "run_info.json").write_text(json.dumps({"config": {"data": {"sampling": "per_graph", "skills_per_step": 64}},
                                                   "summary": {"best_val": {"step": 50, "val/macro/map": 31.0}}}))
    records = [{"step": 0, "val/macro/map": 20.0, "val/JobNorm/map": 20.0},
               {"step": 50, "val/macro/map": 30.0, "val/JobNorm/map": 30.0},
               {"step": 50, "val/macro/map": 31.0, "val/JobNorm/map": 31.0}]
    (run / "val_history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    script = REPO_DIR / "experiments/data/compare_sampling.py"
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(script), str(run), "--out", str(out)], cwd=REPO_DIR,
                          env={**os.environ, "PYTHONPATH": str(REPO_DIR)}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    table = (out / "sampling_cmp.md").read_text()
    assert [line for line in table.splitlines() if line.startswith("| per_graph | 64 | 50 |")] == [
        "| per_graph | 64 | 50 | 31.00 | 31.00 |"]
    assert [h["step"] for h in json.loads((out / "sampling_cmp.json").read_text())[0]["history"]] == [0, 50]
