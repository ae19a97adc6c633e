"""W&B a team can read: a run named by its overrides, one group per multirun, tags, an id kept for resume."""

from __future__ import annotations

import json
from pathlib import Path

from hydra import compose, initialize_config_dir

from tests.helpers.configs import make_cfg
from uwe_lightning.paths import CONF_DIR
from uwe_lightning.training.run import train
from uwe_lightning.training.tracking import TEST_TABLE_COLUMNS, log_test_table, run_name, wandb_identity


def compose_with_hydra(*overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_multirun_jobs_share_a_group_and_are_named_by_their_overrides(tmp_path):
    # The jobs of one `-m` invocation share the sweep dir Hydra resolved at launch.
    sweep_dir = f"hydra.sweep.dir={tmp_path / 'multiruns' / '2026-12-01_10-00-00'}"
    one = compose_with_hydra("+experiment=ablation_loss", "loss=mtm", "seed=1", sweep_dir)
    two = compose_with_hydra("+experiment=ablation_loss", "loss=infonce", "seed=0", sweep_dir)
    ids = [wandb_identity(cfg, cfg.hydra, tmp_path) for cfg in (one, two)]
    assert [i["name"] for i in ids] == ["loss=mtm,seed=1", "loss=infonce,seed=0"]
    assert ids[0]["group"] == ids[1]["group"] == "ablation_loss/2026-12-01_10-00-00"
    assert ids[0]["tags"][:2] == ["ablation_loss", "multirun"] and ids[0]["job_type"] == "train"
    single = compose_with_hydra("seed=3")
    identity = wandb_identity(single, single.hydra, tmp_path)
    assert (identity["name"], identity["group"], identity["tags"][1]) == ("seed=3", "train", "run")


def test_run_name_leaves_out_where_a_run_writes():
    assert run_name(["hydra.run.dir=x", "paths.output_dir=y", "resume=true", "logger=wandb"], "t") == "t"
    assert run_name(["scorer=softmax", "+experiment=uwe", "scorer.tau=0.5"], "uwe") == "scorer.tau=0.5,scorer=softmax"


def test_offline_run_holds_the_metrics_and_a_resume_reuses_its_id(tmp_path, tiny_model_dir):
    train(make_cfg(tmp_path, tiny_model_dir, "logger=wandb", steps=2, every=1))
    wandb_id = json.loads((tmp_path / "run_info.json").read_text())["wandb"]["id"]
    (run,) = (tmp_path / "wandb").glob(f"offline-run-*-{wandb_id}")
    records = next(run.glob("run-*.wandb")).read_bytes()
    for key in (b"val/macro/map", b"val/macro/rp@10", b"val/JobNorm/map", b"train/loss", b"test/results", b"optim"):
        assert key in records  # per-task validation at every validation, the config, the test table
    (table,) = run.glob("files/media/table/test/results_*.table.json")
    rows = json.loads(table.read_text())["data"]
    assert [r[1] for r in rows] == ["JobNorm", "SkillNorm", "macro"] and len({r[0] for r in rows}) == 1
    train(make_cfg(tmp_path, tiny_model_dir, "logger=wandb", "resume=true", steps=3, every=1))
    assert json.loads((tmp_path / "run_info.json").read_text())["wandb"]["id"] == wandb_id
    assert len(list(Path(tmp_path / "wandb").glob(f"offline-run-*-{wandb_id}"))) == 2  # same id, resumed


class WandbLogger:
    """Stands in for Lightning's ``WandbLogger`` (matched by class name): records what would be sent, no wandb."""

    def __init__(self) -> None:
        self.tables: list[dict] = []
        self.logged: list[dict] = []
        self.experiment = type("Run", (), {"summary": {}, "log": lambda _, data: self.logged.append(data)})()

    def log_table(self, key: str, columns: list[str], data: list[list]) -> None:
        self.tables.append({"key": key, "columns": columns, "data": data})


def _evaluated(value: float, tasks: tuple[str, ...] = ("edges",)) -> dict:
    return {"tasks": {t: {"map": value, "rp@10": value + 0.1, "n_queries": 5} for t in tasks},
            "macro": {"map": None, "rp@10": None}, "suites": {"own": {"map": value, "rp@10": value + 0.1}}}


def test_test_table_holds_the_baselines_beside_the_model():
    results = {"model": "own_graph/best_model", **_evaluated(0.5), "step0": _evaluated(0.1),
               "baselines": {"popularity": {"model": "popularity", **_evaluated(0.3)},
                             "tfidf": {"model": "tfidf", **_evaluated(0.2)}}}
    wandb, other = WandbLogger(), object()
    log_test_table([other, wandb], results)
    (table,) = wandb.tables
    assert table["key"] == "test/results" and table["columns"] == TEST_TABLE_COLUMNS == ["model", "task", "map",
                                                                                          "rp@10", "n_queries"]
    assert [row[:3] for row in table["data"]] == [  # percent, as every stored score
        ["own_graph/best_model", "edges", 50.0], ["own_graph/best_model", "average", 50.0],
        ["zero-shot (step 0)", "edges", 10.0], ["zero-shot (step 0)", "average", 10.0],
        ["popularity", "edges", 30.0], ["popularity", "average", 30.0],
        ["tfidf", "edges", 20.0], ["tfidf", "average", 20.0]]
    summary = wandb.experiment.summary
    assert summary["test/edges/map"] == 50.0 and summary["test/popularity/edges/map"] == 30.0
    assert summary["test/step0/average/map"] == 10.0 and summary["test/tfidf/average/map"] == 20.0
    assert abs(summary["test/edges/rp@10"] - 60.0) <= 1e-9 * 60.0  # 0.6 * 100 in floating point
    (bars,) = wandb.logged  # the model's MAP per task as a bar chart
    assert list(bars) == ["test/map_by_task"] and bars["test/map_by_task"].table.data == [["edges", 50.0],
                                                                                           ["average", 50.0]]
    workbench = {"model": "m", "tasks": {"JobNorm": {"map": 0.4, "rp@10": 0.5, "n_queries": 2}},
                 "macro": {"map": 0.4, "rp@10": 0.5}}
    plain = WandbLogger()
    log_test_table([plain], workbench)  # no baselines: the model's rows only, its WorkBench macro last
    assert [row[:2] for row in plain.tables[0]["data"]] == [["m", "JobNorm"], ["m", "macro"]]
