"""The ``torchmetrics`` Metrics (:mod:`uwe_lightning.workbench.retrieval`): the numbers of our kernel on random
cases, ``torchmetrics.retrieval``'s where the definitions agree, each documented difference, and the DDP sync
(2 gloo processes)."""

from __future__ import annotations

import math
import socket

import numpy as np
import pytest
import torch
from torchmetrics import MetricCollection
from torchmetrics.retrieval import RetrievalMAP, RetrievalPrecision, RetrievalRecall, RetrievalRPrecision

from uwe_lightning.workbench.metrics import RankingMetrics
from uwe_lightning.workbench.retrieval import (
    WorkBenchMAP,
    WorkBenchRetrieval,
    WorkBenchRPrecision,
    ranking_scores,
)

# Both sides sum the same float64 per-query values in the same order; what is left is float64 rounding, scaled to
# the value (tests/README.md: float64 references may stay tight).
F64_REL = 1e-12
# torchmetrics computes AP / precision in float32 (~1e-7 relative per term, a mean over <= 64 queries).
TM_REL = 1e-5


def random_case(seed: int, n_queries: int = 48, n_targets: int = 60, tied: bool = False):
    """Scores in (0.01, 1] (positive: torchmetrics' filter never applies), ragged positives: 0 to 20 per query
    (beyond k = 10), and a few excluded targets; ``tied`` rounds scores to 10 levels."""
    rng = np.random.default_rng(seed)
    scores = torch.from_numpy(rng.uniform(0.01, 1.0, (n_queries, n_targets)))
    if tied:
        scores = (scores * 10).ceil() / 10
    sizes = rng.choice([0, 1, 2, 3, 5, 10, 11, 20], size=n_queries)
    labels = [sorted(rng.choice(n_targets, size=int(s), replace=False).tolist()) for s in sizes]
    exclude = [sorted(rng.choice(n_targets, size=int(rng.integers(0, 3)), replace=False).tolist())
               for _ in range(n_queries)]
    return scores, labels, exclude


def dense(rows: list[list[int]], n_targets: int) -> torch.Tensor:
    out = torch.zeros(len(rows), n_targets, dtype=torch.bool)
    for i, row in enumerate(rows):
        out[i, row] = True
    return out


def blocks(n: int, size: int = 16):
    return [(start, min(start + size, n)) for start in range(0, n, size)]


@pytest.mark.parametrize("ties", ["first", "expected"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_numbers_as_our_kernel(seed, ties):
    scores, labels, exclude = random_case(seed, tied=True)
    ours, kernel = WorkBenchRetrieval(ks=(1, 10), ties=ties), RankingMetrics(ks=(1, 10), ties=ties)
    for start, stop in blocks(len(labels)):
        ours.update(scores[start:stop], labels[start:stop], exclude[start:stop])
        kernel.update(scores[start:stop], labels[start:stop], exclude[start:stop])
    got, want = ours.compute(), kernel.compute()
    assert 0 < want["map"] < 1 and want["n_skipped"] > 0  # a real case: some queries skipped, some ranked
    for name in ("map", "rp@1", "rp@10"):
        assert float(got[name]) == pytest.approx(want[name], rel=F64_REL), name
    assert int(ours.n_queries) == want["n_queries"] and int(ours.n_skipped) == want["n_skipped"]
    single_map, single_rp = WorkBenchMAP(ties=ties), WorkBenchRPrecision(10, ties=ties)
    for metric in (single_map, single_rp):
        metric.update(scores, labels, exclude)
    assert float(single_map.compute()) == pytest.approx(want["map"], rel=F64_REL)
    assert float(single_rp.compute()) == pytest.approx(want["rp@10"], rel=F64_REL)


def test_dense_relevance_and_exclusions_equal_the_ragged_lists():
    scores, labels, exclude = random_case(3)
    ragged, tensors = WorkBenchRetrieval(), WorkBenchRetrieval()
    ragged.update(scores, labels, exclude)
    tensors.update(scores, dense(labels, scores.shape[1]).long(), dense(exclude, scores.shape[1]))
    assert {k: float(v) for k, v in tensors.compute().items()} == {k: float(v) for k, v in ragged.compute().items()}


def test_a_full_ranking_gives_the_numbers_of_its_scores():
    scores, labels, _ = random_case(4)
    from_scores, from_ranking = WorkBenchRetrieval(), WorkBenchRetrieval()
    from_scores.update(scores, labels)
    from_ranking.update(ranking_scores(torch.argsort(scores, dim=1, descending=True)), labels)
    assert float(from_ranking.compute()["map"]) == float(from_scores.compute()["map"])
    with pytest.raises(ValueError, match="full ranking"):
        ranking_scores(torch.tensor([[3, 1]]))  # a top-2 list of 4 targets would be [3, 1] too
    with pytest.raises(ValueError, match="ranking_scores"):
        WorkBenchMAP().update(torch.tensor([[1, 0]]), [[0]])


def tm_update(metric, scores: torch.Tensor, labels: list[list[int]]):
    n_queries, n_targets = scores.shape
    indexes = torch.arange(n_queries).repeat_interleave(n_targets)
    metric.update(scores.flatten().float(), dense(labels, n_targets).flatten(), indexes=indexes)
    return float(metric.compute())


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_map_equals_torchmetrics_retrieval_map_with_empty_queries_skipped(seed):
    scores, labels, _ = random_case(seed)
    ours = WorkBenchMAP()
    ours.update(scores, labels)
    want = tm_update(RetrievalMAP(empty_target_action="skip"), scores, labels)
    assert float(ours.compute()) == pytest.approx(want, rel=TM_REL)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_rp10_is_recall_at_10_up_to_10_positives_and_precision_at_10_from_10_on(seed):
    scores, labels, _ = random_case(seed)
    few = [i for i, row in enumerate(labels) if 0 < len(row) <= 10]
    many = [i for i, row in enumerate(labels) if len(row) >= 10]
    assert few and many and any(len(labels[i]) > 10 for i in many)
    for rows, reference in ((few, RetrievalRecall(top_k=10)), (many, RetrievalPrecision(top_k=10))):
        ours = WorkBenchRPrecision(10)
        ours.update(scores[rows], [labels[i] for i in rows])
        want = tm_update(reference, scores[rows], [labels[i] for i in rows])
        assert float(ours.compute()) == pytest.approx(want, rel=TM_REL)


def test_rp10_is_not_torchmetrics_r_precision():
    """R-Precision cuts at |positives|, RP@10 at 10: 2 positives at ranks 1 and 5 give 1/2 and 2/2."""
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]])
    ours = WorkBenchRPrecision(10)
    ours.update(scores, [[0, 4]])
    assert float(ours.compute()) == 1.0
    assert tm_update(RetrievalRPrecision(), scores, [[0, 4]]) == 0.5


def test_queries_without_a_positive_are_skipped_not_counted_as_zero():
    scores, labels, _ = random_case(5)
    n_counted, n_all = sum(1 for row in labels if row), len(labels)
    assert n_counted < n_all
    ours = WorkBenchMAP()
    ours.update(scores, labels)
    torchmetrics_default = tm_update(RetrievalMAP(), scores, labels)  # empty_target_action="neg": AP 0 each
    assert torchmetrics_default == pytest.approx(float(ours.compute()) * n_counted / n_all, rel=TM_REL)
    none = WorkBenchRetrieval()
    none.update(scores[:2], [[], []])
    assert all(math.isnan(float(v)) for v in none.compute().values())  # no query counted: NaN, never a fake 0
    assert tm_update(RetrievalMAP(empty_target_action="skip"), scores[:2], [[], []]) == 0.0


def test_positives_scored_below_zero_count_here_but_not_in_torchmetrics():
    """Cosine scores may be negative: ours is shift-invariant, torchmetrics' AP drops positives scored <= 0."""
    scores = torch.tensor([[0.5, -0.1, -0.2]])
    ours, shifted = WorkBenchMAP(), WorkBenchMAP()
    ours.update(scores, [[0, 2]])
    shifted.update(scores + 1.0, [[0, 2]])
    assert float(ours.compute()) == pytest.approx((1 + 2 / 3) / 2, rel=F64_REL) == float(shifted.compute())
    assert tm_update(RetrievalMAP(), scores, [[0, 2]]) == 1.0  # positive 2 (score -0.2) left out of the mean
    assert tm_update(RetrievalMAP(), scores + 1.0, [[0, 2]]) == pytest.approx((1 + 2 / 3) / 2, rel=TM_REL)


def test_ties_rank_the_lower_index_first_or_count_in_expectation():
    """One positive tied with two other targets at the top: rank 2 under ``first`` (target 1 < 2 < 3), and
    the mean of 1, 1/2, 1/3 over the three places a random order can give it under ``expected``."""
    scores = torch.tensor([[0.1, 0.7, 0.7, 0.7]])
    first, expected = WorkBenchMAP(), WorkBenchMAP(ties="expected")
    for metric in (first, expected):
        metric.update(scores, [[2]])
    assert float(first.compute()) == 0.5
    assert float(expected.compute()) == pytest.approx((1 + 1 / 2 + 1 / 3) / 3, rel=F64_REL)


def test_a_metric_collection_ranks_once_for_map_and_rp():
    scores, labels, _ = random_case(6)
    collection = MetricCollection({"map": WorkBenchMAP(), "rp@10": WorkBenchRPrecision(10)})
    for start, stop in blocks(len(labels)):
        collection.update(scores[start:stop], labels[start:stop])
    assert collection.compute_groups == {0: ["map", "rp@10"]}  # equal states: one update serves both
    both = WorkBenchRetrieval()
    both.update(scores, labels)  # one block: the same per-query values summed in another grouping
    got = collection.compute()
    for name, value in both.compute().items():
        assert float(got[name]) == pytest.approx(float(value), rel=F64_REL), name


def test_states_are_sums_that_merge_like_ranks():
    """What DDP's sync does (every state ``sum``-reduced): two halves merged equal the whole."""
    scores, labels, exclude = random_case(7)
    whole, first, second = WorkBenchRetrieval(), WorkBenchRetrieval(), WorkBenchRetrieval()
    whole.update(scores, labels, exclude)
    first.update(scores[:20], labels[:20], exclude[:20])
    second.update(scores[20:], labels[20:], exclude[20:])
    assert set(whole._reductions) == {"n_queries", "n_skipped", "sum_ap", "sum_rp"}
    first.merge_state(second)
    for name, value in whole.compute().items():
        assert float(first.compute()[name]) == pytest.approx(float(value), rel=F64_REL), name


def test_bad_input_is_refused_naming_the_argument():
    metric = WorkBenchRetrieval()
    with pytest.raises(ValueError, match="relevance must hold 0/1"):
        metric.update(torch.rand(2, 3), torch.tensor([[0, 2, 0], [1, 0, 0]]))
    with pytest.raises(ValueError, match=r"relevance has shape \(2, 2\)"):
        metric.update(torch.rand(2, 3), torch.zeros(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="relevance has 1 rows"):
        metric.update(torch.rand(2, 3), [[0]])
    with pytest.raises(ValueError, match="outside"):
        metric.update(torch.rand(1, 3), [[3]])
    with pytest.raises(ValueError, match="ties must be one of"):
        WorkBenchMAP(ties="random")
    assert int(metric.n_queries) == 0  # nothing half-added


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    import os

    import torch.distributed as dist

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        scores, labels, exclude = random_case(8)
        rows = list(range(rank, len(labels), world))  # ranks hold different queries, as a DistributedSampler
        metric = WorkBenchRetrieval(ks=(1, 10))
        metric.update(scores[rows], [labels[i] for i in rows], [exclude[i] for i in rows])
        result = {k: float(v) for k, v in metric.compute().items()}
        local = int(metric.n_queries)  # compute() syncs, then restores the rank's own state
        torch.save({"result": result, "local": local}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_ddp_compute_syncs_the_states_of_two_gloo_ranks(tmp_path):
    import torch.multiprocessing as mp

    out = str(tmp_path / "rank")
    # fork: the children inherit the imported torch / torchmetrics (a spawn re-imports them)
    mp.start_processes(_ddp_worker, args=(2, _free_port(), out), nprocs=2, join=True, start_method="fork")
    ranks = [torch.load(f"{out}.{rank}") for rank in range(2)]
    scores, labels, exclude = random_case(8)
    single = WorkBenchRetrieval(ks=(1, 10))
    single.update(scores, labels, exclude)
    want = {k: float(v) for k, v in single.compute().items()}
    for rank in ranks:
        for name, value in want.items():
            assert rank["result"][name] == pytest.approx(value, rel=F64_REL), name
    assert sum(rank["local"] for rank in ranks) == int(single.n_queries) > max(rank["local"] for rank in ranks)
