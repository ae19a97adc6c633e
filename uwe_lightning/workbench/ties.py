"""MAP and RP@k under ties, in expectation: the ``ties="expected"`` rule of :mod:`~uwe_lightning.workbench.metrics`.

Some models score many targets alike by construction: the popularity prior gives every query one list, and every
skill without a training edge (every occupation target) the score 0. Ranking such ties "lower index first" would
make the number depend on the order of the target file, so for these the metrics are their exact expectation over
a uniformly random order within every group of equal scores (McSherry & Najork, "Computing information retrieval
performance measures efficiently in the presence of tied scores", ECIR 2008).

For a tie group of ``n`` targets below ``s`` higher-scored ones, holding ``t`` of the query's positives with ``c``
positives above it, each of its positives adds to the AP sum

    ((c + 1) dH + (t - 1) / (n - 1) * (n - (s + 1) dH)) / n,    dH = H(s + n) - H(s)  (harmonic numbers),

(a position ``s + j`` holds a positive with chance ``t / n``, and then ``(j - 1)(t - 1)/(n - 1)`` others of the
group before it on average), and to the count of positives in the top k ``clamp(k - s, 0, n) / n``. ``dH`` comes
from the digamma function, so a group of any size costs O(1); an untied positive (``n = 1``) gets exactly
``(c + 1) / (s + 1)``, so without ties both rules give the same numbers, bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def expected_per_query_metrics(
    higher: Tensor, tied: Tensor, rows: Tensor, n_rows: int, ks: Sequence[int]
) -> tuple[Tensor, Tensor, dict[int, Tensor]]:
    """:func:`~uwe_lightning.workbench.metrics.per_query_metrics` in expectation over a uniformly random order
    within each group of tied scores (the module docstring has the formula).

    ``higher`` / ``tied``: per positive, from :func:`~uwe_lightning.workbench.metrics.tie_groups`; ``rows``: its
    block row. Positives of one row with the same ``higher`` count share one tie group (``t`` of them); ``c`` =
    the row's positives above it.
    An untied positive (``tied == 1``) gets exactly what the ``first`` rule gives it.
    """
    counts = torch.bincount(rows, minlength=n_rows)
    zeros = torch.zeros(n_rows, dtype=torch.float64, device=rows.device)
    denominator = counts.clamp(min=1).double()
    if not rows.numel():
        return counts, zeros, {k: zeros.clone() for k in ks}
    # Sort by (row, higher): a tie group is a run of equal keys, the row's positives above it come first.
    key = rows * (int(higher.max()) + 1) + higher
    order = torch.argsort(key)
    key, rows, higher, tied = key[order], rows[order], higher[order], tied[order]
    _, group, group_size = torch.unique_consecutive(key, return_inverse=True, return_counts=True)
    group_start = torch.cumsum(group_size, 0) - group_size
    row_start = torch.cumsum(counts, 0) - counts
    above = (group_start[group] - row_start[rows]).double()  # c
    in_group = group_size[group].double()  # t
    s, n = higher.double(), tied.double()
    harmonic_gap = torch.special.digamma(s + n + 1) - torch.special.digamma(s + 1)  # H(s + n) - H(s)
    spread = (in_group - 1) / (n - 1).clamp(min=1) * (n - (s + 1) * harmonic_gap)
    expected_precision = ((above + 1) * harmonic_gap + spread) / n
    untied = tied == 1
    expected_precision[untied] = (above[untied] + 1) / (s[untied] + 1)  # exact, as without the tie rule
    average_precision = zeros.index_add(0, rows, expected_precision) / denominator
    r_precision = {}
    for k in ks:
        in_top_k = (k - higher).clamp(min=0).minimum(tied).double() / n
        r_precision[k] = zeros.index_add(0, rows, in_top_k) / counts.clamp(min=1, max=k).double()
    return counts, average_precision, r_precision
