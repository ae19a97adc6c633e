"""WorkBench's MAP and RP@k as ``torchmetrics`` Metrics, to drop into one's own LightningModule.

:class:`WorkBenchMAP`, :class:`WorkBenchRPrecision` and :class:`WorkBenchRetrieval` (both at once, as a dict) run
the kernel of :mod:`~uwe_lightning.workbench.metrics` on each ``update(scores, relevance)`` block, so they give the
numbers of ``evaluate`` / ``RankingMetrics`` (same definitions, same tie rule, same float64 sums). Their state
is four sums (queries counted and skipped, AP sum, RP@k sums), reduced with ``sum`` across DDP ranks: O(1) memory
and one small all-reduce per ``compute()``, whatever the number of queries or targets, where
``torchmetrics.retrieval`` keeps every score (a ``cat`` state of queries x targets floats).

``update(scores, relevance, exclude=None)``:

- ``scores``: ``[queries, targets]`` floats, each row over the query's whole target space (a full ranking: MAP
  counts every positive wherever it ranks); from a ranking of target indices use :func:`ranking_scores`;
- ``relevance``: a ``[queries, targets]`` tensor of 0/1 (bool or integer), or per query the list of its positive
  target indices (WorkBench's ``labels``);
- ``exclude``: targets removed from a query's ranking, in the same two forms (None: none).

Where they differ from ``torchmetrics.retrieval`` (each difference is tested in ``tests/test_retrieval_metrics.py``):

- **Queries without a positive** are skipped (``RetrievalMAP(empty_target_action="skip")``; torchmetrics'
  default ``"neg"`` counts them as 0), and with none counted ``compute()`` is NaN, not 0.
- **RP@k** = ``|positives in the top k| / min(k, |positives|)`` (WorkBench). It is torchmetrics'
  ``RetrievalRecall(top_k=k)`` for a query with ``<= k`` positives and ``RetrievalPrecision(top_k=k)`` for one
  with ``>= k``; ``RetrievalRPrecision`` is another metric (the top ``|positives|``, no k).
- **Scores <= 0**: torchmetrics 1.x's AP, precision and recall treat a positive scored <= 0 as not relevant (AP
  leaves it out of its mean); here every positive counts wherever it ranks, so cosine scores may be negative.
- **Ties**: equal scores rank the lower target index first (``ties="first"``, reproducible on any machine), or
  AP / RP@k are their exact expectation over a random order within ties (``ties="expected"``); torchmetrics
  orders ties as ``torch.topk`` / ``argsort`` happen to return them.
- **Input shape**: one row per query over its target space, not torchmetrics' flat ``(preds, target, indexes)``.

Under DDP every rank updates with its own queries and ``compute()`` sums the states over ranks; like any
torchmetrics metric, queries that a ``DistributedSampler`` repeats to even out the ranks count twice.

>>> import torch
>>> metric = WorkBenchRetrieval()
>>> metric.update(torch.tensor([[0.9, 0.1, 0.5, 0.3]]), [[0, 3]])      # positives at ranks 1 and 3
>>> metric.update(torch.tensor([[0.2, 0.8, 0.8, 0.1], [0.5, 0.4, 0.3, 0.2]]), [[2], []])  # a tie; no positive
>>> {name: round(float(value), 4) for name, value in metric.compute().items()}
{'map': 0.6667, 'rp@10': 1.0}
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from uwe_lightning.workbench.metrics import TIE_RULES, _flatten, block_per_query_metrics

#: ``relevance`` / ``exclude`` of one update: a ``[queries, targets]`` 0/1 tensor or ragged target indices.
Relevance = Tensor | Sequence[Sequence[int]]


def ranking_scores(ranking: Tensor) -> Tensor:
    """Scores that rank targets as ``ranking`` does: row ``i`` of ``ranking`` lists all target indices, best first.

    Only a full ranking says where every positive is (MAP needs it); a top-k list is refused.

    >>> ranking_scores(torch.tensor([[2, 0, 1]])).tolist()
    [[2.0, 1.0, 3.0]]
    """
    if ranking.dim() != 2 or ranking.is_floating_point():
        raise ValueError(f"ranking must be [queries, targets] target indices, got {ranking.dtype} "
                         f"{tuple(ranking.shape)}")
    n_targets = ranking.shape[1]
    expected = torch.arange(n_targets, device=ranking.device)
    if ranking.numel() and not bool((ranking.sort(dim=1).values == expected).all()):
        raise ValueError("ranking: each row must list every target index 0..n-1 exactly once (a full ranking; "
                         "MAP needs the rank of every positive, a top-k list does not give it)")
    # n for the best, 1 for the last: positive scores, exact in float64 for any number of targets
    positions = (n_targets - torch.arange(n_targets, dtype=torch.float64, device=ranking.device)).expand(ranking.shape)
    return torch.empty(ranking.shape, dtype=torch.float64, device=ranking.device).scatter_(1, ranking, positions)


def _entries(value: Relevance | None, shape: tuple[int, int], what: str) -> tuple[Tensor, Tensor]:
    """(row, target) of every entry of a 0/1 tensor or a ragged index list, checked against ``shape``."""
    n_rows, n_targets = shape
    if value is None:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    if isinstance(value, Tensor):
        if tuple(value.shape) != (n_rows, n_targets):
            raise ValueError(f"{what} has shape {tuple(value.shape)}; scores have {(n_rows, n_targets)}")
        if value.is_floating_point() or value.is_complex():
            raise ValueError(f"{what} must be bool or integer 0/1 (a float tensor is ambiguous), got {value.dtype}")
        if value.dtype != torch.bool and bool(((value != 0) & (value != 1)).any()):
            raise ValueError(f"{what} must hold 0/1 only (binary relevance); give graded labels as 0/1")
        rows, targets = value.nonzero(as_tuple=True)
        return rows, targets
    if len(value) != n_rows:
        raise ValueError(f"{what} has {len(value)} rows for a block of {n_rows} score rows")
    return _flatten(value, n_targets, what)


class WorkBenchRetrieval(Metric):
    """MAP and RP@k over every updated query (see the module docstring); ``compute()`` returns
    ``{"map": ..., "rp@<k>": ...}`` as float64 scalars (NaN while no query has a positive).

    ``ks``: the cut-offs of R-Precision; ``ties``: ``first`` or ``expected``
    (:data:`~uwe_lightning.workbench.metrics.TIE_RULES`); other keyword arguments go to ``torchmetrics.Metric``
    (``sync_on_compute``, ``process_group``, ``dist_sync_fn``...).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, ks: Sequence[int] = (10,), ties: str = "first", **kwargs) -> None:
        super().__init__(**kwargs)
        if ties not in TIE_RULES:
            raise ValueError(f"ties must be one of {list(TIE_RULES)}, got {ties!r}")
        if not ks or any(isinstance(k, bool) or int(k) != k or k < 1 for k in ks):
            raise ValueError(f"ks must be positive integers, got {tuple(ks)}")
        self.ks = tuple(int(k) for k in ks)
        self.ties = ties
        self.add_state("n_queries", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("n_skipped", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("sum_ap", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("sum_rp", torch.zeros(len(self.ks), dtype=torch.float64), dist_reduce_fx="sum")

    @torch.no_grad()
    def update(self, scores: Tensor, relevance: Relevance, exclude: Relevance | None = None) -> None:
        """Add a block of queries: ``scores[i]`` ranks query ``i``'s targets, ``relevance`` marks its positives,
        ``exclude`` the targets removed from its ranking (forms: module docstring)."""
        if scores.dim() != 2:
            raise ValueError(f"scores must be [queries, targets], got shape {tuple(scores.shape)}")
        if not scores.is_floating_point():
            raise ValueError(f"scores must be a float tensor, got {scores.dtype} (a ranking: ranking_scores(...))")
        shape = (scores.shape[0], scores.shape[1])
        rows, targets = _entries(relevance, shape, "relevance")
        excluded_rows, excluded_targets = _entries(exclude, shape, "exclude")
        counts, average_precision, r_precision = block_per_query_metrics(
            scores.detach(), rows, targets, excluded_rows, excluded_targets, self.ks, self.ties,
            int(self.n_queries + self.n_skipped))
        counted = counts > 0
        state = self.sum_ap.device
        n_counted = counted.sum().to(state)
        self.n_queries += n_counted
        self.n_skipped += shape[0] - n_counted
        self.sum_ap += average_precision[counted].sum().to(state)
        self.sum_rp += torch.stack([r_precision[k][counted].sum() for k in self.ks]).to(state)

    def _mean(self, total: Tensor) -> Tensor:
        return total / self.n_queries if int(self.n_queries) else torch.full_like(total, math.nan)

    def compute(self) -> dict[str, Tensor]:
        result = {"map": self._mean(self.sum_ap)}
        rp = self._mean(self.sum_rp)
        result.update({f"rp@{k}": rp[i] for i, k in enumerate(self.ks)})
        return result


class WorkBenchMAP(WorkBenchRetrieval):
    """WorkBench's MAP over the full ranking (queries without a positive skipped), as a scalar.

    In a ``MetricCollection`` with :class:`WorkBenchRPrecision` of the same ``ks`` and ``ties``, torchmetrics'
    compute groups find their states equal and run the ranking once for both.
    """

    def compute(self) -> Tensor:
        return self._mean(self.sum_ap)


class WorkBenchRPrecision(WorkBenchRetrieval):
    """WorkBench's R-Precision at ``k``: ``|positives in the top k| / min(k, |positives|)``, as a scalar."""

    def __init__(self, k: int = 10, ties: str = "first", **kwargs) -> None:
        super().__init__(ks=(k,), ties=ties, **kwargs)

    def compute(self) -> Tensor:
        return self._mean(self.sum_rp)[0]
