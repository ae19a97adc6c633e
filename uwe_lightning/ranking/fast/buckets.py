"""The layout of a prepared target space: texts sorted and cut into tiles by exact token count.

Why here. Every fast scorer multiplies a query block by the same operands: the targets' unit tokens
(``u = y / max(|y|, eps)``, what ``F.normalize`` gives) and their norms, grouped by exact token count so that
``n`` texts of ``L`` tokens are one dense, unpadded ``[L * n, H]`` slice, stored position-major (row
``l * n + j`` is token ``l`` of text ``j``). Texts with byte-identical tokens are kept once (:func:`first_copies`)
and share a score. This module builds that layout in memory (:class:`PreparedTargets`, one :class:`Tile` per
run of equal length), and groups queries the same way (:func:`query_groups`); the memory-mapped form of the
same layout is :mod:`uwe_lightning.ranking.fast.mapped`, the scorers :mod:`uwe_lightning.ranking.fast.kernels`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from uwe_lightning.ranking.packed import EncodedTexts, plan_buckets

_EPS = 1e-8  # F.normalize's eps in the reference scorers
PRECISIONS: tuple[str, ...] = ("fp32", "fp16")
#: Storage precision per scorer when the ranker is given ``precision="auto"``: fp16 only where its top-10
#: agreement with fp32 was measured >= 99.9 % on WorkBench test (experiments/results/fast/agreement.md).
DEFAULT_PRECISION: dict[str, str] = {"mean": "fp16", "maxsim": "fp16", "softmax_ymean": "fp16", "softmax": "fp16"}
#: Target tokens per tile: a [rows, tile] product of a single query stays in L2 / L3.
DEFAULT_TILE_TOKENS = 8192


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


def tile_spans(lengths_sorted: Tensor, tile_tokens: int) -> Iterator[tuple[int, int, int]]:
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
        for length, start, stop in tile_spans(lengths, tile_tokens):
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
        for length, start, stop in tile_spans(encoded.lengths[order], tile_tokens):
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
