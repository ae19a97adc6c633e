"""A ranking as rows: what the batch CLI writes (``rank out=...``) and what the service answers (``/rank``).

One place decides the row layout (rank from 1, the target's id and label, the score as a float), so the file
written by ``rank`` and the JSON of the service never drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

#: The fields of one ranked target, in the order the CSV writes them (after ``query``).
ROW_FIELDS = ("rank", "id", "label", "score")


def top_rows(scores: Tensor, index: Tensor, ids: Sequence[str], labels: Sequence[str]) -> list[list[dict]]:
    """Per query, its top targets as ``{"rank", "id", "label", "score"}``, best first.

    ``scores`` / ``index``: :meth:`Ranker.rank`'s ``[n_queries, k]`` outputs; ``ids`` / ``labels``: the
    target space's id and text per target index.

    >>> import torch
    >>> top_rows(torch.tensor([[0.9, 0.5]]), torch.tensor([[1, 0]]), ["a", "b"], ["A", "B"])[0][0]
    {'rank': 1, 'id': 'b', 'label': 'B', 'score': 0.8999999761581421}
    """
    out = []
    for row_scores, row_index in zip(scores.tolist(), index.tolist(), strict=True):
        out.append([{"rank": r, "id": ids[i], "label": labels[i], "score": float(s)}
                    for r, (i, s) in enumerate(zip(row_index, row_scores, strict=True), 1)])
    return out
