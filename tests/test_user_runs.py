"""A run as a user sees it (issue 31): refusals in one line before anything is written, a progress bar over
steps with an ETA, a summary at the end, a readable W&B run, quiet library output.

The command-line cases run the real entry points as subprocesses (``slow``: each starts Python, torch and
Hydra); the rest call :func:`uwe_lightning.training.run.train` on the tiny model.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from tests.helpers.configs import base_overrides, make_cfg
from tests.helpers.paths import MINI_DATA
from tests.helpers.wandb_records import records
from uwe_lightning.cli import output_dir, quiet
from uwe_lightning.cli.errors import refuse_added_keys
from uwe_lightning.io import ConfigError, DataError
from uwe_lightning.model.encoder import Encoder
from uwe_lightning.paths import CONF_DIR, REPO_DIR
from uwe_lightning.training import preflight
from uwe_lightning.training.run import train
from uwe_lightning.training.summary import console_summary
from uwe_lightning.training.tracking import logged_config, run_name, wandb_identity

# ----------------------------------------------------------------------------------------------------------
# Refused before anything is written
# ----------------------------------------------------------------------------------------------------------


def no_gpu(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(preflight, "mps_available", lambda: False)


def test_gpu_run_without_a_gpu_is_refused_before_the_run_dir_or_wandb(tmp_path, tiny_model_dir, monkeypatch):
    no_gpu(monkeypatch)
    run_dir = tmp_path / "run"
    cfg = make_cfg(run_dir, tiny_model_dir, "trainer=gpu", "logger=wandb")
    with pytest.raises(ConfigError, match=r"trainer\.accelerator=gpu .*no GPU.*trainer=cpu"):
        train(cfg)
    assert not run_dir.exists()  # no run_info.json, no csv/, no wandb/


def test_more_devices_than_gpus_is_refused_naming_the_key(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    cfg = make_cfg(tmp_path / "run", tiny_model_dir, "trainer.accelerator=cuda", "trainer.devices=4")
    with pytest.raises(ConfigError, match=r"trainer\.devices=4 but this machine has 1 GPU"):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_cpu_and_auto_accelerators_pass_the_check(monkeypatch):
    no_gpu(monkeypatch)
    for accelerator in ("cpu", "auto"):
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=[f"trainer.accelerator={accelerator}"])
        preflight.check_accelerator(cfg)  # no error


def test_unwritable_run_dir_reasons(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert output_dir.unwritable_reason(blocker / "run") == f"{blocker} is not a directory"
    assert output_dir.unwritable_reason(tmp_path / "new" / "run") is None
    monkeypatch.setattr(output_dir.os, "access", lambda *a: False)  # as a non-root user in a read-only dir
    assert output_dir.unwritable_reason(tmp_path / "new" / "run") == f"{tmp_path} is not writable by this user"


def test_damaged_tokenizer_json_is_named(tmp_path, tiny_model_dir):
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    (model / "tokenizer.json").write_text("{not json")
    with pytest.raises(DataError, match=r"tokenizer\.json is not valid JSON.*copy or export the model again"):
        Encoder.from_pretrained(str(model))


@pytest.mark.parametrize("tool", ["evaluate", "rank"])
def test_an_added_key_a_command_does_not_have_is_refused(tool):
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        typo = compose(tool, overrides=["+max_querys=5"], return_hydra_config=True)
        fine = compose(tool, overrides=["++max_queries=5", "device=cpu"], return_hydra_config=True)
    try:
        HydraConfig.instance().set_config(typo)
        with pytest.raises(ConfigError, match=rf"unknown key max_querys \(\+max_querys=5\): {tool} has no such"):
            refuse_added_keys(tool)
        HydraConfig.instance().set_config(fine)
        refuse_added_keys(tool)  # ++ (add or replace) and plain overrides pass
    finally:
        HydraConfig.instance().cfg = None


def run_cli(module: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "UWE_DEBUG": "", "HYDRA_FULL_ERROR": "", **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_DIR, capture_output=True, text=True,
                          timeout=600, env=environment)


def assert_one_line_exit_2(done: subprocess.CompletedProcess, tool: str, *needles: str) -> None:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout, done.stderr[-2000:]
    errors = [line for line in lines if line.startswith(f"[{tool}] error: ")]
    assert len(errors) == 1, lines
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.mark.slow
def test_cli_refusals_are_one_line_exit_2_and_leave_nothing(tmp_path, tiny_model_dir):
    """Through the real entry points: a typo in a typed section, a GPU run without a GPU, an unwritable run dir,
    a damaged tokenizer.json in train / evaluate / export."""
    run_dir = tmp_path / "run"
    train_args = [*base_overrides(None, tiny_model_dir), f"hydra.run.dir={run_dir}"]

    typo = run_cli("uwe_lightning.train", *train_args, "+optim.lrr=1")
    assert_one_line_exit_2(typo, "train", "optim.lrr")
    assert not run_dir.exists()  # Hydra created it; the refusal removed it again (it was empty)
    old_monitor = run_cli("uwe_lightning.train", *train_args, "callbacks.model_checkpoint.monitor=val/macro_map")
    assert_one_line_exit_2(old_monitor, "train", "val/macro_map is the old name", "monitor=val/macro/map")
    assert not run_dir.exists()

    if not torch.cuda.is_available():
        gpu = run_cli("uwe_lightning.train", *train_args, "trainer=gpu", "logger=wandb")
        assert_one_line_exit_2(gpu, "train", "trainer.accelerator=gpu", "trainer=cpu")
        assert not run_dir.exists()  # no empty W&B run, no run_info.json

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    unwritable = run_cli("uwe_lightning.train", *base_overrides(None, tiny_model_dir),
                         f"hydra.run.dir={blocker / 'run'}")
    assert_one_line_exit_2(unwritable, "train", "hydra.run.dir=", "is not a directory")

    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    (model / "tokenizer.json").write_text("{not json")
    damaged = str(model / "tokenizer.json")
    broken_train = run_cli("uwe_lightning.train", *train_args, f"model.backbone='{model}'")
    assert_one_line_exit_2(broken_train, "train", damaged)
    broken_eval = run_cli("uwe_lightning.evaluate", "model=trained", f"model.backbone={model}",
                          "tasks=[JobNorm]", f"paths.data_dir={MINI_DATA}", f"hydra.run.dir={tmp_path / 'eval'}",
                          "device=cpu")
    assert_one_line_exit_2(broken_eval, "evaluate", damaged)
    typo_eval = run_cli("uwe_lightning.evaluate", "model=trained", f"model.backbone={tiny_model_dir}",
                        "+max_querys=5", f"hydra.run.dir={tmp_path / 'eval2'}")
    assert_one_line_exit_2(typo_eval, "evaluate", "max_querys")
    assert not (tmp_path / "eval2").exists()
    broken_export = run_cli("uwe_lightning.export", "onnx", str(model), "--out", str(tmp_path / "exported"))
    assert broken_export.returncode == 2 and damaged in broken_export.stderr, broken_export.stderr[-2000:]
    assert "Traceback" not in broken_export.stderr


# ----------------------------------------------------------------------------------------------------------
# Progress, summary and W&B of a real (tiny) run
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory, tiny_model_dir):
    """One tiny run with the progress bar on and W&B offline; its stdout, log records and run dir."""
    run_dir = tmp_path_factory.mktemp("wandb-run")
    cfg = make_cfg(run_dir, tiny_model_dir, "logger=wandb", "trainer.enable_progress_bar=true", steps=4, every=2)
    logged: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = logged.append  # type: ignore[method-assign]
    train_log = logging.getLogger("uwe_lightning.train")
    level = train_log.level
    train_log.addHandler(handler)
    train_log.setLevel(logging.INFO)
    stdout, real = Path(run_dir.parent / "stdout.txt"), sys.stdout
    try:
        with open(stdout, "w") as fh:
            sys.stdout = fh
            summary = train(cfg)
    finally:
        sys.stdout = real
        train_log.removeHandler(handler)
        train_log.setLevel(level)
    return {"dir": run_dir, "summary": summary, "stdout": stdout.read_text(),
            "log": [r.getMessage() for r in logged]}


def test_progress_bar_counts_steps_to_max_steps_with_loss_and_validation_percent(wandb_run):
    out = wandb_run["stdout"]
    assert "train" in out and "4/4" in out and "Epoch 0/-2" not in out
    assert "step" in out.split("4/4")[-1].split("\n")[0]  # the rate is per step (s/step or step/s)
    assert "loss=" in out and "val_map=" in out and "%" in out.split("val_map=")[-1][:10]
    assert "<" in out.split("4/4")[-1]  # elapsed<remaining: the ETA


def test_final_summary_on_console_in_run_info_and_in_wandb(wandb_run):
    run_dir, summary = wandb_run["dir"], wandb_run["summary"]
    (table,) = [m for m in wandb_run["log"] if m.startswith("run summary:")]
    best = summary["best_val"]
    assert f"{best['val/macro/map']:.2f} % at step {best['step']}" in table  # percent, as stored
    assert "best_model/" in table and "results.json" in table and "min wall" in table and "steps/s" in table
    assert f"{summary['test_macro']['map']:.2f} %" in table and "JobNorm" in table
    stored = json.loads((run_dir / "run_info.json").read_text())["summary"]
    assert stored["outputs"] == summary["outputs"] and "best_model/" in stored["outputs"]
    assert stored["wall_s"] > 0 and set(stored["test_tasks"]) == {"JobNorm", "SkillNorm"}
    summary_keys = {item.key: json.loads(item.value_json) for r in wandb_records(run_dir, "summary")
                    for item in r.summary.update}
    assert summary_keys["val/macro/map"] == best["val/macro/map"]  # the best, not the last
    assert summary_keys["test/macro/map"] == summary["test_macro"]["map"]
    assert summary_keys["test/macro/rp@10"] == summary["test_macro"]["rp@10"]
    assert summary_keys["run/wall_s"] > 0 and summary_keys["run/exported_step"] == summary["export"]["provenance"]["step"]


def wandb_records(run_dir: Path, kind: str) -> list:
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    return [r for r in records(next(offline.glob("run-*.wandb"))) if r.WhichOneof("record_type") == kind]


def test_wandb_run_has_its_name_tags_one_nested_config_and_the_best_validation(wandb_run):
    (record,) = wandb_records(wandb_run["dir"], "run")
    run = record.run
    assert (run.display_name, run.run_group) == ("train", "train")  # outside Hydra: the task name
    assert list(run.tags) == ["train", "run", "scale:custom"]  # 6 skills per step is not the paper's size
    config = {item.key: json.loads(item.value_json) for r in wandb_records(wandb_run["dir"], "config")
              for item in r.config.update  # _wandb (also as a nested key: a chart's spec): W&B's own
              if not (item.key or item.nested_key[0]).startswith("_")}
    assert set(config) == {"model", "scorer", "loss", "data", "trainer", "logger", "callbacks", "debug",
                           "hparams_search", "experiment", "scale", "task_name", "seed", "resume", "overwrite",
                           "optim", "train", "validation", "test", "export", "paths", "search"}  # no flat module copy
    assert config["callbacks"]["model_checkpoint"]["dirpath"] == "${paths.output_dir}/checkpoints"
    assert str(wandb_run["dir"]) not in json.dumps(config)
    metrics = {r.metric.name: r.metric for r in wandb_records(wandb_run["dir"], "metric")}
    assert metrics["val/macro/map"].step_metric == "trainer/global_step"
    assert metrics["val/macro/map"].summary.max


def test_wandb_run_holds_the_model_artifact_and_the_test_bars(wandb_run):
    """The exported model is a W&B Artifact in the offline run (``wandb sync`` uploads it with the run), its
    metadata the exported step and scores in percent; the test MAP per task is a bar chart."""
    run_dir, summary = wandb_run["dir"], wandb_run["summary"]
    (run,) = (run_dir / "wandb").glob("offline-run-*")
    wandb_id = json.loads((run_dir / "run_info.json").read_text())["wandb"]["id"]
    (logged,) = [r.artifact for r in wandb_records(run_dir, "artifact") if r.artifact.type == "model"]
    assert (logged.type, logged.name) == ("model", f"model-{wandb_id}") == ("model", summary["wandb_artifact"])
    assert "best" in list(logged.aliases)
    metadata = json.loads(logged.metadata)
    assert metadata["exported_step"] == summary["export"]["provenance"]["step"]
    assert metadata["test/macro/map"] == summary["test_macro"]["map"]
    files = {entry.path for entry in logged.manifest.contents}
    assert {"uwe.json", "config.json", "tokenizer.json"} <= files, sorted(files)
    assert files == {str(p.relative_to(run_dir / "best_model")) for p in (run_dir / "best_model").rglob("*")
                     if p.is_file()}  # the whole exported directory
    (bars,) = run.glob("files/media/table/test/map_by_task_table_*.table.json")
    rows = json.loads(bars.read_text())["data"]
    assert [task for task, _ in rows] == ["JobNorm", "SkillNorm", "macro"]
    assert [value for _, value in rows] == [summary["test_tasks"]["JobNorm"]["map"],
                                            summary["test_tasks"]["SkillNorm"]["map"], summary["test_macro"]["map"]]


@pytest.mark.slow
def test_wandb_model_artifact_can_be_switched_off(tmp_path, tiny_model_dir):
    """``export.wandb_artifact=false``: W&B keeps the metrics, no second copy of the model is staged."""
    cfg = make_cfg(tmp_path / "run", tiny_model_dir, "logger=wandb", "export.wandb_artifact=false", steps=2, every=None)
    summary = train(cfg)
    assert "wandb_artifact" not in summary
    assert not [r for r in wandb_records(tmp_path / "run", "artifact") if r.artifact.type == "model"]


def test_logged_config_has_no_absolute_path_and_names_the_paths(tmp_path, tiny_model_dir):
    cfg = make_cfg(tmp_path / "run", tiny_model_dir)
    data = logged_config(cfg)

    def strings(value):
        if isinstance(value, dict):
            for v in value.values():
                yield from strings(v)
        elif isinstance(value, list):
            for v in value:
                yield from strings(v)
        elif isinstance(value, str):
            yield value

    assert not [s for s in strings(data) if s.startswith("/")]
    assert data["callbacks"]["model_checkpoint"]["dirpath"] == "${paths.output_dir}/checkpoints"
    assert data["model"]["backbone"] == f".../{tiny_model_dir.name}"
    assert set(data) == set(cfg) - {"hydra"}  # nested, one copy: the config's own top-level keys


def compose_with_hydra(*overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_wandb_tags_say_the_true_scale_model_and_debug(tmp_path):
    fast = compose_with_hydra("debug=fast", "model=minilm")
    tags = wandb_identity(fast, fast.hydra, tmp_path)["tags"]
    assert "scale:custom" in tags and "scale:paper" not in tags  # 32 skills x 20 steps is not the paper's size
    assert "model:minilm" in tags and "debug:fast" in tags
    cpu = compose_with_hydra("scale=cpu")
    assert "scale:cpu" in wandb_identity(cpu, cpu.hydra, tmp_path)["tags"]


def test_multirun_names_hold_the_swept_keys_only_and_stay_short(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train", "+experiment=ablation_loss", "trainer=cpu", "seed=0,1"])
    sweep_dir = f"hydra.sweep.dir={tmp_path / 'multiruns' / '2026-12-01_10-00-00'}"
    job = compose_with_hydra("+experiment=ablation_loss", "trainer=cpu", "loss=mtm", "seed=1",
                             "validation.tasks=[JobNorm,SkillNorm,SkillExtr-H,SkillExtr-T,Job2Skill@open]",
                             sweep_dir)
    assert wandb_identity(job, job.hydra, tmp_path)["name"] == "loss=mtm,seed=1"
    long = run_name([f"validation.tasks=[{','.join(['SkillExtr-H'] * 20)}]", "scorer.tau=0.5",
                     f"model.backbone={tmp_path}/models/a-very-long-model-directory-name-indeed",
                     "optim.lr=0.0001", "optim.weight_decay=0.05", "loss.alpha.J=0.25", "loss.alpha.V=0.75"], "t")
    assert len(long) <= 64 and long.startswith("loss.alpha.J=0.25")
    assert long != run_name(["loss.alpha.J=0.25", "loss.alpha.V=0.75", "model.backbone=x", "optim.lr=0.0002",
                             "optim.weight_decay=0.05", "scorer.tau=0.5", "validation.tasks=[x]"], "t")


def test_console_summary_of_a_skipped_run():
    assert "skipped: every loss weight 0" in console_summary({"skipped": "every loss weight 0"}, Path("r"))


# ----------------------------------------------------------------------------------------------------------
# Quiet output
# ----------------------------------------------------------------------------------------------------------


def test_library_warnings_are_hidden_and_come_back_with_uwe_show_warnings(monkeypatch):
    message = "`isinstance(treespec, LeafSpec)` is deprecated, use something else"
    for name in ("UWE_SHOW_WARNINGS", "UWE_DEBUG", "HYDRA_FULL_ERROR"):
        monkeypatch.delenv(name, raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert quiet.quiet_libraries()
        warnings.warn(message, DeprecationWarning, stacklevel=1)
        warnings.warn("a warning of ours", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["a warning of ours"]
    monkeypatch.setenv("UWE_SHOW_WARNINGS", "1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not quiet.quiet_libraries()
        warnings.warn(message, DeprecationWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == [message]


# -- evaluate: progress and the summary at the end ------------------------------------------------------------


def test_evaluate_shows_progress_and_ends_with_a_summary_in_percent(tmp_path, tiny_model_dir):
    """Through the real entry point: bars for encoding (texts) and scoring (tasks), then a table of MAP / RP@10
    per task and macro (percent), wall time, throughput, peak memory and where the results went; the same
    summary in the evaluate run's run_info.json, equal to results.json (percent, marked so)."""
    run_dir = tmp_path / "eval"
    done = run_cli("uwe_lightning.evaluate", "model=trained", f"model.backbone={tiny_model_dir}",
                   "tasks=[JobNorm,SkillNorm]", f"paths.data_dir={MINI_DATA}", f"hydra.run.dir={run_dir}",
                   "device=cpu", "max_queries=20")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "text" in done.stderr and "score test" in done.stderr and "2/2" in done.stderr  # the two bars
    table = done.stdout[done.stdout.index("evaluation summary:"):]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["unit"] == "percent"
    summary = json.loads((run_dir / "run_info.json").read_text())["summary"]
    assert summary["unit"] == "percent" and set(summary["tasks"]) == {"JobNorm", "SkillNorm"}
    for task in ("JobNorm", "SkillNorm"):
        value = results["tasks"][task]["map"]
        assert summary["tasks"][task]["map"] == value and 0 <= value <= 100
        assert f"{value:.2f} %" in table.split(task)[1].split("\n")[0]
    assert summary["macro"]["map"] == results["macro"]["map"]
    assert f"{results['macro']['map']:.2f} %" in table
    assert summary["wall_s"] > 0 and summary["n_distinct_texts"] > 0 and summary["texts_per_s"] > 0
    assert "peak_cpu_rss_gib" in summary or "peak_gpu_allocated_gib" in summary
    assert str(run_dir / "results.json") in summary["written"] and "results.json" in table
    assert "s wall" in table and "texts/s" in table and "peak memory" in table
