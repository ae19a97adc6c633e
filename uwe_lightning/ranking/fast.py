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

:class:`MappedTargets` is the same structure in a memory-mapped file (:func:`save_prepared` /
:func:`open_prepared`): tiles are read from the page cache, converted in cache, and the pages of each tile are
released after use (``madvise(MADV_DONTNEED)``), so the resident memory stays bounded by a few tiles whatever
the size of the space (experiments/bench_peers.py: 1M targets).

This module is over 400 lines: the in-memory and the memory-mapped forms of one layout (tiles by exact length,
position-major rows, the writer and the reader of its file) share their invariants and are scored by the same
reductions; split, the reader would re-derive the writer's layout in another module.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from uwe_lightning.io import atomic_write_path
from uwe_lightning.ranking.packed import EncodedTexts, plan_buckets

_EPS = 1e-8  # F.normalize's eps in the reference scorers
PRECISIONS: tuple[str, ...] = ("fp32", "fp16")
#: Storage precision per scorer when the ranker is given ``precision="auto"``: fp16 only where its top-10
#: agreement with fp32 was measured >= 99.9 % on WorkBench test (experiments/results/fast/agreement.md).
DEFAULT_PRECISION: dict[str, str] = {"mean": "fp16", "maxsim": "fp16", "softmax_ymean": "fp16", "softmax": "fp16"}
#: Target tokens per tile: a [rows, tile] product of a single query stays in L2 / L3.
DEFAULT_TILE_TOKENS = 8192
#: Elements of one product ``[query rows, tile tokens]``: bounds the rows of a query block per call.
DEFAULT_TILE_ELEMENTS = 1 << 20


def resolve_precision(precision: str, scorer: str, device: torch.device | str = "cpu") -> str:
    """``auto``: :data:`DEFAULT_PRECISION` of ``scorer``; an explicit precision must be one of :data:`PRECISIONS`."""
    if precision == "auto":
        return DEFAULT_PRECISION.get(scorer, "fp32")
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: must be auto or one of {', '.join(PRECISIONS)}")
    return precision


def fbgemm_fp16_available() -> bool:
    """Whether torch has fbgemm's fp16-weight GEMM (x86 CPU builds)."""
    return "fbgemm" in torch.backends.quantized.supported_engines and hasattr(torch.ops.quantized, "linear_dynamic_fp16")


def unit_and_norms(tokens: Tensor) -> tuple[Tensor, Tensor]:
    """``(tokens / max(|tokens|, eps), |tokens|)`` in float32: what ``F.normalize`` gives, and the norms."""
    tokens = tokens.float()
    norms = torch.linalg.vector_norm(tokens, dim=-1)
    return tokens / norms.clamp_min(_EPS).unsqueeze(-1), norms  # = F.normalize(tokens, dim=-1, eps=_EPS)


# ----------------------------------------------------------------------------------------------------------
# Tiles and products
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Tile:
    """``stop - start`` texts of ``length`` tokens each, at positions ``[start, stop)`` of the sorted order.

    ``weight``: the product's operand for their unit tokens, position-major (row ``l * n + j`` = token ``l`` of
    the tile's text ``j``): a float32 ``[length * n, H]`` tensor, fbgemm's packed fp16 weight, or a float16
    tensor to convert; ``norms``: their token norms ``[length * n]`` in the same order.
    """

    length: int
    start: int
    stop: int
    weight: object
    norms: Tensor
    kind: str  # "fp32" | "fbgemm_fp16" | "fp16"

    @property
    def n_texts(self) -> int:
        return self.stop - self.start


def _product(q_unit: Tensor, tile: Tile) -> Tensor:
    """``q_unit @ unit_tokens.T`` for one tile: ``[rows, n * length]`` float32."""
    if tile.kind == "fbgemm_fp16":
        return torch.ops.quantized.linear_dynamic_fp16(q_unit, tile.weight)
    weight = tile.weight if tile.kind == "fp32" else tile.weight.float()  # type: ignore[union-attr]
    return F.linear(q_unit, weight)


def _make_weight(unit: Tensor, precision: str, device: torch.device) -> tuple[object, str]:
    if precision == "fp32":
        return unit.to(device).contiguous(), "fp32"
    if device.type == "cpu" and fbgemm_fp16_available():
        return torch.ops.quantized.linear_prepack_fp16(unit.contiguous(), None), "fbgemm_fp16"
    return unit.to(device, torch.float16).contiguous(), "fp16"


def position_major(values: Tensor, n: int, length: int) -> Tensor:
    """Rows of ``n`` texts of ``length`` tokens each, text-major (``j * length + l``) -> position-major
    (``l * n + j``); works for ``[tokens, H]`` and ``[tokens]``.

    >>> position_major(torch.arange(6), n=2, length=3).tolist()
    [0, 3, 1, 4, 2, 5]
    """
    return values.view(n, length, *values.shape[1:]).transpose(0, 1).reshape(values.shape)


def _tile_spans(lengths_sorted: Tensor, tile_tokens: int) -> Iterator[tuple[int, int, int]]:
    """``(length, start, stop)`` runs of equal length in ``lengths_sorted``, cut at ``tile_tokens`` tokens."""
    if lengths_sorted.numel() == 0:
        return
    values, counts = torch.unique_consecutive(lengths_sorted, return_counts=True)
    start = 0
    for value, count in zip(values.tolist(), counts.tolist(), strict=True):
        step = max(1, tile_tokens // value)
        for s in range(start, start + count, step):
            yield value, s, min(s + step, start + count)
        start += count


# ----------------------------------------------------------------------------------------------------------
# Prepared target spaces
# ----------------------------------------------------------------------------------------------------------


def first_copies(encoded: EncodedTexts) -> Tensor:
    """For each text, the lowest index of a text with byte-identical stored tokens (itself if none).

    >>> t = [torch.ones(2, 3), torch.zeros(1, 3), torch.ones(2, 3), torch.zeros(2, 3)]
    >>> first_copies(EncodedTexts.from_token_list(t)).tolist()
    [0, 1, 0, 3]
    """
    import xxhash

    raw = memoryview(encoded.tokens.contiguous().view(torch.uint8).numpy()).cast("B")
    bounds = (encoded.offsets * (encoded.hidden_size * encoded.tokens.element_size())).tolist()
    seen: dict[int, list[int]] = {}
    first = list(range(len(encoded)))
    for i in range(len(encoded)):
        chunk = raw[bounds[i] : bounds[i + 1]]
        candidates = seen.setdefault(xxhash.xxh3_64_intdigest(chunk), [])
        for j in candidates:  # a hash match is checked byte for byte (a collision stays a distinct text)
            if raw[bounds[j] : bounds[j + 1]] == chunk:
                first[i] = j
                break
        else:
            candidates.append(i)
    return torch.tensor(first, dtype=torch.int64)


def sorted_layout(lengths: Tensor, first: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(order, position)``: the distinct texts (``first[j] == j``) sorted by token count (stable), and for
    every text the sorted position of its first copy."""
    n = lengths.numel()
    first = torch.arange(n) if first is None else first
    distinct = (first == torch.arange(n)).nonzero().flatten()
    order = distinct[torch.sort(lengths[distinct], stable=True).indices]
    slot = torch.full((n,), -1, dtype=torch.int64)
    slot[order] = torch.arange(order.numel())
    return order, slot[first]



class PreparedTargets:
    """A target space ready for :func:`score`: unit tokens by exact length in tiles, their norms, the order.

    ``order[p]`` is the text (column of the EncodedTexts) at sorted position ``p`` (one per distinct text);
    ``position[j]`` the sorted position whose score text ``j`` gets (a duplicate shares its first copy's).
    Build it with :meth:`from_encoded` (or ``EncodedTexts.prepared``, which keeps it on the space).
    """

    def __init__(self, tiles: list[Tile], order: Tensor, position: Tensor, hidden_size: int, pooled: bool,
                 precision: str, model_id: str | None = None, device: torch.device | str = "cpu") -> None:
        self.tiles = tiles
        self.order = order
        self.position = position
        self.hidden_size = hidden_size
        self.pooled = pooled
        self.precision = precision
        self.model_id = model_id
        self.device = torch.device(device)

    def __len__(self) -> int:
        return int(self.position.numel())

    @property
    def n_distinct(self) -> int:
        return int(self.order.numel())

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(n={len(self)}, tiles={len(self.tiles)}, precision={self.precision}, "
                f"pooled={self.pooled})")

    @classmethod
    def from_encoded(cls, encoded: EncodedTexts, precision: str = "fp32", device: torch.device | str = "cpu",
                     tile_tokens: int = DEFAULT_TILE_TOKENS) -> PreparedTargets:
        """Sort ``encoded`` by token count and prepare each tile (one tile in float32 at a time: bounded
        temporary memory)."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision={precision!r}: must be one of {', '.join(PRECISIONS)}")
        device = torch.device(device)
        first = first_copies(encoded)
        order, position = sorted_layout(encoded.lengths, first)
        lengths = encoded.lengths[order]
        tiles = []
        for length, start, stop in _tile_spans(lengths, tile_tokens):
            rows, _ = encoded.token_rows(order[start:stop])
            unit, norms = unit_and_norms(position_major(encoded.tokens[rows], stop - start, length))
            weight, kind = _make_weight(unit, precision, device)
            tiles.append(Tile(length, start, stop, weight, norms.to(device), kind))
        return cls(tiles, order.to(device), position.to(device), encoded.hidden_size, encoded.pooled, precision,
                   encoded.model_id, device)

    @classmethod
    def from_unit(cls, unit: Tensor, norms: Tensor, offsets: Tensor, pooled: bool, model_id: str | None = None,
                  tile_tokens: int = DEFAULT_TILE_TOKENS) -> PreparedTargets:
        """A float32 prepared space from tokens already normalised (``unit``) with their ``norms`` (packed by
        ``offsets``): a mapped file's texts scored as the file scores them, without normalising again."""
        encoded = EncodedTexts(unit.float(), offsets, pooled=pooled, model_id=model_id)
        order, position = sorted_layout(encoded.lengths, first_copies(encoded))
        tiles = []
        for length, start, stop in _tile_spans(encoded.lengths[order], tile_tokens):
            rows, _ = encoded.token_rows(order[start:stop])
            rows = position_major(rows, stop - start, length)
            tiles.append(Tile(length, start, stop, encoded.tokens[rows].contiguous(), norms[rows], "fp32"))
        return cls(tiles, order, position, encoded.hidden_size, pooled, "fp32", model_id)

    def memory_bytes(self) -> int:
        """Bytes of the prepared operands (fbgemm's packed weights counted as fp16 tokens)."""
        total = (self.order.numel() + self.position.numel()) * 8
        for tile in self.tiles:
            values = tile.n_texts * tile.length * self.hidden_size
            total += values * (4 if tile.kind == "fp32" else 2) + tile.norms.numel() * 4
        return total

    def tile_product(self, q_unit: Tensor, tile: Tile) -> Tensor:
        return _product(q_unit, tile)

    def release(self, tile: Tile) -> None:
        """Called after a tile is used (mapped spaces drop its pages)."""


def prepared_of(encoded: EncodedTexts, precision: str = "fp32", device: torch.device | str = "cpu",
                tile_tokens: int | None = None) -> PreparedTargets:
    """The :class:`PreparedTargets` of ``encoded`` (unit tokens by exact length, in ``precision``), built on
    first use per setting and kept on the EncodedTexts, like its buckets."""
    tile_tokens = tile_tokens or DEFAULT_TILE_TOKENS
    key = (precision, str(torch.device(device)), tile_tokens)
    if key not in encoded._prepared:
        encoded._prepared[key] = PreparedTargets.from_encoded(encoded, precision, device, tile_tokens)
    return encoded._prepared[key]  # type: ignore[return-value]


def subset(targets: EncodedTexts | MappedTargets, columns: Tensor) -> PreparedTargets:
    """The texts at ``columns`` (original indices, in that order) as a small float32 prepared space: what an
    approximate prefilter's candidates are rescored on (:mod:`uwe_lightning.ranking.prefilter`)."""
    if isinstance(targets, MappedTargets):
        unit, norms, offsets = targets.gather(columns)
        return PreparedTargets.from_unit(unit, norms, offsets, targets.pooled, targets.model_id)
    return PreparedTargets.from_encoded(targets.select(columns), "fp32")


# ----------------------------------------------------------------------------------------------------------
# Queries
# ----------------------------------------------------------------------------------------------------------


@dataclass
class QueryGroup:
    """Queries of one token count: ``rows`` of the batch, unit tokens ``[n * length, H]`` and norms."""

    rows: Tensor
    length: int
    unit: Tensor
    norms: Tensor


def query_groups(queries: EncodedTexts, device: torch.device | str = "cpu") -> list[QueryGroup]:
    """The queries of a packed batch grouped by exact token count (no padding)."""
    if len(queries) == 1 or bool((queries.lengths == queries.lengths[0]).all()):  # one group: no gathering
        unit, norms = unit_and_norms(queries.tokens.to(device))
        rows = torch.arange(len(queries), device=device)
        return [QueryGroup(rows, int(queries.offsets[1]), unit, norms)]
    out = []
    for rows in plan_buckets(queries.lengths, min_size=1, max_padding=0.0):
        token_rows, _ = queries.token_rows(rows)
        unit, norms = unit_and_norms(queries.tokens[token_rows].to(device))
        out.append(QueryGroup(rows.to(device), int(queries.lengths[rows[0]]), unit, norms))
    return out


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
    runs = _column_runs_of(targets)
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


def _column_runs_of(targets) -> ColumnRuns | None:
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


# ----------------------------------------------------------------------------------------------------------
# Memory-mapped prepared spaces
# ----------------------------------------------------------------------------------------------------------

_FORMAT = "uwe_prepared_targets"
FORMAT_VERSION = 2  # 2: tiles position-major
GATHER_ROWS = 128  # token rows read from a mapped file between two page releases (MappedTargets.gather)


class MappedTargets(PreparedTargets):
    """A prepared space read from a memory-mapped file: fp16 unit tokens by exact length (safetensors layout).

    Nothing is read until a tile is scored; each tile is converted to float32 in cache and its pages are then
    dropped from this process (``madvise(MADV_DONTNEED)``; the kernel's page cache keeps them for the next
    query while memory allows), so the resident set stays near one tile plus the norms and the order.
    ``pooled_vectors``: the mean-pooled vector of each text in original order (``[N, H]`` float16, mapped),
    for an approximate prefilter (:mod:`uwe_lightning.ranking.prefilter`).
    """

    def __init__(self, path: str | os.PathLike, release_pages: bool = True) -> None:
        self.path = Path(path)
        header, data_start = _read_safetensors_header(self.path)
        meta = json.loads(header.pop("__metadata__", {}).get(_FORMAT, "null") or "null")
        if not isinstance(meta, dict) or meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"{self.path}: not a prepared target space (no '{_FORMAT}' v{FORMAT_VERSION} header)")
        self._file = open(self.path, "rb")  # noqa: SIM115 (kept open for the mapping's lifetime)
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        # A second mapping for scattered reads (a prefilter's candidates): no read-around there (the device's
        # read-ahead, 8 MiB here, would map megabytes around every candidate), and dropped after each gather.
        self._random = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        if hasattr(self._random, "madvise"):
            self._random.madvise(mmap.MADV_RANDOM)
        self._data_start = data_start
        self._spans = {name: (data_start + int(info["data_offsets"][0]), info) for name, info in header.items()}
        self.release_pages = release_pages and hasattr(self._map, "madvise")
        hidden = int(meta["hidden_size"])
        order = self._tensor("order").clone()
        position = self._tensor("position").clone()
        norms = self._tensor("norms").clone()  # 4 bytes per token: kept in memory
        self._norms = norms
        self._unit_offset, _ = self._spans["unit"]
        tiles = []
        token = 0
        lengths = torch.empty(order.numel(), dtype=torch.int64)
        first_token = torch.empty(order.numel(), dtype=torch.int64)  # of each sorted position, position-major
        stride = torch.empty(order.numel(), dtype=torch.int64)  # rows between its consecutive tokens (= tile n)
        for length, start, stop in meta["tiles"]:
            count = (stop - start) * length
            tiles.append(Tile(length, start, stop, (token, count), norms[token : token + count], "mapped_fp16"))
            lengths[start:stop] = length
            first_token[start:stop] = token + torch.arange(stop - start)
            stride[start:stop] = stop - start
            token += count
        self._lengths_sorted = lengths
        self._first_token, self._stride = first_token, stride
        self._total_tokens = token
        super().__init__(tiles, order, position, hidden, bool(meta["pooled"]), "fp16", meta.get("model_id"), "cpu")
        self.meta = meta

    def _tensor(self, name: str) -> Tensor:
        offset, info = self._spans[name]
        dtype = {"F16": torch.float16, "F32": torch.float32, "I64": torch.int64}[info["dtype"]]
        return _frombuffer(self._map, dtype, math.prod(info["shape"]), offset).view(*info["shape"])

    @property
    def total_tokens(self) -> int:
        return self._total_tokens

    @property
    def pooled_vectors(self) -> Tensor | None:
        return self._tensor("pooled") if "pooled" in self._spans else None

    def unit_tokens(self, tile: Tile) -> Tensor:
        token, count = tile.weight  # type: ignore[misc]
        return _frombuffer(self._map, torch.float16, count * self.hidden_size,
                           self._unit_offset + 2 * token * self.hidden_size).view(count, self.hidden_size)

    def tile_product(self, q_unit: Tensor, tile: Tile) -> Tensor:
        return F.linear(q_unit, self.unit_tokens(tile).float())

    def gather(self, columns: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(unit tokens float32, norms, offsets)`` of the texts at ``columns`` (original indices), read from
        the file (only their pages are touched)."""
        slots = self.position[columns]
        lengths = self._lengths_sorted[slots]
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
        owner = torch.repeat_interleave(torch.arange(slots.numel()), lengths)
        rank = torch.arange(int(offsets[-1])) - offsets[:-1][owner]  # token index within its text
        rows = self._first_token[slots][owner] + rank * self._stride[slots][owner]
        unit = _frombuffer(self._random, torch.float16, self._total_tokens * self.hidden_size, self._unit_offset)
        unit = unit.view(self._total_tokens, self.hidden_size)
        tokens = torch.empty(rows.numel(), self.hidden_size)
        # In file order, a chunk at a time, the pages dropped after each: MADV_RANDOM stops read-ahead but not the
        # kernel's fault-around (up to 64 KiB of cached pages mapped around every fault), so gathering all rows
        # first would map most of a small file; a chunk maps at most GATHER_ROWS * 64 KiB.
        by_row = torch.argsort(rows)
        for chunk in by_row.split(GATHER_ROWS):
            tokens[chunk] = unit[rows[chunk]].float()
            self.release_all(mapped=False)
        return tokens, self._norms[rows], offsets

    def release_all(self, mapped: bool = True) -> None:
        """Drop every page of the file from this process (after a scattered read, or after reading the pooled
        vectors to build a prefilter); the kernel's page cache keeps them."""
        maps = (self._random, self._map) if mapped else (self._random,)
        for m in maps:
            if hasattr(m, "madvise"):
                m.madvise(mmap.MADV_DONTNEED)

    def release(self, tile: Tile) -> None:
        if not self.release_pages:
            return
        token, count = tile.weight  # type: ignore[misc]
        start = self._unit_offset + 2 * token * self.hidden_size
        stop = start + 2 * count * self.hidden_size
        page = mmap.PAGESIZE
        start = (start // page) * page
        self._map.madvise(mmap.MADV_DONTNEED, start, stop - start)

    def memory_bytes(self) -> int:
        """Bytes kept in memory (norms, order, position, token starts); the unit tokens stay in the file."""
        return (4 * self.order.numel() + self.position.numel()) * 8 + self._norms.numel() * 4

    def file_bytes(self) -> int:
        return self.path.stat().st_size

    def close(self) -> None:
        self.tiles, self.order, self.position = [], torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
        self._map.close()
        self._random.close()
        self._file.close()


def _frombuffer(buffer: mmap.mmap, dtype: torch.dtype, count: int, offset: int) -> Tensor:
    """A tensor viewing ``count`` values of a read-only mapping (never written: torch warns that it could be)."""
    if count == 0:
        return torch.zeros(0, dtype=dtype)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given buffer is not writable")
        return torch.frombuffer(buffer, dtype=dtype, count=count, offset=offset)


def _read_safetensors_header(path: Path) -> tuple[dict, int]:
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: too short for a safetensors file")
        (size,) = struct.unpack("<Q", raw)
        header = json.loads(fh.read(size))
    return header, 8 + size


class PreparedWriter:
    """Writes a prepared space into an open safetensors file, tile by tile (bounded memory); see
    :func:`prepared_writer`, which opens the file and publishes it atomically.

    The caller knows every text's token count up front (``lengths``, original order) and, optionally, which
    texts are copies of an earlier one (``first``, see :func:`first_copies`); :attr:`order` and :attr:`spans`
    say in which order the distinct texts' tokens must then be passed to :meth:`write` (sorted by length,
    ``(length, start, stop)`` runs). ``pooled``: the space is one pooled vector per text;
    ``with_pooled_vectors``: also store each text's mean-pooled vector (original order) for a prefilter.
    """

    def __init__(self, fh, lengths: Tensor, hidden_size: int, pooled: bool = False, model_id: str | None = None,
                 with_pooled_vectors: bool = False, tile_tokens: int = DEFAULT_TILE_TOKENS,
                 first: Tensor | None = None) -> None:
        lengths = lengths.to(torch.int64)
        if lengths.numel() == 0 or bool((lengths < 1).any()):
            raise ValueError("a prepared space needs at least one text, each with at least one token")
        self.order, self.position = sorted_layout(lengths, first)
        self.lengths_sorted = lengths[self.order]
        self.spans = list(_tile_spans(self.lengths_sorted, tile_tokens))
        self.hidden_size = hidden_size
        n, total = int(lengths.numel()), int(self.lengths_sorted.sum())
        tensors = {"unit": ("F16", [total, hidden_size]), "norms": ("F32", [total]),
                   "order": ("I64", [int(self.order.numel())]), "position": ("I64", [n])}
        if with_pooled_vectors:
            tensors["pooled"] = ("F16", [n, hidden_size])
        meta = {"version": FORMAT_VERSION, "hidden_size": hidden_size, "pooled": pooled, "model_id": model_id,
                "n_texts": n, "total_tokens": total, "tiles": self.spans}
        header: dict = {"__metadata__": {_FORMAT: json.dumps(meta)}}
        offset = 0
        self._offsets: dict[str, int] = {}
        for name, (dtype, shape) in tensors.items():
            size = math.prod(shape) * _DTYPE_BYTES[dtype]
            header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
            self._offsets[name] = offset
            offset += size
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
        self._fh = fh
        self._data_start = 8 + len(raw)
        fh.write(struct.pack("<Q", len(raw)) + raw)
        fh.truncate(self._data_start + offset)
        self._write_at("order", 0, self.order.numpy().tobytes())
        self._write_at("position", 0, self.position.numpy().tobytes())
        self._token = 0
        self._span = 0
        self._pooled_rows = 0
        self._want_pooled = with_pooled_vectors

    def _write_at(self, name: str, byte_offset: int, data: bytes) -> None:
        self._fh.seek(self._data_start + self._offsets[name] + byte_offset)
        self._fh.write(data)

    def write(self, tokens: Tensor) -> None:
        """The raw tokens ``[n * length, H]`` of the next span of :attr:`spans` (its texts in sorted order, each
        text's tokens together); stored position-major."""
        if self._span >= len(self.spans):
            raise ValueError("every span is already written")
        length, start, stop = self.spans[self._span]
        if tokens.shape[0] != (stop - start) * length:
            raise ValueError(f"span {self._span} has {(stop - start) * length} tokens, got {tokens.shape[0]}")
        self._span += 1
        unit, norms = unit_and_norms(position_major(tokens, stop - start, length))
        self._write_at("unit", 2 * self._token * self.hidden_size, unit.half().numpy().tobytes())
        self._write_at("norms", 4 * self._token, norms.numpy().tobytes())
        self._token += tokens.shape[0]

    def write_pooled(self, first_text: int, vectors: Tensor) -> None:
        """Mean-pooled vectors ``[n, H]`` of the texts ``first_text ...`` in ORIGINAL order."""
        self._write_at("pooled", 2 * first_text * self.hidden_size, vectors.float().half().numpy().tobytes())
        self._pooled_rows += vectors.shape[0]

    def check_complete(self) -> None:
        expected = int(self.lengths_sorted.sum())
        if self._token != expected:
            raise ValueError(f"{self._token} tokens written, {expected} expected")
        if self._want_pooled and self._pooled_rows != self.position.numel():
            raise ValueError(f"{self._pooled_rows} pooled vectors written, {self.position.numel()} expected")


_DTYPE_BYTES = {"F16": 2, "F32": 4, "I64": 8}


@contextmanager
def prepared_writer(path: str | os.PathLike, lengths: Tensor, hidden_size: int, **kw) -> Iterator[PreparedWriter]:
    """A :class:`PreparedWriter` on a temporary file beside ``path``, published atomically when the block ends
    with every token written (an incomplete or failed write leaves no file)."""
    with atomic_write_path(path) as tmp, open(tmp, "r+b") as fh:
        writer = PreparedWriter(fh, lengths, hidden_size, **kw)
        yield writer
        writer.check_complete()


def save_prepared(path: str | os.PathLike, encoded: EncodedTexts, with_pooled_vectors: bool = False,
                  tile_tokens: int = DEFAULT_TILE_TOKENS) -> Path:
    """Write ``encoded`` as a prepared, memory-mappable file (tile by tile: bounded extra memory)."""
    with prepared_writer(path, encoded.lengths, encoded.hidden_size, pooled=encoded.pooled,
                         model_id=encoded.model_id, with_pooled_vectors=with_pooled_vectors,
                         tile_tokens=tile_tokens, first=first_copies(encoded)) as writer:
        for _, start, stop in writer.spans:
            rows, _ = encoded.token_rows(writer.order[start:stop])
            writer.write(encoded.tokens[rows])
        if with_pooled_vectors:
            step = 1 << 14
            for first in range(0, len(encoded), step):
                index = torch.arange(first, min(first + step, len(encoded)))
                writer.write_pooled(first, mean_pooled(encoded, index))
    return Path(path)


def mean_pooled(encoded: EncodedTexts, index: Tensor) -> Tensor:
    """Mean of each text's tokens (float32 ``[len(index), H]``), the ``mean`` scorer's pooled vector."""
    rows, offsets = encoded.token_rows(index)
    counts = offsets.diff()
    owner = torch.repeat_interleave(torch.arange(index.numel()), counts)
    sums = torch.zeros(index.numel(), encoded.hidden_size).index_add_(0, owner, encoded.tokens[rows].float())
    return sums / counts[:, None].float()


def open_prepared(path: str | os.PathLike, release_pages: bool = True) -> MappedTargets:
    return MappedTargets(path, release_pages=release_pages)
