"""Fast scoring of a cached target space: one product over cached unit tokens, reduced tile by tile.

Why. The reference scorers (:mod:`uwe_lightning.model.scoring`) are pure functions of padded token embeddings:
every call normalises the target tokens again, builds the raw and the cosine similarity tensors with two
einsums, masks the padding and reduces. Ranking one fixed target space many times, all of that but one product
is a property of the targets, so :class:`PreparedTargets` computes it once:

- the unit tokens ``u = y / max(|y|, eps)`` (what ``F.normalize`` gives) and the norms ``|y|``;
- the texts grouped by exact token count, so that ``n`` texts of ``L`` tokens are one dense ``[L * n, H]``
  slice: no padding and no masks; groups are cut into *tiles* of at most ``tile_tokens`` tokens, stored
  position-major (row ``l * n + j`` is token ``l`` of text ``j``), so that the reductions over a text's tokens
  run over an outer axis, vectorised across the ``n`` texts (a softmax over 6 contiguous values is slow);
- texts with byte-identical stored tokens are scored once and share the score: exact ties stay exact
  whichever tile (and so whichever GEMM call) a copy would have fallen into;
- per query (block), one product ``G = q_unit @ u.T`` per tile gives every token cosine; the raw dot products
  the softmax needs are ``G * |q| * |y|`` (no second product), and the scorer's reduction (max, softmax, mean)
  runs on the tile while it is in cache.

Each reduction is the reference scorer's definition on real tokens (the reference's masks only remove
padding, and there is none); tests/test_fast.py checks that the scores equal the reference scorer's within
float32 rounding and that the top-k is the same, ties included (:func:`topk_stable`).

Precision (``precision``): ``fp32`` keeps the unit tokens in float32 (exact up to rounding). ``fp16`` stores
them as float16 (half the bytes) and multiplies with float32 queries and float32 accumulation: on CPU with
fbgemm's fp16-weight GEMM (the tokens packed once), elsewhere by converting each tile to float32 in cache.
:data:`DEFAULT_PRECISION` gives ``fp16`` only to the scorers whose top-10 agreement with ``fp32`` was measured
>= 99.9 % on WorkBench (experiments/results/fast/agreement.md); a precision can always be asked for.


The package, one module per concept (each imports only those listed before it):

- :mod:`~uwe_lightning.ranking.fast.buckets`: the layout (precision, tiles by exact length, duplicates,
  :class:`PreparedTargets`, query groups);
- :mod:`~uwe_lightning.ranking.fast.placement`: sorted positions back to original columns, :func:`topk_stable`;
- :mod:`~uwe_lightning.ranking.fast.kernels`: the reductions and :func:`score`;
- :mod:`~uwe_lightning.ranking.fast.mapped`: the same layout in a memory-mapped file (:class:`MappedTargets`,
  :func:`save_prepared` / :func:`open_prepared`; experiments/bench/bench_peers.py: 1M targets), and :func:`subset`.

``from uwe_lightning.ranking import fast`` gives every public name below, as the single module did.
"""

from uwe_lightning.ranking.fast.buckets import (
    DEFAULT_PRECISION,
    DEFAULT_TILE_TOKENS,
    PRECISIONS,
    PreparedTargets,
    QueryGroup,
    Tile,
    fbgemm_fp16_available,
    first_copies,
    position_major,
    prepared_of,
    query_groups,
    resolve_precision,
    sorted_layout,
    unit_and_norms,
)
from uwe_lightning.ranking.fast.kernels import DEFAULT_TILE_ELEMENTS, REDUCTIONS, Reduction, score
from uwe_lightning.ranking.fast.mapped import (
    FORMAT_VERSION,
    GATHER_ROWS,
    MappedTargets,
    PreparedWriter,
    mean_pooled,
    open_prepared,
    prepared_writer,
    save_prepared,
    subset,
)
from uwe_lightning.ranking.fast.placement import MAX_COLUMN_RUNS, ColumnRuns, column_runs, topk_stable
from uwe_lightning.ranking.packed import EncodedTexts

__all__ = [
    "DEFAULT_PRECISION", "DEFAULT_TILE_ELEMENTS", "DEFAULT_TILE_TOKENS", "FORMAT_VERSION", "GATHER_ROWS",
    "MAX_COLUMN_RUNS", "PRECISIONS", "REDUCTIONS", "ColumnRuns", "EncodedTexts", "MappedTargets", "PreparedTargets",
    "PreparedWriter", "QueryGroup", "Reduction", "Tile", "column_runs", "fbgemm_fp16_available", "first_copies",
    "mean_pooled", "open_prepared", "position_major", "prepared_of", "prepared_writer", "query_groups",
    "resolve_precision", "save_prepared", "score", "sorted_layout", "subset", "topk_stable", "unit_and_norms",
]
