"""The approximate prefilter: with every target as a candidate it gives exactly the full ranking (in memory and
memory-mapped); with fewer, its recall is what it is, and the bench measures it."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.tolerance import assert_close_to_scale
from tests.test_fast import token_list
from uwe_lightning.model.scoring import get_scorer
from uwe_lightning.ranking import fast, prefilter
from uwe_lightning.ranking.packed import EncodedTexts


class _Ranker:
    """The two things rank_prefiltered needs from a Ranker: its scorer and how it packs a query side."""

    def __init__(self, name: str) -> None:
        self.spec = get_scorer(name)

    def pooled(self, side: str) -> bool:
        return self.spec.pool_query if side == "query" else self.spec.pool_target

    def pack(self, tokens, side):
        return EncodedTexts.from_token_list(tokens, pooled=self.pooled(side), dtype=torch.float32)


def _space(n: int = 400, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 9, (n,), generator=gen).tolist()
    targets = EncodedTexts.from_token_list(token_list(lengths, hidden=32, seed=seed, centers=12), dtype=torch.float32)
    queries = token_list(torch.randint(2, 7, (15,), generator=gen).tolist(), hidden=32, seed=seed + 1, centers=12)
    return targets, queries


def _exact(name: str, targets: EncodedTexts, queries, k: int):
    ranker = _Ranker(name)
    scores = fast.score(fast.PreparedTargets.from_encoded(targets, "fp32"),
                        fast.query_groups(ranker.pack(queries, "query")), len(queries), name, ranker.spec.tau)
    return fast.topk_stable(scores, k)


def _pooled(targets: EncodedTexts) -> torch.Tensor:
    return fast.mean_pooled(targets, torch.arange(len(targets)))


@pytest.mark.parametrize("name", ["maxsim", "softmax"])
@pytest.mark.parametrize("backend", ["exact", "faiss_ivf"])
def test_all_candidates_give_the_exact_ranking(name, backend):
    if backend.startswith("faiss"):
        pytest.importorskip("faiss")
    targets, queries = _space()
    index = prefilter.Prefilter(_pooled(targets), backend, nlist=8, nprobe=8)  # every list probed
    got = prefilter.rank_prefiltered(_Ranker(name), queries, targets, index, k=10, candidates=len(targets))
    want = _exact(name, targets, queries, 10)
    assert torch.equal(got[1], want[1])
    assert_close_to_scale(got[0], want[0])


def test_mapped_targets_rescore_like_scoring_the_whole_file(tmp_path):
    """Candidates gathered from a mapped file (its fp16 unit tokens) score as the file scores in full."""
    targets, queries = _space(seed=3)
    mapped = fast.open_prepared(fast.save_prepared(tmp_path / "t.safetensors", targets, with_pooled_vectors=True))
    try:
        ranker = _Ranker("maxsim")
        index = prefilter.Prefilter(mapped.pooled_vectors, "exact")
        got = prefilter.rank_prefiltered(ranker, queries, mapped, index, k=5, candidates=len(targets))
        full = fast.score(mapped, fast.query_groups(ranker.pack(queries, "query")), len(queries), "maxsim")
        want = fast.topk_stable(full, 5)
        assert torch.equal(got[1], want[1])
        assert_close_to_scale(got[0], want[0])
    finally:
        mapped.close()


@pytest.mark.parametrize("backend", ["faiss_ivf", "faiss_hnsw", "usearch"])
def test_approximate_backends_find_most_of_the_exact_pooled_neighbours(backend):
    pytest.importorskip("usearch" if backend == "usearch" else "faiss")
    """The approximate index finds most of the exact pooled neighbours (how many token-level top-10 targets
    they contain depends on the data: the bench measures it)."""
    targets, queries = _space(n=2000, seed=5)
    index = prefilter.Prefilter(_pooled(targets), backend, nlist=16, nprobe=8)
    assert index.memory_bytes() > 0 and index.build_seconds >= 0
    pooled_queries = prefilter.pooled_query_vectors(queries)
    found = index.search(pooled_queries, 100)
    exact = prefilter.Prefilter(_pooled(targets), "exact").search(pooled_queries, 100)
    recall = sum(len(set(a) & set(b)) for a, b in zip(found.tolist(), exact.tolist(), strict=True)) / exact.numel()
    assert recall >= 0.8
    scores, ranked = prefilter.rank_prefiltered(_Ranker("maxsim"), queries, targets, index, k=10, candidates=100)
    assert ranked.shape == (len(queries), 10) and bool((scores[:, :-1] >= scores[:, 1:]).all())


def test_pooled_scorers_and_unknown_backends_are_refused():
    targets, queries = _space(n=20)
    with pytest.raises(ValueError, match="pools the targets"):
        prefilter.rank_prefiltered(_Ranker("mean"), queries, targets, prefilter.Prefilter(_pooled(targets), "exact"))
    with pytest.raises(ValueError, match="must be one of"):
        prefilter.Prefilter(_pooled(targets), "annoy")
