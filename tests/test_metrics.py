"""Parity of our vectorised MAP / RP@k with workrb's reference, plus block, exclude, error and macro checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import workrb.metrics.ranking as workrb_ranking
from workrb.metrics.ranking import calculate_ranking_metrics

from uwe_lightning.workbench.metrics import RankingMetrics, macro_average, ranking_metrics

KS = (1, 5, 10)
REFERENCE_METRICS = ("map",) + tuple(f"rp@{k}" for k in KS)


class _StableArgsortNumpy:
    """numpy for workrb's module, with argsort made stable.

    workrb ranks with ``np.argsort(-scores)``, numpy's default quicksort, which is not stable: on CPUs with
    AVX-512 it is a SIMD sort that reorders equal scores, so under ties the reference itself depends on
    the machine. Our metrics define ties as "lower target index first", i.e. a stable argsort; patching
    only workrb's module (not numpy) makes the reference deterministic and equal to that definition.
    """

    def __getattr__(self, name: str):
        return getattr(np, name)

    @staticmethod
    def argsort(a, axis=-1, kind=None, order=None):
        return np.argsort(a, axis=axis, kind="stable", order=order)


@pytest.fixture
def stable_workrb(monkeypatch):
    monkeypatch.setattr(workrb_ranking, "np", _StableArgsortNumpy())


def random_labels(rng: np.random.Generator, n_queries: int, n_targets: int, kind: str) -> list[list[int]]:
    """Per-query positives: 'single' = one each; 'mixed' = 0, 1 or several (up to 15, beyond k=10)."""
    if kind == "single":
        return [[int(t)] for t in rng.integers(0, n_targets, n_queries)]
    sizes = rng.choice([0, 1, 1, 2, 3, 12, 15], size=n_queries)
    return [sorted(rng.choice(n_targets, size=min(int(s), n_targets), replace=False).tolist()) for s in sizes]


def assert_matches_reference(ours: dict, reference: dict, labels: list[list[int]]) -> None:
    for name in REFERENCE_METRICS:
        assert ours[name] == pytest.approx(reference[name], abs=1e-6), name
    assert ours["n_queries"] == sum(1 for row in labels if row)
    assert ours["n_skipped"] == sum(1 for row in labels if not row)


SHAPES = [(1, 1), (7, 3), (40, 25), (200, 500), (64, 2000)]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["single", "mixed"])
def test_parity_with_ties(stable_workrb, seed, shape, kind):
    rng = np.random.default_rng(seed)
    n_queries, n_targets = shape
    scores = torch.from_numpy(rng.integers(0, 4, size=shape).astype(np.float32))  # heavily tied
    labels = random_labels(rng, n_queries, n_targets, kind)
    if not any(labels):
        labels[0] = [0]
    ours = ranking_metrics(scores, labels, chunk_size=17, ks=KS)
    reference = calculate_ranking_metrics(scores.numpy(), labels, metrics=REFERENCE_METRICS)
    assert_matches_reference(ours, reference, labels)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["single", "mixed"])
def test_parity_without_ties_unpatched_workrb(seed, shape, kind):
    rng = np.random.default_rng(seed)
    n_queries, n_targets = shape
    # Distinct integer parts (a permutation per row) plus noise: float scores, tie-free by construction.
    permutations = rng.permuted(np.tile(np.arange(n_targets), (n_queries, 1)), axis=1)
    scores = (permutations + 0.5 * rng.random(shape)).astype(np.float32)
    assert all(len(np.unique(row)) == n_targets for row in scores), "test needs tie-free rows"
    labels = random_labels(rng, n_queries, n_targets, kind)
    if not any(labels):
        labels[0] = [0]
    ours = ranking_metrics(torch.from_numpy(scores), labels, chunk_size=33, ks=KS)
    reference = calculate_ranking_metrics(scores, labels, metrics=REFERENCE_METRICS)
    assert_matches_reference(ours, reference, labels)


def test_ties_rank_lower_index_first():
    # Row of equal scores: positive t is at rank t + 1, so AP = 1 / (t + 1).
    scores = torch.zeros(3, 6)
    m = ranking_metrics(scores, [[0], [2], [5]], ks=(1, 3))
    assert m["map"] == pytest.approx((1 + 1 / 3 + 1 / 6) / 3)
    assert m["rp@1"] == pytest.approx(1 / 3)
    assert m["rp@3"] == pytest.approx(2 / 3)


def test_multi_label_hand_computed():
    # Ranking 4, 1, 3, 0, 2 (scores descending); positives 1, 0, 2 at ranks 2, 4, 5.
    scores = torch.tensor([[0.2, 0.8, 0.1, 0.5, 0.9]])
    m = ranking_metrics(scores, [[2, 1, 0]], ks=(1, 2, 10))
    assert m["map"] == pytest.approx((1 / 2 + 2 / 4 + 3 / 5) / 3)
    assert m["rp@1"] == 0.0
    assert m["rp@2"] == pytest.approx(1 / 2)
    assert m["rp@10"] == pytest.approx(1.0)


def test_duplicate_labels_count_once():
    scores = torch.tensor([[0.1, 0.9, 0.5]])
    assert ranking_metrics(scores, [[2, 2, 0]]) == ranking_metrics(scores, [[0, 2]])


@pytest.mark.parametrize("chunk_size", [1, 3, 50, 1000])
def test_chunked_equals_unchunked(chunk_size):
    rng = np.random.default_rng(5)
    scores = torch.from_numpy(rng.integers(0, 6, size=(123, 300)).astype(np.float32))
    labels = random_labels(rng, 123, 300, "mixed")
    whole = ranking_metrics(scores, labels, chunk_size=123, ks=KS)
    chunked = ranking_metrics(scores, labels, chunk_size=chunk_size, ks=KS)
    assert chunked.keys() == whole.keys()
    for name, value in whole.items():
        assert chunked[name] == pytest.approx(value, abs=1e-12), name


def test_uneven_updates_and_small_internal_steps_agree(monkeypatch):
    rng = np.random.default_rng(6)
    scores = torch.from_numpy(rng.integers(0, 3, size=(60, 80)).astype(np.float32))
    labels = random_labels(rng, 60, 80, "mixed")
    expected = ranking_metrics(scores, labels, ks=KS)
    # Force the internal comparison steps down to one positive at a time.
    monkeypatch.setattr("uwe_lightning.workbench.metrics.CPU_STEP_ELEMENTS", 1)
    metrics = RankingMetrics(KS)
    for start, stop in [(0, 1), (1, 30), (30, 31), (31, 60)]:
        metrics.update(scores[start:stop], labels[start:stop])
    got = metrics.compute()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes_agree_on_exactly_representable_scores(dtype):
    rng = np.random.default_rng(7)
    scores = torch.from_numpy(rng.integers(-8, 8, size=(30, 50)).astype(np.float32))
    labels = random_labels(rng, 30, 50, "mixed")
    assert ranking_metrics(scores.to(dtype), labels, ks=KS) == ranking_metrics(scores, labels, ks=KS)


@pytest.mark.parametrize("seed", [0, 1])
def test_exclude_equals_removing_the_columns(stable_workrb, seed):
    rng = np.random.default_rng(seed)
    n_queries, n_targets = 40, 30
    scores = rng.integers(0, 4, size=(n_queries, n_targets)).astype(np.float32)
    labels = random_labels(rng, n_queries, n_targets, "mixed")
    exclude = [
        sorted(rng.choice(n_targets, size=int(rng.integers(0, 5)), replace=False).tolist()) for _ in labels
    ]
    exclude[0] = list(labels[0][:1])  # an excluded positive is no longer a positive
    # Per query: drop the excluded columns, re-index the remaining labels, score that one row with workrb.
    per_query = []
    for row, positives, excluded in zip(scores, labels, exclude, strict=True):
        kept = [t for t in range(n_targets) if t not in excluded]
        new_index = {t: i for i, t in enumerate(kept)}
        kept_positives = [new_index[t] for t in positives if t in new_index]
        if kept_positives:
            per_query.append(
                calculate_ranking_metrics(row[None, kept], [kept_positives], metrics=REFERENCE_METRICS)
            )
    excluded_scores = torch.from_numpy(scores).clone()
    for row, excluded in enumerate(exclude):
        excluded_scores[row, excluded] = float("nan")  # excluded targets may hold anything
    ours = ranking_metrics(excluded_scores, labels, exclude=exclude, chunk_size=7, ks=KS)

    assert ours["n_queries"] == len(per_query)
    assert ours["n_skipped"] == n_queries - len(per_query)
    for name in REFERENCE_METRICS:
        assert ours[name] == pytest.approx(np.mean([ref[name] for ref in per_query]), abs=1e-6), name


def test_exclude_self_in_square_matrix():
    # SkillSim-like: each query is also target i and scores itself highest; excluding it restores the ranking.
    scores = torch.tensor([[9.0, 0.5, 0.7], [0.1, 9.0, 0.8], [0.3, 0.6, 9.0]])
    labels = [[1], [2], [0]]
    m = ranking_metrics(scores, labels, exclude=[[0], [1], [2]], ks=(1,))
    assert m["map"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert m["rp@1"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_scores_raise_with_rows(bad):
    scores = torch.rand(6, 4)
    scores[2, 1] = bad
    scores[5, 0] = bad
    scores[5, 3] = bad
    metrics = RankingMetrics()
    metrics.update(torch.rand(10, 4), [[0]] * 10)
    with pytest.raises(
        ValueError, match=r"3 non-finite value\(s\).*2 row\(s\).*block rows \[2, 5\].*query 12"
    ):
        metrics.update(scores, [[0]] * 6)


def test_bad_input_errors():
    scores = torch.rand(3, 4)
    with pytest.raises(ValueError, match=r"labels: 1 index\(es\) outside \[0, 4\) in block row\(s\) \[1\]"):
        ranking_metrics(scores, [[0], [4], [1]])
    with pytest.raises(ValueError, match="labels has 2 rows"):
        ranking_metrics(scores, [[0], [1]])
    with pytest.raises(ValueError, match="exclude has 1 rows"):
        RankingMetrics().update(scores, [[0], [1], [2]], exclude=[[0]])
    with pytest.raises(ValueError, match="float tensor"):
        ranking_metrics(torch.ones(3, 4, dtype=torch.long), [[0], [1], [2]])
    metrics = RankingMetrics()
    metrics.update(scores, [[0], [1], [2]])
    with pytest.raises(ValueError, match="5 targets but earlier blocks had 4"):
        metrics.update(torch.rand(2, 5), [[0], [1]])


def test_no_positives_gives_nan_not_zero():
    m = ranking_metrics(torch.rand(3, 4), [[], [], []])
    assert math.isnan(m["map"]) and math.isnan(m["rp@10"])
    assert (m["n_queries"], m["n_skipped"]) == (0, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_matches_cpu():
    rng = np.random.default_rng(8)
    scores = torch.from_numpy(rng.integers(0, 5, size=(300, 700)).astype(np.float32))
    labels = random_labels(rng, 300, 700, "mixed")
    exclude = [[i % 700] for i in range(300)]
    cpu = ranking_metrics(scores, labels, exclude=exclude, chunk_size=64, ks=KS)
    gpu = ranking_metrics(scores.cuda(), labels, exclude=exclude, chunk_size=64, ks=KS)
    for name, value in cpu.items():
        assert gpu[name] == pytest.approx(value, abs=1e-12), name


GROUPS = {
    "Job2Skill": "Job2Skill",
    "Skill2Job": "Skill2Job",
    "JobNorm": "JobNorm",
    "SkillNorm": "SkillNorm",
    "SkillSim": "SkillSim",
    "SkillExtr-H": "SkillExtract",
    "SkillExtr-T": "SkillExtract",
}


def test_macro_average_groups_subtasks_first():
    per_task = {
        "Job2Skill": {"map": 0.30, "rp@10": 0.40},
        "JobNorm": {"map": 0.50, "rp@10": 0.60},
        "SkillExtr-H": {"map": 0.20, "rp@10": 0.10},
        "SkillExtr-T": {"map": 0.40, "rp@10": 0.30},
    }  # SkillSim etc. unavailable: not covered
    result = macro_average(per_task, GROUPS)
    assert result["map"] == pytest.approx((0.30 + 0.50 + 0.30) / 3)  # not the plain task mean 0.35
    assert result["rp@10"] == pytest.approx((0.40 + 0.60 + 0.20) / 3)
    assert result["covers"] == ["Job2Skill", "JobNorm", "SkillExtr-H", "SkillExtr-T"]
    assert result["groups"] == {
        "Job2Skill": ["Job2Skill"],
        "JobNorm": ["JobNorm"],
        "SkillExtract": ["SkillExtr-H", "SkillExtr-T"],
    }


def test_macro_average_errors():
    with pytest.raises(ValueError, match=r"\['Mystery'\] have no group"):
        macro_average({"Mystery": {"map": 0.1, "rp@10": 0.1}}, GROUPS)
    with pytest.raises(ValueError, match=r"\['JobNorm'\] have no metric 'rp@10'"):
        macro_average({"JobNorm": {"map": 0.1}}, GROUPS)
    with pytest.raises(ValueError, match="no task results"):
        macro_average({}, GROUPS)


def test_huge_finite_scores_are_not_mistaken_for_non_finite():
    # Row sums overflow to inf here although every score is finite (and float16 overflows even sooner).
    scores = torch.tensor([[3e38, 3e38, -1.0], [1.0, 2.0, 3.0]])
    m = ranking_metrics(scores, [[2], [0]])
    assert m["map"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    half = torch.full((1, 4), 60000.0, dtype=torch.float16)
    assert ranking_metrics(half, [[3]])["map"] == pytest.approx(1 / 4)


@pytest.mark.parametrize("cpu_threads", [None, 2])
def test_thread_setting_does_not_change_results_and_is_restored(cpu_threads):
    rng = np.random.default_rng(9)
    scores = torch.from_numpy(rng.integers(0, 4, size=(50, 90)).astype(np.float32))
    labels = random_labels(rng, 50, 90, "mixed")
    before = torch.get_num_threads()
    single = ranking_metrics(scores, labels, ks=KS)  # default: 1 thread inside update
    assert torch.get_num_threads() == before
    assert ranking_metrics(scores, labels, ks=KS, cpu_threads=cpu_threads) == single
    assert torch.get_num_threads() == before


# ---------------------------------------------------------------------------------------------------------
# ties="expected": the mean over a uniformly random order within ties (the popularity prior's rule)
# ---------------------------------------------------------------------------------------------------------


def test_expected_ties_hand_computed():
    scores = torch.tensor([[0.9, 0.5, 0.5, 0.5, 0.1],   # positives 2, 3, 4: two of the tied three, then rank 5
                           [1.0, 1.0, 1.0, 1.0, 1.0]])  # one list for every target (occupations under popularity)
    labels = [[2, 3, 4], [4]]
    got = ranking_metrics(scores, labels, ks=(1, 2, 10), ties="expected")
    # Row 0: the tied positives sit at two of ranks 2..4, each pair equally likely: {2,3}: 1/2 + 2/3,
    # {2,4}: 1/2 + 2/4, {3,4}: 1/3 + 2/4, mean 1; the last positive adds 3/5: AP = (1 + 3/5) / 3 = 8/15.
    # Row 1: the positive is at rank 1..5 with equal chance: AP = (1 + 1/2 + 1/3 + 1/4 + 1/5) / 5 = 137/300.
    assert got["map"] == pytest.approx((8 / 15 + 137 / 300) / 2, rel=1e-12)
    # RP@1: row 0 has target 0 on top (0); row 1 its positive with chance 1/5.
    assert got["rp@1"] == pytest.approx((0 + 1 / 5) / 2, rel=1e-12)
    # RP@2: row 0 gets one of the three tied into the top 2, a positive with chance 2/3, over min(2, 3) = 2.
    assert got["rp@2"] == pytest.approx((2 / 3 / 2 + 2 / 5) / 2, rel=1e-12)
    assert got["rp@10"] == pytest.approx(1.0, rel=1e-12)
    first = ranking_metrics(scores, labels, ks=(1, 2, 10))  # lower index first: positives last in every tie
    assert first["map"] == pytest.approx(((1 / 3 + 2 / 4 + 3 / 5) / 3 + 1 / 5) / 2, rel=1e-12)
    assert first["rp@1"] == 0.0


@pytest.mark.parametrize("seed", [0, 1])
def test_expected_ties_equal_the_mean_over_every_order_within_ties(seed):
    """Brute force: every permutation of the targets, ranked lower index first, averaged (a few scores, so
    many ties; excluded targets too)."""
    from itertools import permutations

    rng = np.random.default_rng(seed)
    for _ in range(12):
        n_targets = int(rng.integers(2, 7))
        scores = torch.tensor(rng.integers(0, 3, size=(3, n_targets)), dtype=torch.float64)
        labels = [sorted(rng.choice(n_targets, int(rng.integers(1, n_targets + 1)), replace=False).tolist())
                  for _ in range(3)]
        exclude = [[int(rng.integers(0, n_targets))], [], []]
        want: dict[str, list[float]] = {}
        for perm in permutations(range(n_targets)):
            position = {old: new for new, old in enumerate(perm)}
            moved = ranking_metrics(scores[:, list(perm)], [[position[t] for t in row] for row in labels],
                                    [[position[t] for t in row] for row in exclude], ks=(1, 3))
            for name in ("map", "rp@1", "rp@3"):
                want.setdefault(name, []).append(moved[name])
        got = ranking_metrics(scores, labels, exclude, ks=(1, 3), ties="expected")
        for name, values in want.items():
            assert got[name] == pytest.approx(sum(values) / len(values), rel=1e-9), name


def test_expected_ties_without_ties_are_the_first_rule_exactly():
    scores = torch.randn(50, 300, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    labels = random_labels(np.random.default_rng(0), 50, 300, "mixed")
    assert ranking_metrics(scores, labels, ks=KS, ties="expected") == ranking_metrics(scores, labels, ks=KS)
    with pytest.raises(ValueError, match="ties must be one of"):
        RankingMetrics(ties="random")
