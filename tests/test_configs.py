"""Every config group option composes and instantiates through its ``_target_`` (no data, no real model)."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, InstantiationException
from hydra.utils import instantiate

from tests.helpers.paths import EDGES
from uwe_lightning.data.datamodule import UWEDataModule
from uwe_lightning.losses import GraphLoss
from uwe_lightning.model.pretrained import ModelSpec
from uwe_lightning.model.scoring import ScorerSpec
from uwe_lightning.paths import CONF_DIR
from uwe_lightning.workbench.metric_names import MONITOR

GROUPS = {group: sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
          for group in ("model", "scorer", "loss", "data", "trainer", "logger", "callbacks")}


def compose_train(*overrides: str, tmp_path=None):
    out = [f"paths.output_dir={tmp_path}"] if tmp_path is not None else []
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[*out, *overrides])


@pytest.mark.parametrize("name", GROUPS["model"])
def test_model_group(name):
    extra = {"trained": ["model.backbone=some/dir"], "sentence_transformers": ["model.name=some/dir"]}.get(name, [])
    spec = instantiate(compose_train(f"model={name}", *extra).model)
    assert isinstance(spec, ModelSpec) and spec.name == ("some/dir" if name == "sentence_transformers" else name)
    if name == "sentence_transformers":
        assert (spec.kind, spec.backbone) == ("sentence_transformers", "some/dir")


@pytest.mark.parametrize("name", GROUPS["scorer"])
def test_scorer_group(name):
    spec = instantiate(compose_train(f"scorer={name}").scorer)
    assert isinstance(spec, ScorerSpec) and spec.name == name


@pytest.mark.parametrize("name", GROUPS["loss"])
def test_loss_group(name):
    cfg = compose_train(f"loss={name}")
    loss = instantiate(cfg.loss, graphs=list(cfg.data.graphs))
    assert isinstance(loss, GraphLoss) and loss.name == name and loss.active_graphs == ("J", "V", "A")


@pytest.mark.parametrize("name", GROUPS["data"])
def test_data_group(name):
    extra = [f"data.source.edge_files.{g}={EDGES / f}" for g, f in (("J", "J.csv"), ("V", "V.jsonl"), ("A", "A.tsv"))]
    datamodule = instantiate(compose_train(f"data={name}", *(extra if name == "edges" else [])).data)
    assert isinstance(datamodule, UWEDataModule)
    assert datamodule.source.describe()["source"] == name


@pytest.mark.parametrize("name", GROUPS["trainer"])
def test_trainer_group(name, tmp_path):
    trainer = instantiate(compose_train(f"trainer={name}", "trainer.accelerator=cpu", tmp_path=tmp_path).trainer)
    assert isinstance(trainer, pl.Trainer)


@pytest.mark.parametrize("name", GROUPS["logger"])
def test_logger_group(name, tmp_path):
    cfg = compose_train(f"logger={name}", "logger.wandb.mode=disabled" if name == "wandb" else "task_name=t",
                        tmp_path=tmp_path)
    loggers = [instantiate(node) for node in (cfg.logger or {}).values() if node and "_target_" in node]
    assert all(isinstance(lg, pl.loggers.Logger) for lg in loggers)


@pytest.mark.parametrize("name", GROUPS["callbacks"])
def test_callbacks_group(name, tmp_path):
    cfg = compose_train(f"callbacks={name}", tmp_path=tmp_path)
    assert all(isinstance(instantiate(node), pl.Callback) for node in cfg.callbacks.values() if node)
    monitors = {node.get("monitor") for node in cfg.callbacks.values() if node} - {None}
    assert monitors <= {MONITOR}, monitors  # the one metric vocabulary (uwe_lightning.workbench.metric_names)


def test_typos_fail_in_hydra():
    with pytest.raises(ConfigCompositionException, match="max_querys"):
        compose_train("validation.max_querys=5")
    with pytest.raises(ConfigCompositionException, match="optim.lr"):
        compose_train("optim.lr=abc")
    with pytest.raises(InstantiationException, match="temperature"):
        instantiate(compose_train("+scorer.temperature=1").scorer)
