"""The exported model card is what the Hugging Face Hub reads: ``huggingface_hub``'s own parser gets complete
metadata (base model, license, datasets, tags, pipeline, library, language) and a model-index with exactly the
numbers the run measured; it names no local path; the saved files are 0644 whatever the umask.
(The whole-run check, a card written by ``train`` itself, is in ``tests/test_training.py``.)"""

from __future__ import annotations

import os

import pytest
from huggingface_hub import ModelCard

from uwe_lightning.model.card import render_card, without_local_paths
from uwe_lightning.model.pretrained import UWEModel, write_model_card
from uwe_lightning.protocol.build import OPEN_PROTOCOL_SOURCES
from uwe_lightning.workbench.report import card_markdown, model_index_rows

#: The shape of a real run's results.json (numbers made up for the test, structure as ``evaluate_ranker`` writes).
RESULTS = {
    "model": "train/best_model", "split": "test", "max_queries": 2000,
    "tasks": {"Job2Skill": {"map": 0.1469070860451917, "rp@10": 0.33147202380952384, "n_queries": 2000,
                            "n_targets": 13939, "seconds": 12.7, "n_queries_total": 3039},
              "JobNorm": {"map": 0.41234567, "rp@10": 0.5123, "n_queries": 2000, "n_targets": 2942,
                          "seconds": 3.1, "n_queries_total": 15461}},
    "unavailable": {"SkillSim": "SkillSim needs SkillMatch-1K, which is not in the data pack: put test.parquet "
                                "into /work/shared/uwe-data/workbench/skillsim, or set UWE_ALLOW_HUB=1"},
    "macro": {"map": 0.2796263780225959, "rp@10": 0.4218860119047619, "covers": ["Job2Skill", "JobNorm"]},
}

CONFIG = {
    "uwe_format": 1, "scorer": "softmax", "tau": 0.1, "max_length": None, "train_max_length": 64,
    "provenance": {
        "backbone": "/home/someone/models/all-MiniLM-L6-v2", "base_model": "sentence-transformers/all-MiniLM-L6-v2",
        "license": "apache-2.0", "step": 600, "val_metric": {"name": "val/macro_map", "value": 0.3},
        "source_checkpoint": "/home/someone/runs/x/checkpoints/best-step600.ckpt",
        "data": "OpenProtocolSource, graphs J/V/A, 64 skills per step",
        "training": {"loss": "mtm", "steps": 600, "skills_per_step": 64, "lr": 8e-5, "seed": 0},
        "datasets": [dict(d) for d in OPEN_PROTOCOL_SOURCES],
    },
}


def rendered() -> str:
    return render_card(CONFIG, card_markdown(RESULTS, "test split"),
                       evaluations=model_index_rows({**RESULTS, "seed": 3}))


def test_the_hub_parser_reads_complete_metadata():
    data = ModelCard(rendered()).data
    assert data.base_model == "sentence-transformers/all-MiniLM-L6-v2" and data.license == "apache-2.0"
    assert data.datasets == ["TechWolf/vacancy-job-to-skill", "jjzha/skillskape"]
    assert (data.library_name, data.pipeline_tag, data.language) == ("sentence-transformers",
                                                                     "sentence-similarity", ["en"])
    assert {"uwe_lightning", "esco", "late-interaction"} <= set(data.tags)
    assert data.model_name == "UWE all-MiniLM-L6-v2 (softmax)"


def test_model_index_holds_the_measured_numbers_and_nothing_else():
    results = ModelCard(rendered()).data.eval_results
    got = {(r.dataset_config, r.metric_type): r.metric_value for r in results}
    assert got == {("Job2Skill", "map"): 14.69, ("Job2Skill", "rp@10"): 33.15, ("JobNorm", "map"): 41.23,
                   ("JobNorm", "rp@10"): 51.23, ("macro average", "map"): 27.96, ("macro average", "rp@10"): 42.19}
    assert "SkillSim" not in {r.dataset_config for r in results}  # not measured: not claimed
    assert {(r.dataset_split, r.dataset_args["max_queries"], r.dataset_args["seed"]) for r in results} == {
        ("test", 2000, 3)}  # the query subset it was measured on


def test_no_local_path_and_the_training_in_words():
    card = rendered()
    assert "/home/" not in card and "/work/" not in card
    assert "`best-step600.ckpt`" in card and "not in the data pack" in card  # the reason keeps its first clause
    assert "- loss: `mtm`; 600 steps of 64 skills each" in card
    assert "64 skills per step instead of the paper's 512" in card
    assert "instead of the paper's `sentence-transformers/all-mpnet-base-v2`" in card
    assert "jjzha/skillskape" in card and "license: MIT" in card
    assert "UWEWorkRBModel" in card and "SentenceTransformer(" in card


@pytest.mark.parametrize("text, expected", [
    ("at /tmp/pytest-1/run/best_model.", "at best_model."),
    ("C:\\Users\\me\\models\\m and ~/x/y", "m and y"),
    ("graphs J/V/A, MAP / RP@10, tokens/s, https://huggingface.co/org/model", None),
])
def test_local_paths_are_cut_to_their_name(text, expected):
    assert without_local_paths(text) == (text if expected is None else expected)


def test_a_saved_model_card_parses_and_files_are_0644_whatever_the_umask(tiny_model_dir, tmp_path):
    previous = os.umask(0o077)
    try:
        out = UWEModel.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "m", backbone=str(tiny_model_dir))
        write_model_card(out, card_markdown(RESULTS, "test split"), evaluations=model_index_rows(RESULTS))
    finally:
        os.umask(previous)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.rglob("*")}
    assert modes["model.safetensors"] == 0o644 and modes["README.md"] == 0o644
    assert {m for m in modes.values()} <= {0o644, 0o755}
    card = (out / "README.md").read_text()
    data = ModelCard.load(out / "README.md").data
    assert data.base_model is None and len(data.eval_results) == 6  # a local tiny backbone has no hub id
    assert str(tmp_path) not in card and str(tiny_model_dir) not in card


def test_a_zero_shot_save_of_a_named_backbone_names_its_hub_id(tiny_model_dir, tmp_path):
    """No training run: ``from_pretrained(<backbone dir>).save_pretrained`` still gives the card the backbone's hub
    id and license (a tiny model under the assembled MiniLM's directory name stands in for it)."""
    import shutil

    backbone = shutil.copytree(tiny_model_dir, tmp_path / "models" / "all-MiniLM-L6-v2")
    out = UWEModel.from_pretrained(backbone).save_pretrained(tmp_path / "zero_shot")
    text = (out / "README.md").read_text()
    data = ModelCard(text).data
    assert (data.base_model, data.license) == ("sentence-transformers/all-MiniLM-L6-v2", "apache-2.0")
    assert str(tmp_path) not in text and str(tmp_path) not in (out / "uwe.json").read_text()
    other = UWEModel.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "unnamed")  # a local dir: no hub id
    assert ModelCard((other / "README.md").read_text()).data.base_model is None
