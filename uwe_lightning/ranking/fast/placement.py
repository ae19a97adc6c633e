"""Where scores land: sorted positions back to original columns, duplicates, and a tie-stable top-k.

Why here. The prepared layout scores texts in sorted-by-length order with duplicates kept once; the ranker
needs scores per original column and a top-k whose ties break by the lower column index (the metrics' order).
:func:`column_runs` finds when the sorted order is a few runs of consecutive columns (a space of one token
count) so that :func:`~uwe_lightning.ranking.fast.kernels.score` can write tile scores straight into place;
:func:`topk_stable` is the deterministic top-k.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

#: At most this many runs of consecutive original columns make the direct write of :func:`score` worth it.
MAX_COLUMN_RUNS = 4096


@dataclass
class ColumnRuns:
    """Where sorted positions land among the original columns, when that is a few runs of consecutive columns
    (a space of one token count, e.g. pooled: sorting by length keeps the original order, and only duplicates
    interrupt it): ``runs`` of ``(sorted start, sorted stop, first column)``, and the ``duplicates``' columns
    with the columns of their first copies (``sources``)."""

    runs: list[tuple[int, int, int]]
    duplicates: Tensor
    sources: Tensor


def column_runs(order: Tensor, position: Tensor) -> ColumnRuns | None:
    """:class:`ColumnRuns` of a sorted layout (:func:`sorted_layout`), or ``None`` when its order is not
    increasing or breaks into more than :data:`MAX_COLUMN_RUNS` runs (scores are then gathered once).

    >>> column_runs(torch.tensor([0, 1, 3, 4]), torch.tensor([0, 1, 0, 2, 3]))  # text 2 repeats text 0
    ColumnRuns(runs=[(0, 2, 0), (2, 4, 3)], duplicates=tensor([2]), sources=tensor([0]))
    """
    order, position = order.cpu(), position.cpu()
    if order.numel() == 0:
        return None
    steps = order.diff()
    if bool((steps <= 0).any()):
        return None
    breaks = (steps != 1).nonzero().flatten().add(1).tolist()
    if len(breaks) + 1 > MAX_COLUMN_RUNS:
        return None
    bounds = [0, *breaks, order.numel()]
    runs = [(a, b, int(order[a])) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    source = order[position]  # the column whose score each column gets
    duplicates = (source != torch.arange(position.numel())).nonzero().flatten()
    return ColumnRuns(runs, duplicates, source[duplicates])


def column_runs_of(targets) -> ColumnRuns | None:
    """:func:`column_runs` of ``targets``, computed once per prepared space."""
    if not hasattr(targets, "_column_runs"):
        targets._column_runs = column_runs(targets.order, targets.position)
    return targets._column_runs


def topk_stable(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-``k`` per row, best first, ties broken by the lower column index (the metrics' order), also at the
    k-th place: a tie there keeps the lowest indices. ``k`` is capped at the number of columns.

    >>> topk_stable(torch.tensor([[0.5, 0.9, 0.5, 0.9, 0.1]]), 3)
    (tensor([[0.9000, 0.9000, 0.5000]]), tensor([[1, 3, 0]]))
    """
    k = min(k, scores.shape[1])
    # One more than asked: a row whose (k+1)-th score equals its k-th has a tie reaching past the k-th place
    # (found without another pass over the scores).
    values, index = torch.topk(scores, min(k + 1, scores.shape[1]), dim=1)
    crowded = (values[:, k - 1] == values[:, k]).nonzero().flatten().tolist() if values.shape[1] > k else []
    values, index = values[:, :k], index[:, :k]
    # Ties inside the top k: order by index, then (stably) by score.
    index, perm = index.sort(dim=1)
    values = values.gather(1, perm)
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    values, index = values.gather(1, order), index.gather(1, order)
    # Ties at the k-th place that reach past it: the lowest indices among the tied ones.
    kth = values[:, -1:]
    for row in crowded:
        above = (scores[row] > kth[row]).nonzero().flatten()
        tied = (scores[row] == kth[row]).nonzero().flatten()[: k - above.numel()]
        keep = torch.cat([above, tied])
        sub = scores[row, keep]
        order_row = torch.sort(sub, descending=True, stable=True).indices
        values[row], index[row] = sub[order_row], keep[order_row]
    return values, index
