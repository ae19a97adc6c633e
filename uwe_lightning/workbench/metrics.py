"""WorkBench ranking metrics: MAP and R-Precision@k, vectorised and computed block by block.

Definitions (those of WorkBench and of ``workrb.metrics.ranking.calculate_ranking_metrics``):

- AP of a query = mean over its positives, in ranking order, of ``(i-th positive) / (its rank)``, over the
  full ranking; MAP = mean AP over the queries that have at least one positive (the others are skipped
  and counted in ``n_skipped``).
- RP@k of a query = ``|positives in the top k| / min(k, |positives|)``; averaged over the same queries.

Nothing is sorted: only the ranks of the positives matter, and the rank of positive ``t`` in row ``q`` is
``#{j: s_qj > s_qt} + #{j < t: s_qj == s_qt} + 1``, counted with comparisons over the row (a few rows of
the block at a time, so the compared rows stay in cache and memory stays bounded for any number of
positives). Costs O(positives x targets) and works unchanged on CPU and GPU.

Ties (``ties="first"``, the default): among equal scores the lower target index ranks first, i.e. the ranking
is exactly ``np.argsort(-scores, kind="stable")``. workrb uses numpy's default (unstable) argsort, whose order
among ties depends on the machine (an AVX-512 SIMD sort reorders equal keys), so under ties workrb's numbers
are not reproducible across machines while ours are; without ties the two coincide.

``ties="expected"``: the exact expectation of AP and RP@k over a uniformly random order within every group of
equal scores (:mod:`~uwe_lightning.workbench.ties`), for models whose scores tie by construction (the popularity
prior). Without ties both rules give the same numbers.

Conventions where workrb has none: duplicate labels of a query count once; an excluded target is removed
from its query's ranking, and if it was a positive it is removed from the positives too (it cannot be
retrieved); a metric over zero counted queries is NaN (workrb returns 0.0), never a fake zero. Scores
are compared in their own dtype (workrb casts to float32 first, which can merge float64 near-ties).

>>> import torch
>>> scores = torch.tensor([[0.9, 0.1, 0.5, 0.3],    # ranking 0, 2, 3, 1: positives 0 and 3 at ranks 1, 3
...                        [0.2, 0.8, 0.8, 0.1],    # tie: target 1 before 2, so positive 2 is at rank 2
...                        [0.5, 0.4, 0.3, 0.2]])   # no positives: skipped
>>> m = ranking_metrics(scores, [[0, 3], [2], []], ks=(1, 10))
>>> {name: round(value, 4) for name, value in m.items()}  # map = ((1/1 + 2/3) / 2 + 1/2) / 2
{'map': 0.6667, 'rp@1': 0.5, 'rp@10': 1.0, 'n_queries': 2, 'n_skipped': 1}
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import chain

import torch
from torch import Tensor

from uwe_lightning.workbench.ties import expected_per_query_metrics

# Elements compared per step: ~75 rows of 14k targets (4 MB of float32) stay in cache, which measured
# fastest on the 2-core CPU (2^18..2^20 best of 2^18..2^24); a GPU wants large launches.
CPU_STEP_ELEMENTS = 1 << 20
GPU_STEP_ELEMENTS = 1 << 27
#: How equal scores are ranked: ``first`` = lower target index first; ``expected`` = the expectation over a
#: uniformly random order within ties (see the module docstring).
TIE_RULES = ("first", "expected")


def _flatten(rows: Sequence[Sequence[int]], n_targets: int, what: str) -> tuple[Tensor, Tensor]:
    """(block row, target index) of every entry of a ragged per-query index list, as int64 tensors."""
    counts = torch.tensor([len(row) for row in rows], dtype=torch.long)
    targets = torch.tensor([int(t) for t in chain.from_iterable(rows)], dtype=torch.long)
    block_rows = torch.repeat_interleave(torch.arange(len(rows)), counts)
    outside = (targets < 0) | (targets >= n_targets)
    if outside.any():
        bad_rows = sorted(set(block_rows[outside].tolist()))
        raise ValueError(
            f"{what}: {int(outside.sum())} index(es) outside [0, {n_targets}) in block row(s) {_preview(bad_rows)}"
        )
    return block_rows, targets


def _preview(rows: list[int], limit: int = 10) -> str:
    return str(rows[:limit])[:-1] + (f", ... ({len(rows)} rows)]" if len(rows) > limit else "]")


def _check_finite(scores: Tensor, excluded_rows: Tensor, excluded_targets: Tensor, query_offset: int) -> None:
    """Raise on NaN/inf scores; excluded targets may hold anything (they are never ranked)."""
    # Fast path, one read-only pass: a row sum is finite only if the row is (an overflowing sum of
    # finite scores or a non-finite excluded score falls through to the exact check).
    if bool(torch.isfinite(scores.sum(dim=1)).all()):
        return
    finite = torch.isfinite(scores)
    if excluded_rows.numel():
        finite[excluded_rows, excluded_targets] = True
    if bool(finite.all()):
        return
    bad = ~finite
    bad_rows = bad.any(dim=1).nonzero().squeeze(1).tolist()
    raise ValueError(
        f"scores contain {int(bad.sum())} non-finite value(s) (NaN/inf) in {len(bad_rows)} row(s) of this block: "
        f"block rows {_preview(bad_rows)} (query {query_offset + bad_rows[0]} is the first, counting all updates)"
    )


@contextmanager
def _torch_threads(n_threads: int | None) -> Iterator[None]:
    """Run with ``n_threads`` torch intra-op threads, then restore the caller's setting."""
    previous = torch.get_num_threads()
    if n_threads is not None and n_threads != previous:
        torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def _gather_rows(scores: Tensor, rows: Tensor) -> Tensor:
    """``scores[rows]``, as a view (no copy) when the rows are consecutive, the usual single-label case."""
    first = int(rows[0])
    if int(rows[-1]) - first + 1 == rows.numel() and bool((rows.diff() == 1).all()):
        return scores[first : first + rows.numel()]
    return scores.index_select(0, rows)


def _comparison_steps(scores: Tensor, rows: Tensor, targets: Tensor, step_elements: int | None
                      ) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """(row scores, each positive's score [m, 1], its target, #higher scores, #scores >= it) per step of
    ``step_elements`` compared scores: the loop is over steps, not over queries."""
    n_targets = scores.shape[1]
    if step_elements is None:
        step_elements = CPU_STEP_ELEMENTS if scores.device.type == "cpu" else GPU_STEP_ELEMENTS
    per_step = max(1, step_elements // n_targets)
    for start in range(0, rows.numel(), per_step):
        step_rows, step_targets = rows[start : start + per_step], targets[start : start + per_step]
        row_scores = _gather_rows(scores, step_rows)
        positive = row_scores.gather(1, step_targets[:, None])
        higher = (row_scores > positive).sum(dim=1)
        at_least = (row_scores >= positive).sum(dim=1)  # includes the positive itself
        yield row_scores, positive, step_targets, higher, at_least


def positive_ranks(scores: Tensor, rows: Tensor, targets: Tensor, step_elements: int | None = None) -> Tensor:
    """1-based rank of ``scores[rows[i], targets[i]]`` within its row; equal scores: lower index first.

    Targets scored ``-inf`` never outrank a finite score, which is how excluded targets are removed.

    >>> s = torch.tensor([[3.0, 1.0, 3.0, 2.0]])
    >>> positive_ranks(s, torch.tensor([0, 0, 0, 0]), torch.tensor([0, 1, 2, 3])).tolist()
    [1, 4, 2, 3]
    """
    column = torch.arange(scores.shape[1], device=scores.device)
    ranks = []
    for row_scores, positive, step_targets, higher, at_least in _comparison_steps(
            scores, rows, targets, step_elements):
        rank = higher + 1
        # Ties are rare with real embeddings: count which tied targets come first only where there are any.
        with_ties = (at_least - higher > 1).nonzero().squeeze(1)
        tied_before = (row_scores[with_ties] == positive[with_ties]) & (
            column < step_targets[with_ties, None]
        )
        rank[with_ties] += tied_before.sum(dim=1)
        ranks.append(rank)
    return torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long, device=scores.device)


def tie_groups(scores: Tensor, rows: Tensor, targets: Tensor, step_elements: int | None = None
               ) -> tuple[Tensor, Tensor]:
    """(#targets scored higher, #targets scored equal, itself included) of each ``scores[rows[i], targets[i]]``.

    >>> s = torch.tensor([[3.0, 1.0, 3.0, 2.0]])
    >>> [t.tolist() for t in tie_groups(s, torch.tensor([0, 0]), torch.tensor([0, 3]))]
    [[0, 2], [2, 1]]
    """
    higher, tied = [], []
    for _, _, _, step_higher, at_least in _comparison_steps(scores, rows, targets, step_elements):
        higher.append(step_higher)
        tied.append(at_least - step_higher)
    if not higher:
        empty = torch.zeros(0, dtype=torch.long, device=scores.device)
        return empty, empty
    return torch.cat(higher), torch.cat(tied)


def per_query_metrics(
    ranks: Tensor, rows: Tensor, n_rows: int, ks: Sequence[int]
) -> tuple[Tensor, Tensor, dict[int, Tensor]]:
    """(positives per row, AP per row, {k: RP@k per row}) from the ranks of each row's positives.

    Rows without positives get AP and RP 0 and must be skipped by the caller (their count is 0).
    """
    counts = torch.bincount(rows, minlength=n_rows)
    # Order positives by (row, rank): the i-th of a row is then the row's i-th retrieved positive.
    order = torch.argsort(rows * (int(ranks.max()) + 1 if ranks.numel() else 1) + ranks)
    sorted_rows, sorted_ranks = rows[order], ranks[order]
    row_start = torch.cumsum(counts, 0) - counts
    position = torch.arange(rows.numel(), device=rows.device) - row_start[sorted_rows] + 1
    precision_at_hit = position.double() / sorted_ranks.double()
    zeros = torch.zeros(n_rows, dtype=torch.float64, device=rows.device)
    denominator = counts.clamp(min=1).double()
    average_precision = zeros.index_add(0, sorted_rows, precision_at_hit) / denominator
    r_precision = {
        k: zeros.index_add(0, rows, (ranks <= k).double()) / counts.clamp(min=1, max=k).double() for k in ks
    }
    return counts, average_precision, r_precision


def block_per_query_metrics(
    scores: Tensor, rows: Tensor, targets: Tensor, excluded_rows: Tensor, excluded_targets: Tensor,
    ks: Sequence[int], ties: str = "first", query_offset: int = 0,
) -> tuple[Tensor, Tensor, dict[int, Tensor]]:
    """(positives per row, AP per row, {k: RP@k per row}) of one block of score rows: the kernel that
    :class:`RankingMetrics` and the ``torchmetrics`` Metrics (:mod:`~uwe_lightning.workbench.retrieval`) share.

    ``rows[i], targets[i]``: the positives (in range; duplicates count once), ``excluded_rows[i],
    excluded_targets[i]``: the targets removed from the rankings; ``query_offset`` only names queries in errors.
    Rows without positives have count 0 (and AP / RP 0): the caller skips them.
    """
    device = scores.device
    n_rows, n_targets = scores.shape
    _check_finite(scores, excluded_rows.to(device), excluded_targets.to(device), query_offset)

    # One key per (row, target): deduplicates labels and orders them by row.
    keys = torch.unique(rows * n_targets + targets)
    if excluded_rows.numel():
        excluded_keys = (excluded_rows * n_targets + excluded_targets).to(keys.device)
        keys = keys[~torch.isin(keys, excluded_keys)]
        scores = scores.clone()
        scores[excluded_rows.to(device), excluded_targets.to(device)] = float("-inf")
    rows, targets = (keys // n_targets).to(device), (keys % n_targets).to(device)

    if ties == "expected":
        higher, tied = tie_groups(scores, rows, targets)
        return expected_per_query_metrics(higher, tied, rows, n_rows, ks)
    ranks = positive_ranks(scores, rows, targets)
    return per_query_metrics(ranks, rows, n_rows, ks)


class RankingMetrics:
    """Accumulates MAP and RP@k over blocks of queries; the full score matrix is never needed.

    ``update(scores[b, T], labels, exclude)`` per block (any device, any float dtype; scores are compared
    in their own dtype), then ``compute()``.

    ``ties``: ``first`` (lower target index first) or ``expected`` (the expectation over a random order within
    ties), see the module docstring.

    ``cpu_threads``: torch threads while updating on CPU (restored after; None leaves torch's setting).
    The default 1 is deliberate: the work is many small memory-bound steps, and on a CPU shared with other
    processes every multi-threaded step waits for its slowest thread (measured on the shared 2-core
    machine under load: 1 thread 0.14-0.41 s per 4096-query block, 2 threads 0.64-1.9 s).
    """

    def __init__(self, ks: Sequence[int] = (10,), cpu_threads: int | None = 1, ties: str = "first") -> None:
        if ties not in TIE_RULES:
            raise ValueError(f"ties must be one of {list(TIE_RULES)}, got {ties!r}")
        if not ks or any(int(k) != k or k < 1 for k in ks):
            raise ValueError(f"ks must be positive integers, got {tuple(ks)}")
        if cpu_threads is not None and cpu_threads < 1:
            raise ValueError(f"cpu_threads must be >= 1 or None, got {cpu_threads}")
        self.ks = tuple(int(k) for k in ks)
        self.cpu_threads = cpu_threads
        self.ties = ties
        self.reset()

    def reset(self) -> None:
        self.n_targets: int | None = None
        self.n_seen = 0
        self.n_queries = 0
        self.sum_ap = 0.0
        self.sum_rp = dict.fromkeys(self.ks, 0.0)

    @torch.no_grad()
    def update(
        self,
        scores: Tensor,
        labels: Sequence[Sequence[int]],
        exclude: Sequence[Sequence[int]] | None = None,
    ) -> None:
        """Add a block of queries: ``labels[i]`` are the positive targets of row ``i``, ``exclude[i]`` the
        targets removed from its ranking."""
        if scores.dim() != 2:
            raise ValueError(f"scores must be [queries, targets], got shape {tuple(scores.shape)}")
        if not scores.is_floating_point():
            raise ValueError(f"scores must be a float tensor, got {scores.dtype}")
        n_rows, n_targets = scores.shape
        if self.n_targets is None:
            self.n_targets = n_targets
        elif n_targets != self.n_targets:
            raise ValueError(f"scores have {n_targets} targets but earlier blocks had {self.n_targets}")
        if len(labels) != n_rows:
            raise ValueError(f"labels has {len(labels)} rows for a block of {n_rows} score rows")
        if exclude is not None and len(exclude) != n_rows:
            raise ValueError(f"exclude has {len(exclude)} rows for a block of {n_rows} score rows")

        threads = self.cpu_threads if scores.device.type == "cpu" else None
        with _torch_threads(threads):
            self._accumulate(scores.detach(), labels, exclude)

    def _accumulate(
        self, scores: Tensor, labels: Sequence[Sequence[int]], exclude: Sequence[Sequence[int]] | None
    ) -> None:
        n_rows, n_targets = scores.shape
        rows, targets = _flatten(labels, n_targets, "labels")
        excluded_rows, excluded_targets = _flatten([] if exclude is None else exclude, n_targets, "exclude")
        counts, average_precision, r_precision = block_per_query_metrics(
            scores, rows, targets, excluded_rows, excluded_targets, self.ks, self.ties, self.n_seen)
        counted = counts > 0
        self.n_seen += n_rows
        self.n_queries += int(counted.sum())
        self.sum_ap += float(average_precision[counted].sum())
        for k in self.ks:
            self.sum_rp[k] += float(r_precision[k][counted].sum())

    def compute(self) -> dict:
        """``map``, ``rp@k`` per k (fractions; NaN when no query has a positive), ``n_queries``, ``n_skipped``."""
        n = self.n_queries
        result: dict = {"map": self.sum_ap / n if n else math.nan}
        for k in self.ks:
            result[f"rp@{k}"] = self.sum_rp[k] / n if n else math.nan
        result["n_queries"] = n
        result["n_skipped"] = self.n_seen - n
        return result


def ranking_metrics(
    scores: Tensor,
    labels: Sequence[Sequence[int]],
    exclude: Sequence[Sequence[int]] | None = None,
    chunk_size: int = 4096,
    ks: Sequence[int] = (10,),
    cpu_threads: int | None = 1,
    ties: str = "first",
) -> dict:
    """:class:`RankingMetrics` over a score matrix already in memory, ``chunk_size`` queries at a time."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if len(labels) != scores.shape[0]:
        raise ValueError(f"labels has {len(labels)} rows for {scores.shape[0]} score rows")
    metrics = RankingMetrics(ks, cpu_threads=cpu_threads, ties=ties)
    for start in range(0, scores.shape[0], chunk_size):
        stop = start + chunk_size
        metrics.update(
            scores[start:stop], labels[start:stop], None if exclude is None else exclude[start:stop]
        )
    return metrics.compute()


def macro_average(
    per_task: Mapping[str, Mapping[str, float]],
    groups: Mapping[str, str],
    metrics: Sequence[str] = ("map", "rp@10"),
) -> dict:
    """The paper's multi-task score: tasks of one group (task type) are averaged first, then the groups.

    Tasks absent from ``per_task`` (unavailable) are not covered; ``covers`` and ``groups`` say what was. A task
    whose value of any metric is not a finite number (NaN: no query had a positive) is left out as well and
    named in ``left_out``, so one empty split never turns the whole average into NaN; if no task is left, the
    metrics are None.

    >>> per_task = {"JobNorm": {"map": 0.4}, "SkillExtr-H": {"map": 0.2}, "SkillExtr-T": {"map": 0.4}}
    >>> groups = {"JobNorm": "JobNorm", "SkillExtr-H": "SkillExtract", "SkillExtr-T": "SkillExtract"}
    >>> round(macro_average(per_task, groups, metrics=("map",))["map"], 4)  # (0.4 + (0.2 + 0.4) / 2) / 2
    0.35
    >>> macro_average({**per_task, "JobNorm": {"map": float("nan")}}, groups, metrics=("map",))["left_out"]
    ['JobNorm']
    """
    if not per_task:
        raise ValueError("macro_average: no task results to average")
    ungrouped = [task for task in per_task if task not in groups]
    if ungrouped:
        raise ValueError(f"macro_average: task(s) {ungrouped} have no group in `groups` ({sorted(groups)})")
    for metric in metrics:
        lacking = [task for task, values in per_task.items() if metric not in values]
        if lacking:
            raise ValueError(f"macro_average: task(s) {lacking} have no metric {metric!r}")
    left_out = [task for task, values in per_task.items() if not all(_finite(values[m]) for m in metrics)]
    tasks_by_group: dict[str, list[str]] = {}
    for task in per_task:
        if task not in left_out:
            tasks_by_group.setdefault(groups[task], []).append(task)

    result: dict = {}
    for metric in metrics:
        group_means = [
            sum(float(per_task[task][metric]) for task in tasks) / len(tasks)
            for tasks in tasks_by_group.values()
        ]
        result[metric] = sum(group_means) / len(group_means) if group_means else None
    result["covers"] = [task for task in per_task if task not in left_out]
    result["groups"] = tasks_by_group
    if left_out:
        result["left_out"] = left_out
    return result


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
