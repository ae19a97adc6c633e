"""Merge synthetic job titles into real vacancy titles by encoder similarity (the paper's Appendix B).

Each distinct synthetic title (case- and space-insensitive) is compared with every real title by the cosine
of their mean-pooled embeddings (any backbone; the paper uses JobBERT-v2). Every real title at or above the
threshold (the paper: 0.7) is a match, so one synthetic title may match several; each match adds the synthetic
title's skills to that real title. A synthetic title without a match is kept as its own J node. The match
count over a range of thresholds is the paper's Figure 5 (:func:`plot_thresholds`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from uwe_lightning.protocol.leakage import query_key

if TYPE_CHECKING:
    from uwe_lightning.ranking.ranker import Ranker

DEFAULT_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.50 ... 0.95


@dataclass
class MergeResult:
    edges: list[tuple[str, str]]  # (skill, text): matched real titles and unmatched synthetic titles
    matches: list[tuple[str, str, float]]  # (synthetic title, real title, cosine) at the threshold
    stats: dict[str, Any] = field(default_factory=dict)


def similarity_matches(ranker: Ranker, synthetic: Sequence[str], real: Sequence[str], threshold: float,
                       block_size: int = 256) -> tuple[np.ndarray, list[list[tuple[int, float]]]]:
    """Per synthetic title: its best cosine with any real title, and its (real index, cosine) matches at
    ``>= threshold``, best first (ties by real index)."""
    queries = ranker.encode(list(synthetic), "query")
    targets = ranker.encode(list(real), "target")
    best = np.full(len(synthetic), -1.0)
    matches: list[list[tuple[int, float]]] = [[] for _ in synthetic]
    for start, scores in ranker.score_blocks(queries, targets, block_size=block_size):
        scores = scores.cpu()
        best[start : start + scores.shape[0]] = scores.max(dim=1).values.numpy()
        rows, cols = torch.nonzero(scores >= threshold, as_tuple=True)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            matches[start + r].append((c, float(scores[r, c])))
    for found in matches:
        found.sort(key=lambda m: (-m[1], m[0]))
    return best, matches


def merge_titles(
    synthetic_edges: Sequence[tuple[str, str]],
    real_titles: Sequence[str],
    ranker: Ranker,
    threshold: float = 0.7,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    max_matches: int | None = None,
    existing_edges: set[tuple[str, str]] | None = None,
) -> MergeResult:
    """The merged J edges (``(skill, text)``, in the order of ``synthetic_edges``, duplicates removed).

    ``existing_edges``: (query_key(text), skill) pairs the real J graph already has, to count what is new.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"merge.threshold must be in (0, 1], got {threshold}")
    distinct: dict[str, str] = {}
    for _, text in synthetic_edges:
        distinct.setdefault(query_key(text), text)
    keys = list(distinct)
    real = list(dict.fromkeys(real_titles))
    best, matches = similarity_matches(ranker, [distinct[k] for k in keys], real, threshold)
    if max_matches is not None:
        matches = [m[:max_matches] for m in matches]
    by_key = dict(zip(keys, matches, strict=True))

    edges: dict[tuple[str, str], None] = {}
    for skill, text in synthetic_edges:
        found = by_key[query_key(text)]
        for target in ([real[i] for i, _ in found] if found else [text]):
            edges.setdefault((skill, target), None)
    existing = existing_edges or set()
    real_keys = {query_key(t) for t in real}
    on_real = [(s, t) for s, t in edges if query_key(t) in real_keys]
    curve = {f"{t:.2f}": int((best >= t).sum()) for t in thresholds}
    stats = {
        "synthetic_edges": len(synthetic_edges),
        "synthetic_titles": len(keys),
        "real_titles": len(real),
        "threshold": threshold,
        "max_matches": max_matches,
        "matched_titles": int(sum(bool(m) for m in matches)),
        "unmatched_titles": int(sum(not m for m in matches)),
        "matches": int(sum(len(m) for m in matches)),
        "real_titles_enriched": len({real[i] for m in matches for i, _ in m}),
        "edges_out": len(edges),
        "edges_on_real_titles": len(on_real),
        "edges_on_real_titles_new": sum((query_key(t), s) not in existing for s, t in on_real),
        "edges_on_own_synthetic_titles": len(edges) - len(on_real),
        "matched_titles_by_threshold": curve,
        "best_cosine_quantiles": {q: float(np.quantile(best, float(q))) for q in ("0.1", "0.5", "0.9")}
        if len(best) else {},
    }
    pairs = [(distinct[k], real[i], round(c, 4)) for k in keys for i, c in by_key[k]]
    return MergeResult(edges=list(edges), matches=pairs, stats=stats)


def plot_thresholds(stats: dict[str, Any], path, title: str = ""):
    """The paper's Figure 5: synthetic titles with at least one match, over the similarity threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from uwe_lightning.io import atomic_save_figure

    curve = stats["matched_titles_by_threshold"]
    xs = [float(t) for t in curve]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(xs, list(curve.values()), marker="o", label="synthetic titles with >= 1 match")
    ax.axhline(stats["synthetic_titles"], color="grey", linestyle="--", label="all synthetic titles")
    ax.axvline(stats["threshold"], color="red", linestyle=":", label=f"threshold {stats['threshold']}")
    ax.set_xlabel("cosine similarity threshold")
    ax.set_ylabel("synthetic job titles")
    ax.set_title(title or f"Matches into {stats['real_titles']:,} real titles")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return atomic_save_figure(fig, path)
