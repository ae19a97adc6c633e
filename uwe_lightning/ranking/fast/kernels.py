"""The fused scorers: one product per (query block, tile), reduced while the tile is in cache.

Why here. Per query block, ``G = q_unit @ u.T`` per tile gives every token cosine; the raw dot products the
softmax needs are ``G * |q| * |y|`` (no second product), and the scorer's reduction (mean, maxsim, softmax,
softmax_ymean) runs on the tile right away. Each reduction is the reference scorer's definition
(:mod:`uwe_lightning.model.scoring`) on real tokens, vectorised over the tile's position-major rows. Where the
scores land among the original columns is :mod:`uwe_lightning.ranking.fast.placement`'s concern.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from uwe_lightning.ranking.fast.buckets import PreparedTargets, QueryGroup
from uwe_lightning.ranking.fast.placement import column_runs_of

#: Elements of one product ``[query rows, tile tokens]``: bounds the rows of a query block per call.
DEFAULT_TILE_ELEMENTS = 1 << 20


# ----------------------------------------------------------------------------------------------------------
# Reductions: the reference scorers' definitions on dense, unpadded tiles
# ----------------------------------------------------------------------------------------------------------

# A reduction maps (G [b * lq, L * n], b, lq, n, L, q_norms [b * lq], y_norms [L * n], tau) to scores [b, n];
# G's columns are position-major (l * n + j), so every reduction over a text's tokens is over an outer axis.
Reduction = Callable[[Tensor, int, int, int, int, Tensor, Tensor, float | None], Tensor]


def _reduce_mean(g: Tensor, b: int, lq: int, n: int, length: int, qn: Tensor, yn: Tensor, tau) -> Tensor:
    """Cosine of the pooled vectors: the product itself (both sides are one unit vector per text)."""
    return g.view(b, n)


def _reduce_maxsim(g: Tensor, b: int, lq: int, n: int, length: int, qn: Tensor, yn: Tensor, tau) -> Tensor:
    """Mean over the query tokens of the max cosine over the target's tokens."""
    best = g.view(b, lq, length, n).amax(2) if length > 1 else g.view(b, lq, n)
    return best.mean(1) if lq > 1 else best.view(b, n)


def _reduce_softmax(g: Tensor, b: int, lq: int, n: int, length: int, qn: Tensor, yn: Tensor, tau) -> Tensor:
    """``<softmax_target(S / tau), cos>`` per query token, mean over query tokens; ``S = cos * |q| * |y|``.

    The softmax is written out (max, exp, the two sums) over the position axis: ``sum_l e_l cos_l / sum_l e_l``
    with ``e_l = exp(max((S_l - max S) / tau, -80))``, the reference's ``<softmax(S / tau), cos>``.
    """
    cos = g.view(b, lq, length, n)
    weights = (g * yn).mul_((qn / tau)[:, None]).view(b, lq, length, n)  # S / tau
    # exp of arguments far below zero (tau 0.1: most tokens) takes a slow path: clamped at -80, a weight of
    # e^-80 next to the max's e^0 = 1 is below float32 resolution, so the scores are unchanged (x2 faster)
    weights.sub_(weights.amax(2, keepdim=True)).clamp_(min=-80.0).exp_()
    per_token = (weights * cos).sum(2).div_(weights.sum(2))  # [b, lq, n]
    return per_token.mean(1) if lq > 1 else per_token.view(b, n)


def _reduce_softmax_ymean(g: Tensor, b: int, lq: int, n: int, length: int, qn: Tensor, yn: Tensor, tau
                          ) -> Tensor:
    """Target pooled (``length`` 1): softmax over the QUERY tokens of ``q_i . ybar / tau``, times the cosines."""
    cos = g.view(b, lq, n)
    logits = (g * yn).mul_((qn / tau)[:, None]).view(b, lq, n)
    return (torch.softmax(logits, dim=1) * cos).sum(1)


REDUCTIONS: dict[str, Reduction] = {
    "mean": _reduce_mean, "maxsim": _reduce_maxsim, "softmax": _reduce_softmax,
    "softmax_ymean": _reduce_softmax_ymean,
}


# ----------------------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------------------


def score(targets: PreparedTargets, groups: Sequence[QueryGroup], n_queries: int, scorer: str,
          tau: float | None = None, tile_elements: int = DEFAULT_TILE_ELEMENTS) -> Tensor:
    """Scores ``[n_queries, len(targets)]`` (float32, columns in the targets' original order) of the query
    ``groups`` (rows ``0 .. n_queries - 1`` between them) with ``scorer``'s reduction.

    Queries run in steps of as many rows as keep one product under ``tile_elements`` values (``mean``: all rows,
    its product is the scores themselves); every tile is multiplied once per step and released right after (a
    mapped space drops its pages). Where the sorted order is a few runs of the original columns
    (:func:`column_runs`: a space of one token count), each tile's scores go straight into their columns and
    duplicates are copied from their first copies; otherwise the sorted scores are gathered once at the end.
    """
    if scorer not in REDUCTIONS:
        raise KeyError(f"no fast path for scorer {scorer!r}; known: {', '.join(sorted(REDUCTIONS))}")
    reduce = REDUCTIONS[scorer]
    device = targets.device
    runs = column_runs_of(targets)
    columns = len(targets) if runs is not None else targets.n_distinct
    out = torch.empty((n_queries, columns), dtype=torch.float32, device=device)
    widest = max((t.n_texts * t.length for t in targets.tiles), default=1)
    for group in groups:
        rows_per_step = group.rows.numel() if scorer == "mean" else max(
            1, tile_elements // max(1, widest * group.length))
        for first in range(0, group.rows.numel(), rows_per_step):
            last = min(first + rows_per_step, group.rows.numel())
            b = last - first
            q_unit = group.unit[first * group.length : last * group.length]
            q_norms = group.norms[first * group.length : last * group.length]
            whole = b == n_queries  # one step covers every query row: write the scores in place
            block = out if whole else torch.empty((b, columns), dtype=torch.float32, device=device)
            for tile in targets.tiles:
                g = targets.tile_product(q_unit, tile)
                scores = reduce(g, b, group.length, tile.n_texts, tile.length, q_norms, tile.norms, tau)
                targets.release(tile)
                if runs is None:
                    block[:, tile.start : tile.stop] = scores
                    continue
                for a, z, column in runs.runs:  # the runs this tile overlaps, into their original columns
                    lo, hi = max(a, tile.start), min(z, tile.stop)
                    if lo < hi:
                        block[:, column + lo - a : column + hi - a] = scores[:, lo - tile.start : hi - tile.start]
            if not whole:
                out[group.rows[first:last]] = block
    if runs is None:
        return out.index_select(1, targets.position)
    if runs.duplicates.numel():
        out[:, runs.duplicates.to(device)] = out[:, runs.sources.to(device)]
    return out
