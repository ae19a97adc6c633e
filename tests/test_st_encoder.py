"""``model=sentence_transformers``: any sentence-transformers model ranks with its own pooling, normalisation
and prompts (queries through ``encode_query``, targets through ``encode_document``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

import uwe_lightning as uwe
from tests.helpers.paths import MINI_DATA
from tests.helpers.tolerance import assert_close_to_scale
from uwe_lightning.model.pretrained import ModelSpec, UWEModel, load_model
from uwe_lightning.paths import CONF_DIR
from uwe_lightning.workbench.runner import EncoderRankingModel

st = pytest.importorskip("sentence_transformers")

QUERIES = ["data engineer", "nurse in a care team"]
TARGETS = ["python", "patient care", "drive truck", "manage a team of software engineers"]


@pytest.fixture(scope="module")
def cls_prompt_model_dir(tiny_model_dir, tmp_path_factory):
    """A tiny sentence-transformers model unlike ours: CLS pooling, no Normalize, a query prompt."""
    from sentence_transformers import models

    word = models.Transformer(str(tiny_model_dir))
    dim = getattr(word, "get_embedding_dimension", None) or word.get_word_embedding_dimension
    pooling = models.Pooling(dim(), pooling_mode="cls")
    model = st.SentenceTransformer(modules=[word, pooling], prompts={"query": "query: ", "document": ""},
                                   device="cpu")
    out = tmp_path_factory.mktemp("st-cls") / "model"
    model.save(str(out))
    return out


def ranker_for(path, **spec):
    return uwe.Ranker.from_model(load_model(ModelSpec(name="st", kind="sentence_transformers",
                                                      backbone=str(path), **spec)), device="cpu")


def test_own_pooling_and_prompts_are_used(cls_prompt_model_dir):
    ranker = ranker_for(cls_prompt_model_dir).with_scorer("mean", precision="fp32")  # exact: near-ties below
    model = st.SentenceTransformer(str(cls_prompt_model_dir), device="cpu")
    assert ranker.side_dependent
    q = torch.cat(ranker.embed(QUERIES, side="query"))
    y = torch.cat(ranker.embed(TARGETS, side="target"))
    assert_close_to_scale(q, torch.tensor(model.encode_query(QUERIES)))
    assert_close_to_scale(y, torch.tensor(model.encode_document(TARGETS)))
    assert not torch.allclose(q, torch.cat(ranker.embed(QUERIES, side="target")))  # the prompt matters
    # Ranking = the model's own cosine similarity.
    scores, index = ranker.rank(QUERIES, ranker.index(TARGETS), k=len(TARGETS))
    expected = F.normalize(q, dim=-1) @ F.normalize(y, dim=-1).T
    torch.testing.assert_close(scores, expected.sort(dim=1, descending=True).values, atol=2e-3, rtol=0)
    assert torch.equal(index, expected.argsort(dim=1, descending=True, stable=True))


def test_workbench_embeds_each_side_with_its_prompt(cls_prompt_model_dir):
    ranker = ranker_for(cls_prompt_model_dir)
    adapter = EncoderRankingModel(ranker)
    adapter.prepare(QUERIES + TARGETS)
    (_, block), = list(adapter.score_blocks(QUERIES, TARGETS, block_size=16))
    expected = F.normalize(torch.cat(ranker.embed(QUERIES, side="query")), dim=-1) @ \
        F.normalize(torch.cat(ranker.embed(TARGETS, side="target")), dim=-1).T
    assert_close_to_scale(block, expected)


def test_a_prompt_override_changes_the_cache_key(cls_prompt_model_dir):
    own, other = ranker_for(cls_prompt_model_dir), ranker_for(cls_prompt_model_dir, target_prompt="passage: ")
    assert own.cache_key(TARGETS) != other.cache_key(TARGETS)
    assert not ranker_for(cls_prompt_model_dir, query_prompt="").side_dependent  # "" = no prompt on either side


def test_a_mean_pooled_sentence_transformer_equals_our_mean_path(tiny_model_dir, tmp_path):
    out = UWEModel.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "m")  # our save = an ST model
    ours = uwe.Ranker.from_pretrained(str(out), scorer="mean", device="cpu")
    theirs = ranker_for(out)
    assert not theirs.side_dependent
    a = ours.rank(QUERIES, ours.index(TARGETS), k=4)
    b = theirs.rank(QUERIES, theirs.index(TARGETS), k=4)
    assert torch.equal(a[1], b[1])
    torch.testing.assert_close(a[0], b[0], atol=2e-3, rtol=0)


def test_evaluate_command_composes_and_refuses_token_scorers(tiny_model_dir, tmp_path):
    from uwe_lightning.cli.evaluate import build_ranking_model

    out = UWEModel.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "m")
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("evaluate", overrides=["model=sentence_transformers", f"model.name='{out}'",
                                             f"paths.data_dir='{MINI_DATA}'"])
        bad = compose("evaluate", overrides=["model=sentence_transformers", f"model.name='{out}'",
                                             "scorer=softmax"])
    assert build_ranking_model(cfg).ranker.spec.name == "mean"
    with pytest.raises(ValueError, match="use scorer=mean"):
        build_ranking_model(bad)


def test_a_missing_model_is_one_clear_line(tmp_path):
    from uwe_lightning.io import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="model.name=.*could not be loaded as a sentence-transformers"):
        ranker_for(tmp_path / "nothing-here")


@pytest.mark.slow
def test_minilm_package_gives_our_numbers(tmp_path):
    """The MiniLM package's own sentence-transformers files, at our token limit, give our mean path's MAP."""
    from uwe_lightning.model.backbones import resolve_backbone

    try:
        path = resolve_backbone("minilm")
    except Exception as err:  # noqa: BLE001 -- no assembled model: nothing to compare
        pytest.skip(f"MiniLM not assembled ({err}); run `make models`")
    ours = uwe.Ranker.from_pretrained("minilm", scorer="mean", device="cpu")
    theirs = uwe.Ranker.from_model(load_model(ModelSpec("st", "sentence_transformers", path),
                                              max_length=ours.effective_max_length()), device="cpu")
    kw = {"tasks": ["JobNorm", "SkillExtr-H"], "split": "test", "max_queries": 100}
    from uwe_lightning.workbench.runner import evaluate_ranker

    a, b = evaluate_ranker(ours, **kw), evaluate_ranker(theirs, **kw)
    for task in kw["tasks"]:
        assert a["tasks"][task]["map"] == pytest.approx(b["tasks"][task]["map"], abs=1e-4)
