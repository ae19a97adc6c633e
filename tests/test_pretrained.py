"""UWEModel: one class saves and loads the project's model format; the package root exports the main names."""

from __future__ import annotations

import json
import os

import pytest
import torch

import uwe_lightning as uwe
from tests.helpers.faults import load_strict_json
from uwe_lightning.model.pretrained import FORMAT_VERSION, UWE_CONFIG_FILE, UWEModel, read_uwe_config
from uwe_lightning.model.scoring import SCORERS

QUERIES = ["data engineer", "nurse in a care team", "truck driver"]
TARGETS = ["python", "sql", "patient care", "drive truck", "manage a team of software engineers"]
TAU = {"softmax": 0.3, "softmax_ymean": 0.7}


@pytest.mark.parametrize("scorer", sorted(SCORERS))
def test_save_then_load_gives_identical_scores(tiny_model_dir, tmp_path, scorer):
    model = UWEModel.from_pretrained(tiny_model_dir, scorer=scorer, tau=TAU.get(scorer), max_length=24)
    before = model.score(QUERIES, TARGETS)
    out = model.save_pretrained(tmp_path / "saved", step=7)
    loaded = UWEModel.from_pretrained(out)
    assert (loaded.scorer.name, loaded.scorer.tau, loaded.max_length) == (scorer, TAU.get(scorer), 24)
    assert loaded.provenance["step"] == 7
    assert torch.equal(loaded.score(QUERIES, TARGETS), before)
    # The Ranker (cached target space, bucketed scoring) reads the same directory and ranks the same way.
    ranker = uwe.Ranker.from_pretrained(str(out), device="cpu")
    scores, index = ranker.rank(QUERIES, ranker.index(TARGETS), k=len(TARGETS))
    expected = torch.sort(before, dim=1, descending=True, stable=True)
    assert torch.equal(index, expected.indices)
    torch.testing.assert_close(scores, expected.values, atol=2e-3, rtol=0)  # fp16 target cache


def test_saved_format_is_versioned_and_atomic(tiny_model_dir, tmp_path):
    model = UWEModel.from_pretrained(tiny_model_dir, scorer="softmax")
    out = model.save_pretrained(tmp_path / "m")
    config = json.loads((out / UWE_CONFIG_FILE).read_text())
    assert config["uwe_format"] == FORMAT_VERSION
    assert set(config) == {"uwe_format", "scorer", "tau", "max_length", "train_max_length", "provenance", "files"}
    model.save_pretrained(tmp_path / "m", step=2)  # replacing an existing directory leaves no staging dirs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert read_uwe_config(out)["provenance"]["step"] == 2


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_saved_model_is_0644_and_0755_whatever_the_umask(tiny_model_dir, tmp_path, umask):
    """Before: model.safetensors came out 0600 (transformers' own mode), and under umask 077 every directory
    0700: a model another user or the service cannot read."""
    model = UWEModel.from_pretrained(tiny_model_dir, scorer="softmax", tau=0.3)
    previous = os.umask(umask)
    try:
        out = model.save_pretrained(tmp_path / "best_model", nan_metric=float("nan"))
    finally:
        os.umask(previous)
    entries = [out, *out.rglob("*")]
    assert (out / "model.safetensors") in entries
    for path in entries:
        assert path.stat().st_mode & 0o777 == (0o755 if path.is_dir() else 0o644), path
    assert load_strict_json(out / UWE_CONFIG_FILE)["provenance"]["nan_metric"] is None


def test_reads_pre_versioned_exports(tiny_model_dir, tmp_path):
    model = UWEModel.from_pretrained(tiny_model_dir)
    out = model.save_pretrained(tmp_path / "old")
    legacy = {"scorer": "maxsim", "tau": None, "max_length": None, "backbone": "tiny", "step": 3}
    (out / UWE_CONFIG_FILE).write_text(json.dumps(legacy))
    loaded = UWEModel.from_pretrained(out)
    assert loaded.scorer.name == "maxsim" and loaded.provenance == {"backbone": "tiny", "step": 3}
    (out / UWE_CONFIG_FILE).write_text(json.dumps({**legacy, "uwe_format": FORMAT_VERSION + 1}))
    with pytest.raises(ValueError, match="newer"):
        UWEModel.from_pretrained(out)


def test_arguments_override_the_saved_scorer(tiny_model_dir, tmp_path):
    out = UWEModel.from_pretrained(tiny_model_dir, scorer="softmax", tau=0.3).save_pretrained(tmp_path / "m")
    assert UWEModel.from_pretrained(out, scorer="softmax_ymean").scorer.tau == 0.5  # another scorer's default
    assert UWEModel.from_pretrained(out, scorer="softmax").scorer.tau == 0.3


def test_module_saves_its_model(tiny_model_dir, tmp_path):
    module = uwe.UWEModule(backbone=str(tiny_model_dir), scorer="softmax", max_steps=2)
    out = module.save_pretrained(tmp_path / "from-module")
    loaded = UWEModel.from_pretrained(out)
    assert loaded.scorer.name == "softmax" and loaded.provenance["step"] == 0
    assert loaded.train_max_length == 64
    assert torch.equal(loaded.score(QUERIES, TARGETS), module.model.score(QUERIES, TARGETS))


def test_package_root_exports(tiny_model_dir):
    tasks = uwe.list_tasks()
    assert {"Job2Skill", "SkillNorm", "Job2Skill@open", "SkillNorm@heldout"} <= set(tasks)
    assert all(isinstance(d, str) and d and "\n" not in d for d in tasks.values())
    assert uwe.get_task("JobNorm", drop_retired_uris=True).drop_retired_uris is True
    with pytest.raises(TypeError, match="no option"):
        uwe.get_task("JobNorm", drop_retired=True)
    assert isinstance(uwe.__version__, str)
    ranker = uwe.Ranker.from_pretrained(str(tiny_model_dir), scorer="mean")
    assert isinstance(ranker, uwe.Ranker) and callable(uwe.evaluate)
    import uwe_lightning.evaluate  # noqa: F401  (the `python -m` shim shadows the attribute, stays callable)

    assert callable(uwe.evaluate)
    assert set(uwe.__all__) <= set(dir(uwe))
    for name in uwe.__all__:
        getattr(uwe, name)


@pytest.mark.parametrize(("overrides", "expected"), [
    ([], ("softmax", 0.3)),                      # a saved model: the scorer it was trained with
    (["scorer=mean"], ("mean", None)),           # an explicit scorer wins
    (["scorer=softmax", "scorer.tau=0.7"], ("softmax", 0.7)),
])
def test_evaluate_uses_the_saved_scorer_unless_told(tiny_model_dir, tmp_path, overrides, expected):
    from hydra import compose, initialize_config_dir

    from uwe_lightning.cli.evaluate import build_ranking_model
    from uwe_lightning.paths import CONF_DIR

    out = UWEModel.from_pretrained(tiny_model_dir, scorer="softmax", tau=0.3).save_pretrained(tmp_path / "m")
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("evaluate", overrides=["model=trained", f"model.backbone='{out}'", *overrides])
    spec = build_ranking_model(cfg).ranker.spec
    assert (spec.name, spec.tau) == expected


def test_evaluate_backbone_defaults_to_mean(tiny_model_dir):
    from hydra import compose, initialize_config_dir

    from uwe_lightning.cli.evaluate import build_ranking_model
    from uwe_lightning.paths import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("evaluate", overrides=["model=trained", f"model.backbone='{tiny_model_dir}'"])
    assert build_ranking_model(cfg).ranker.spec.name == "mean"
