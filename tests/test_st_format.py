"""A saved UWE model is a classic sentence-transformers model: ``SentenceTransformer(dir)`` loads it without
guessing and its embeddings equal our ``mean`` scorer's (zero-shot and trained, long texts included)."""

from __future__ import annotations

import json
import logging

import pytest
import torch
import torch.nn.functional as F

import uwe_lightning as uwe
from tests.helpers.tolerance import assert_close_to_scale
from uwe_lightning.model.pretrained import UWEModel
from uwe_lightning.model.st_format import MODULES_FILE, ST_CONFIG_FILE, ST_MODEL_CONFIG_FILE

st = pytest.importorskip("sentence_transformers")

TEXTS = ["data engineer", "nurse in a care team " * 40, "x", "manage a team of software engineers"]


def ranker_embeddings(model_dir) -> torch.Tensor:
    """What our mean scorer compares: the normalised mean of the token embeddings, at our token limit."""
    ranker = uwe.Ranker.from_pretrained(str(model_dir), scorer="mean", device="cpu")
    return torch.stack([F.normalize(e.mean(0), dim=-1) for e in ranker.embed(TEXTS)])


@pytest.fixture
def trained_dir(tiny_model_dir, tmp_path):
    """A model after a few real optimiser steps with the softmax scorer (weights differ from the backbone)."""
    module = uwe.UWEModule(backbone=str(tiny_model_dir), scorer="softmax", max_steps=2)
    with torch.no_grad():
        for p in module.model.encoder.backbone.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return module.save_pretrained(tmp_path / "trained")


@pytest.mark.parametrize("which", ["zero_shot", "trained"])
def test_sentence_transformers_loads_it_exactly(which, tiny_model_dir, trained_dir, tmp_path, caplog):
    out = (UWEModel.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "zs") if which == "zero_shot"
           else trained_dir)
    with caplog.at_level(logging.INFO):
        model = st.SentenceTransformer(str(out), device="cpu")
    assert not [r for r in caplog.records if "Creating a new one with mean pooling" in r.getMessage()]
    assert model.similarity_fn_name == "cosine"
    assert model.max_seq_length == UWEModel.from_pretrained(out).effective_max_length()  # cut where we cut
    got = torch.tensor(model.encode(TEXTS, batch_size=2))
    assert_close_to_scale(got, ranker_embeddings(out))


def test_files_say_what_the_model_is(trained_dir):
    modules = json.loads((trained_dir / MODULES_FILE).read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    config = json.loads((trained_dir / ST_MODEL_CONFIG_FILE).read_text())
    assert config["similarity_fn_name"] == "cosine"
    assert config["uwe"] == {"uwe_format": 1, "scorer": "softmax", "tau": 0.1, "max_length": None}
    assert json.loads((trained_dir / ST_CONFIG_FILE).read_text())["max_seq_length"] == 128  # the tiny model's limit
    card = (trained_dir / "README.md").read_text()
    assert "scorer: `softmax`, tau: `0.1`" in card and "mean-pooled approximation" in card
    assert card.startswith("---\n") and "\nlibrary_name: sentence-transformers\n" in card.split("\n---\n")[0]


def test_a_set_max_length_is_what_sentence_transformers_uses(tiny_model_dir, tmp_path):
    out = UWEModel.from_pretrained(tiny_model_dir, max_length=16).save_pretrained(tmp_path / "short")
    assert st.SentenceTransformer(str(out), device="cpu").max_seq_length == 16
    card = (out / "README.md").read_text()
    assert "exactly this model's embeddings" in card  # a mean model: no approximation


def test_card_is_rewritten_with_the_test_table(trained_dir):
    from uwe_lightning.model.pretrained import write_model_card

    write_model_card(trained_dir, "| task | MAP |\n|---|---|\n| JobNorm | 12.34 |")
    card = (trained_dir / "README.md").read_text()
    assert "## Test results (WorkBench)" in card and "| JobNorm | 12.34 |" in card
    assert UWEModel.from_pretrained(trained_dir).scorer.name == "softmax"  # uwe.json untouched


def test_pylate_format_for_maxsim_models(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    from uwe_lightning.model.st_format import DENSE_DIR

    model = UWEModel.from_pretrained(tiny_model_dir, scorer="maxsim")
    out = model.save_pretrained(tmp_path / "pylate", format="pylate")
    config = json.loads((out / ST_MODEL_CONFIG_FILE).read_text())
    assert config["similarity_fn_name"] == "MaxSim"
    assert (config["query_prefix"], config["document_prefix"], config["do_query_expansion"],
            config["skiplist_words"]) == ("", "", False, [])
    assert config["query_length"] == config["document_length"] == model.effective_max_length()
    modules = json.loads((out / MODULES_FILE).read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Dense"]
    assert torch.equal(load_file(str(out / DENSE_DIR / "model.safetensors"))["linear.weight"], torch.eye(32))
    assert "library_name: PyLate" in (out / "README.md").read_text()
    loaded = UWEModel.from_pretrained(out)  # still our model format too
    assert loaded.scorer.name == "maxsim"
    texts = ["data engineer", "nurse"]
    assert torch.equal(loaded.score(texts, texts), model.score(texts, texts))


def test_pylate_format_refuses_other_scorers(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="format='pylate' scores with MaxSim"):
        UWEModel.from_pretrained(tiny_model_dir, scorer="softmax").save_pretrained(tmp_path / "x", format="pylate")
    with pytest.raises(ValueError, match="format must be one of"):
        UWEModel.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "y", format="onnx")
