"""Ranker: bucketed scoring equals brute force for every scorer and direction; packing; the disk cache; errors."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from tests.helpers.configs import rank_cfg as _rank_cfg
from tests.helpers.models import build_tiny_model
from tests.helpers.tolerance import assert_close_to_scale
from uwe_lightning.model.encoder import TokenEmbeddings
from uwe_lightning.model.scoring import get_scorer
from uwe_lightning.ranking import cache as cache_lib
from uwe_lightning.ranking.packed import EncodedTexts, plan_buckets
from uwe_lightning.ranking.ranker import CacheMismatchError, Ranker, padded_scores

SCORERS = ("mean", "maxsim", "softmax_ymean", "softmax")
JOBS = [
    "software engineer", "nurse", "truck driver", "chef", "sales manager", "teacher",
    "data engineer python sql", "construction safety project manager", "customer service lead",
]
SKILLS = [
    "python", "java", "sql", "manage team", "develop software", "care for patient", "teach",
    "drive truck", "cook food", "customer service", "analyse data and report", "plan project",
    "build construction safety plan", "marketing", "lead sales team", "manage", "data",
]




@pytest.fixture(scope="module")
def tiny_ranker(tiny_model_dir: Path) -> Ranker:
    """fp32 storage on the fast path, so that scores equal the reference within float32 rounding (fp16:
    tests/test_fast.py)."""
    return Ranker.from_pretrained(str(tiny_model_dir), scorer="mean", device="cpu", precision="fp32")


def with_scorer(base: Ranker, scorer: str, **kw) -> Ranker:
    """Same encoder, another scorer (and settings)."""
    ranker = base.with_scorer(scorer, **kw)
    assert ranker.encoder is base.encoder and ranker.model_dir == base.model_dir
    return ranker


def brute_force(ranker: Ranker, queries: list[str], targets: list[str]) -> torch.Tensor:
    """All pairs with everything padded at once, from the raw fp32 token embeddings (no packing, no pooling)."""
    def padded(texts: list[str]) -> TokenEmbeddings:
        toks = ranker.embed(texts)
        width = max(t.shape[0] for t in toks)
        emb = torch.zeros(len(toks), width, toks[0].shape[1])
        mask = torch.zeros(len(toks), width, dtype=torch.bool)
        for i, t in enumerate(toks):
            emb[i, : len(t)], mask[i, : len(t)] = t, True
        return TokenEmbeddings(emb, mask)

    return ranker.spec.fn(padded(queries), padded(targets))


def assert_topk_matches(scores: torch.Tensor, index: torch.Tensor, reference: torch.Tensor, k: int,
                        atol: float | None = None):
    """Same top-k as ``torch.topk(reference)`` up to ties: the values agree, and each returned index really
    has the returned score under the reference. ``atol``: an absolute bound (fp16 storage); by default the
    fp32 reordering bound on the scores' own scale (:mod:`tests.helpers.tolerance`)."""
    ref_values, _ = torch.topk(reference, k, dim=1)
    check = ((lambda a, b: torch.testing.assert_close(a, b, atol=atol, rtol=0)) if atol is not None
             else assert_close_to_scale)
    check(scores, ref_values)
    check(reference.gather(1, index), scores)
    assert (scores[:, :-1] >= scores[:, 1:]).all()


@pytest.mark.parametrize("scorer", SCORERS)
@pytest.mark.parametrize("direction", ["job2skill", "skill2job"])
@pytest.mark.parametrize("settings", [
    {},  # defaults: the fast path, one tile per length
    {"tile_tokens": 3, "tile_elements": 8},  # the fast path in tiny tiles, one query row per step
    {"fast": False},  # the reference path: one block, few buckets
    {"fast": False, "max_elements": 50, "bucket_min_size": 1, "bucket_max_padding": 0.0},  # exact buckets, tiny chunks
    {"fast": False, "target_chunk_elements": 100, "bucket_max_padding": 0.5},  # 1-3 targets per call, padding
])
def test_rank_equals_brute_force(tiny_ranker, scorer, direction, settings):
    ranker = with_scorer(tiny_ranker, scorer, **settings)
    queries, targets = (JOBS, SKILLS) if direction == "job2skill" else (SKILLS, JOBS)
    space = ranker.index(targets)
    k = 5
    scores, index = ranker.rank(queries, space, k=k, block_size=4)
    assert scores.shape == index.shape == (len(queries), k)
    # Against the raw fp32 embeddings: only fp16 storage differs.
    assert_topk_matches(scores, index, brute_force(ranker, queries, targets).float(), k, atol=2e-3)  # fp16: ~2 ulp at 1
    # Against the same stored values padded all at once: bucketing/chunking changes nothing.
    encoded_queries = ranker.encode(queries, "query")
    assert_topk_matches(scores, index, padded_scores(ranker, encoded_queries, space), k)
    full = torch.cat([block for _, block in ranker.score_blocks(encoded_queries, space, block_size=4)])
    assert_close_to_scale(full, padded_scores(ranker, encoded_queries, space))


def test_score_blocks_yields_consecutive_blocks(tiny_ranker):
    ranker = with_scorer(tiny_ranker, "softmax")
    q, y = ranker.encode(JOBS, "query"), ranker.encode(SKILLS, "target")
    blocks = list(ranker.score_blocks(q, y, block_size=4))
    assert [start for start, _ in blocks] == [0, 4, 8]
    assert [tuple(b.shape) for _, b in blocks] == [(4, len(SKILLS)), (4, len(SKILLS)), (1, len(SKILLS))]


def test_directions_differ_for_asymmetric_scorer(tiny_ranker):
    """skills -> jobs is not the transpose of jobs -> skills for softmax (the softmax runs over the target)."""
    ranker = with_scorer(tiny_ranker, "softmax")
    forward = padded_scores(ranker, ranker.encode(JOBS, "query"), ranker.encode(SKILLS, "target"))
    backward = padded_scores(ranker, ranker.encode(SKILLS, "query"), ranker.encode(JOBS, "target"))
    assert not torch.allclose(forward, backward.T, atol=1e-4)
    mean = with_scorer(tiny_ranker, "mean")
    assert_close_to_scale(
        padded_scores(mean, mean.encode(JOBS, "query"), mean.encode(SKILLS, "target")),
        padded_scores(mean, mean.encode(SKILLS, "query"), mean.encode(JOBS, "target")).T)


def test_k_is_capped_and_exact_match_scores_one(tiny_ranker):
    ranker = with_scorer(tiny_ranker, "maxsim")
    space = ranker.index(SKILLS)
    scores, index = ranker.rank(["python", "cook food"], space, k=100)
    assert scores.shape == (2, len(SKILLS))
    assert sorted(index[0].tolist()) == list(range(len(SKILLS)))
    for row, text in enumerate(["python", "cook food"]):
        self_score = scores[row, index[row].tolist().index(SKILLS.index(text))]
        assert abs(float(self_score) - 1.0) < 2e-3  # every query token finds itself: cosine 1


# ---------------------------------------------------------------------------------------------------------
# Packing, select, buckets
# ---------------------------------------------------------------------------------------------------------


def _token_list(lengths, hidden=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, hidden, generator=gen) for n in lengths]


def test_pack_layout_and_round_trip():
    toks = _token_list([3, 1, 4, 1, 5])
    enc = EncodedTexts.from_token_list(toks, dtype=torch.float32)
    assert len(enc) == 5 and enc.offsets.tolist() == [0, 3, 4, 8, 9, 14] and enc.tokens.shape == (14, 4)
    padded = enc.to_token_embeddings()
    assert padded.embeddings.shape == (5, 5, 4)
    assert padded.mask.sum(1).tolist() == [3, 1, 4, 1, 5]
    for i, t in enumerate(toks):
        torch.testing.assert_close(padded.embeddings[i, : len(t)], t)
        assert (padded.embeddings[i, len(t):] == 0).all()
    picked = enc.select([4, 0, 0])
    assert picked.offsets.tolist() == [0, 5, 8, 11]
    torch.testing.assert_close(picked.tokens, torch.cat([toks[4], toks[0], toks[0]]))
    sub = enc.to_token_embeddings(rows=[1, 2])
    assert sub.embeddings.shape == (2, 4, 4)
    torch.testing.assert_close(sub.embeddings[1], toks[2])


def test_pack_pooled_is_mean_and_fp16():
    toks = _token_list([3, 2])
    enc = EncodedTexts.from_token_list(toks, pooled=True)
    assert enc.tokens.dtype == torch.float16 and enc.offsets.tolist() == [0, 1, 2]
    torch.testing.assert_close(enc.tokens.float(), torch.stack([t.mean(0) for t in toks]), atol=1e-3, rtol=0)


def test_buckets_cover_every_row_once():
    lengths = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3]
    toks = _token_list(lengths)
    enc = EncodedTexts.from_token_list(toks, dtype=torch.float32)
    for min_size, max_padding in [(1, 0.0), (3, 0.0), (1, 0.5), (100, 0.0)]:
        buckets = enc.buckets(min_size=min_size, max_padding=max_padding)
        rows = torch.cat([b.rows for b in buckets])
        assert sorted(rows.tolist()) == list(range(len(lengths)))
        for b in buckets:
            for j, row in enumerate(b.rows.tolist()):
                n = lengths[row]
                torch.testing.assert_close(b.tokens.embeddings[j, :n], toks[row])
                assert b.tokens.mask[j].sum() == n
    exact = enc.buckets(min_size=1, max_padding=0.0)
    assert len(exact) == len(set(lengths)) and all(b.tokens.mask.all() for b in exact)  # dense, no padding
    assert enc.buckets(min_size=1, max_padding=0.0) is exact  # built once, reused
    assert len(enc.buckets(min_size=100, max_padding=0.0)) == 1


def test_plan_buckets_respects_padding_budget():
    lengths = torch.tensor([2] * 10 + [3] * 10 + [10] * 10)
    groups = plan_buckets(lengths, min_size=1, max_padding=0.25)
    assert [sorted(lengths[g].unique().tolist()) for g in groups] == [[2, 3], [10]]  # 2+3: 10 pads on 50 real
    assert plan_buckets(torch.tensor([], dtype=torch.int64)) == []


def test_bad_packed_layout_is_rejected():
    with pytest.raises(ValueError, match="no token embeddings"):
        EncodedTexts.from_token_list([torch.zeros(0, 4)])
    with pytest.raises(cache_lib.CacheError, match="offsets run"):
        EncodedTexts(torch.zeros(5, 4), torch.tensor([0, 2, 4]))
    with pytest.raises(IndexError):
        EncodedTexts.from_token_list(_token_list([2, 2])).select([2])


# ---------------------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------------------


def _forbid_encoding(ranker: Ranker, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the encoder ran although the cache should have been used")

    monkeypatch.setattr(ranker.encoder, "encode", fail)


def test_cache_hit_loads_identical_tensors(tiny_ranker, tmp_path, monkeypatch):
    ranker = with_scorer(tiny_ranker, "softmax")
    first = ranker.index(SKILLS, cache_dir=tmp_path)
    assert not ranker.last_index_hit and ranker.last_index_path.is_file()
    _forbid_encoding(ranker, monkeypatch)
    second = ranker.index(SKILLS, cache_dir=tmp_path)
    assert ranker.last_index_hit
    assert torch.equal(first.tokens, second.tokens) and torch.equal(first.offsets, second.offsets)
    assert second.tokens.dtype == torch.float16
    # maxsim stores the same tensors (token level, same model): it reuses the file
    with_maxsim = with_scorer(tiny_ranker, "maxsim")
    _forbid_encoding(with_maxsim, monkeypatch)
    with_maxsim.index(SKILLS, cache_dir=tmp_path)
    assert with_maxsim.last_index_hit
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave nothing behind


@pytest.mark.parametrize("change", ["texts", "order", "pooling", "max_length"])
def test_cache_key_changes_invalidate(tiny_ranker, tmp_path, change):
    ranker = with_scorer(tiny_ranker, "softmax")
    ranker.index(SKILLS, cache_dir=tmp_path)
    texts = SKILLS
    if change == "texts":
        texts = SKILLS[:-1] + ["a different skill"]
    elif change == "order":
        texts = SKILLS[::-1]
    elif change == "pooling":
        ranker = with_scorer(tiny_ranker, "softmax_ymean")  # pools the target side
    else:
        ranker = with_scorer(tiny_ranker, "softmax", max_length=4)
    encoded = ranker.index(texts, cache_dir=tmp_path)
    assert not ranker.last_index_hit
    assert len(list(tmp_path.glob("targets-*.safetensors"))) == 2
    assert encoded.pooled == (change == "pooling")
    if change == "max_length":
        assert int(encoded.lengths.max()) == 4


def test_cache_model_change_invalidates(tiny_model_dir, tmp_path):
    other_dir = build_tiny_model(tmp_path / "other-model", seed=1)
    cache_dir = tmp_path / "cache"
    first = Ranker.from_pretrained(str(tiny_model_dir), scorer="maxsim", device="cpu")
    second = Ranker.from_pretrained(str(other_dir), scorer="maxsim", device="cpu")
    a = first.index(SKILLS, cache_dir=cache_dir)
    b = second.index(SKILLS, cache_dir=cache_dir)
    assert not second.last_index_hit and first.last_index_path != second.last_index_path
    assert not torch.equal(a.tokens, b.tokens)
    # Rewriting the weights of a directory (new bytes, new mtime) changes its identity.
    copy_dir = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy_dir)
    before = cache_lib.model_fingerprint(copy_dir)
    shutil.copy2(other_dir / "model.safetensors", copy_dir / "model.safetensors")
    assert cache_lib.model_fingerprint(copy_dir) != before


def test_in_memory_encoder_is_keyed_by_its_weights(tiny_ranker, tmp_path):
    ranker = Ranker(tiny_ranker.encoder, scorer="mean", device="cpu")  # no directory, no model_id
    key = ranker.cache_key(SKILLS)
    assert key.model.startswith("state-sha256:")
    with torch.no_grad():
        param = next(ranker.encoder.parameters())
        param.add_(1.0)
        try:
            assert ranker.cache_key(SKILLS).model != key.model
        finally:
            param.sub_(1.0)
    assert Ranker(tiny_ranker.encoder, device="cpu", model_id="run-7/step-50").cache_key(SKILLS).model == "id:run-7/step-50"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "foreign_key", "bad_offsets"])
def test_corrupt_cache_is_rebuilt_with_warning(tiny_ranker, tmp_path, damage):
    ranker = with_scorer(tiny_ranker, "maxsim")
    good = ranker.index(SKILLS, cache_dir=tmp_path)
    path = ranker.last_index_path
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "garbage":
        path.write_bytes(b"not a safetensors file at all")
    elif damage == "foreign_key":
        other = ranker.index(JOBS, cache_dir=tmp_path)
        shutil.copy2(ranker.last_index_path, path)
        assert len(other) == len(JOBS)
    else:
        key = ranker.cache_key(SKILLS)
        bad = good.offsets.clone()
        bad[3] = bad[4] + 1  # a text with a negative length
        from safetensors.torch import save_file

        meta = {"uwe_target_cache": json.dumps({"key": key.as_dict()})}
        save_file({"tokens": good.tokens, "offsets": bad}, str(path), metadata=meta)
    with pytest.warns(UserWarning, match="target-space cache rebuilt"):
        rebuilt = ranker.index(SKILLS, cache_dir=tmp_path)
    assert not ranker.last_index_hit
    assert torch.equal(rebuilt.tokens, good.tokens) and torch.equal(rebuilt.offsets, good.offsets)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ranker.index(SKILLS, cache_dir=tmp_path)  # the rebuilt file is fine again
    assert ranker.last_index_hit


def test_fingerprint_memo_on_disk(tiny_model_dir, tmp_path):
    cache_lib._memo.clear()
    first = cache_lib.model_fingerprint(tiny_model_dir, tmp_path)
    memo = json.loads((tmp_path / "model_fingerprints.json").read_text())
    assert memo[str(Path(tiny_model_dir).resolve())]["sha256"] == first
    cache_lib._memo.clear()
    assert cache_lib.model_fingerprint(tiny_model_dir, tmp_path) == first


def test_texts_sha256_is_order_and_boundary_sensitive():
    assert cache_lib.texts_sha256(["ab", "c"]) != cache_lib.texts_sha256(["a", "bc"])
    assert cache_lib.texts_sha256(["a", "b"]) != cache_lib.texts_sha256(["b", "a"])
    assert cache_lib.texts_sha256(["a", "b"]) == cache_lib.texts_sha256(("a", "b"))


# ---------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------


def test_empty_inputs_are_clear_errors(tiny_ranker):
    space = tiny_ranker.index(SKILLS)
    with pytest.raises(ValueError, match="empty queries list"):
        tiny_ranker.rank([], space)
    with pytest.raises(ValueError, match=r"queries\[1\] is an empty text"):
        tiny_ranker.rank(["nurse", "  "], space)
    with pytest.raises(ValueError, match="empty targets list"):
        tiny_ranker.index([])
    with pytest.raises(TypeError, match="single string"):
        tiny_ranker.index("python")
    with pytest.raises(ValueError, match="k must be"):
        tiny_ranker.rank(["nurse"], space, k=0)


def test_wrong_model_for_explicit_cache_file(tiny_model_dir, tmp_path):
    other_dir = build_tiny_model(tmp_path / "other-model", seed=2)
    cache_file = tmp_path / "skills.safetensors"
    Ranker.from_pretrained(str(tiny_model_dir), scorer="softmax", device="cpu").index(SKILLS, cache_file=cache_file)
    other = Ranker.from_pretrained(str(other_dir), scorer="softmax", device="cpu")
    with pytest.raises(CacheMismatchError, match="model"):
        other.index(SKILLS, cache_file=cache_file)
    pooled = Ranker.from_pretrained(str(tiny_model_dir), scorer="mean", device="cpu")
    with pytest.raises(CacheMismatchError, match="pooled"):
        pooled.index(SKILLS, cache_file=cache_file)
    same = Ranker.from_pretrained(str(tiny_model_dir), scorer="maxsim", device="cpu")
    same.index(SKILLS, cache_file=cache_file)
    assert same.last_index_hit


def test_targets_of_another_model_or_pooling_are_refused(tiny_ranker, tiny_model_dir, tmp_path):
    softmax = with_scorer(tiny_ranker, "softmax")
    mean_space = tiny_ranker.index(SKILLS)  # pooled
    with pytest.raises(ValueError, match="target side is pooled"):
        softmax.rank(["nurse"], mean_space)
    other = Ranker.from_pretrained(str(build_tiny_model(tmp_path / "m", seed=3)), scorer="softmax", device="cpu")
    with pytest.raises(ValueError, match="another model"):
        softmax.rank(["nurse"], other.index(SKILLS))
    with pytest.raises(TypeError, match="EncodedTexts"):
        softmax.rank(["nurse"], SKILLS)


# ---------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------


def test_from_pretrained_reads_uwe_json(tiny_model_dir, tmp_path):
    export = tmp_path / "export"
    shutil.copytree(tiny_model_dir, export)
    (export / "uwe.json").write_text(json.dumps({"scorer": "softmax", "tau": 0.3, "max_length": 16}))
    ranker = Ranker.from_pretrained(str(export), device="cpu")
    assert (ranker.spec.name, ranker.spec.tau, ranker.max_length) == ("softmax", 0.3, 16)
    explicit = Ranker.from_pretrained(str(export), scorer="maxsim", device="cpu", max_length=8)
    assert (explicit.spec.name, explicit.spec.tau, explicit.max_length) == ("maxsim", None, 8)
    assert Ranker.from_pretrained(str(export), scorer="softmax", tau=0.05, device="cpu").spec.tau == 0.05
    assert Ranker.from_pretrained(str(tiny_model_dir), device="cpu").spec.name == "mean"
    (export / "uwe.json").write_text("{not json")
    with pytest.raises(ValueError, match="uwe.json"):
        Ranker.from_pretrained(str(export), device="cpu")


def test_scorer_spec_matches_ranker_pooling(tiny_ranker):
    for name in SCORERS:
        spec = get_scorer(name)
        ranker = with_scorer(tiny_ranker, name)
        assert ranker.encode(["python"], "query").pooled == spec.pool_query
        assert ranker.encode(["python"], "target").pooled == spec.pool_target


# ---------------------------------------------------------------------------------------------------------
# python -m uwe_lightning.rank
# ---------------------------------------------------------------------------------------------------------


def test_rank_cli_file_targets_writes_json_and_caches(tiny_model_dir, tmp_path, capsys):
    from uwe_lightning.cli.rank import run

    targets_file = tmp_path / "targets.txt"
    targets_file.write_text("\n".join(SKILLS[:6]) + "\n\n")
    queries_file = tmp_path / "queries.txt"
    queries_file.write_text("teacher\n")
    cfg = _rank_cfg(tiny_model_dir, tmp_path, "targets=file", f"targets_file={targets_file}", "queries=[python]",
                    f"queries_file={queries_file}", "k=3", "scorer=softmax")
    report = run(cfg, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "rankings.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert [r["query"] for r in saved["results"]] == ["python", "teacher"]
    assert saved["scorer"] == "softmax" and saved["targets"]["n"] == 6 and not saved["targets"]["cache_hit"]
    top = saved["results"][0]["top"]
    assert [t["rank"] for t in top] == [1, 2, 3] and top[0]["score"] >= top[1]["score"] >= top[2]["score"]
    assert all(t["text"] == SKILLS[t["index"]] and t["id"] == f"line:{t['index'] + 1}" for t in top)
    # Same scores as the Ranker API.
    ranker = Ranker.from_pretrained(str(tiny_model_dir), scorer="softmax", device="cpu")
    scores, index = ranker.rank(["python"], ranker.index(SKILLS[:6]), k=3)
    assert [t["index"] for t in top] == index[0].tolist()
    assert "query: python" in capsys.readouterr().out
    assert run(cfg, tmp_path / "run2")["targets"]["cache_hit"]


def test_rank_cli_bad_input(tiny_model_dir, tmp_path):
    from uwe_lightning.cli.rank import run
    from uwe_lightning.io import DataError

    targets_file = tmp_path / "targets.txt"
    targets_file.write_text("python\njava\n")
    with pytest.raises(ValueError, match="no queries"):
        run(_rank_cfg(tiny_model_dir, tmp_path, "targets=file", f"targets_file={targets_file}"), tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(DataError, match="holds no text"):
        run(_rank_cfg(tiny_model_dir, tmp_path, "targets=file", f"targets_file={empty}", "queries=[a]"), tmp_path)
    with pytest.raises(ValueError, match="targets_file"):
        run(_rank_cfg(tiny_model_dir, tmp_path, "targets=file", "queries=[a]"), tmp_path)
    with pytest.raises(ValueError, match="targets must be one of"):
        run(_rank_cfg(tiny_model_dir, tmp_path, "targets=skills", "queries=[a]"), tmp_path)
    cache_file = tmp_path / "space.safetensors"
    run(_rank_cfg(tiny_model_dir, tmp_path, "targets=file", f"targets_file={targets_file}", "queries=[a]",
                  f"cache_file={cache_file}"), tmp_path)
    other = build_tiny_model(tmp_path / "other", seed=5)
    with pytest.raises(CacheMismatchError, match="does not belong to this model"):
        run(_rank_cfg(other, tmp_path, "targets=file", f"targets_file={targets_file}", "queries=[a]",
                      f"cache_file={cache_file}"), tmp_path)
