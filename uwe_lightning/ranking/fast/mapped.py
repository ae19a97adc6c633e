"""Prepared target spaces on disk: the writer and the memory-mapped reader of one safetensors layout.

Why here. :class:`MappedTargets` is the in-memory layout of :mod:`uwe_lightning.ranking.fast.buckets` (tiles
by exact length, position-major rows, fp16 unit tokens) read from a memory-mapped file: tiles are read from the
page cache, converted in cache, and their pages released after use (``madvise(MADV_DONTNEED)``), so the
resident memory stays bounded by a few tiles whatever the size of the space
(experiments/bench/bench_peers.py: 1M targets). The writer (:class:`PreparedWriter`, :func:`save_prepared`)
and the reader share the file's invariants, so they stay together here; :func:`subset` (a prefilter's
candidates as a small float32 space) reads from either form.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from uwe_lightning.io import atomic_write_path, strict_json
from uwe_lightning.ranking.fast.buckets import (
    DEFAULT_TILE_TOKENS,
    PreparedTargets,
    Tile,
    first_copies,
    position_major,
    sorted_layout,
    tile_spans,
    unit_and_norms,
)
from uwe_lightning.ranking.packed import EncodedTexts

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
        self.spans = list(tile_spans(self.lengths_sorted, tile_tokens))
        self.hidden_size = hidden_size
        n, total = int(lengths.numel()), int(self.lengths_sorted.sum())
        tensors = {"unit": ("F16", [total, hidden_size]), "norms": ("F32", [total]),
                   "order": ("I64", [int(self.order.numel())]), "position": ("I64", [n])}
        if with_pooled_vectors:
            tensors["pooled"] = ("F16", [n, hidden_size])
        meta = {"version": FORMAT_VERSION, "hidden_size": hidden_size, "pooled": pooled, "model_id": model_id,
                "n_texts": n, "total_tokens": total, "tiles": self.spans}
        header: dict = {"__metadata__": {_FORMAT: strict_json(meta)}}
        offset = 0
        self._offsets: dict[str, int] = {}
        for name, (dtype, shape) in tensors.items():
            size = math.prod(shape) * _DTYPE_BYTES[dtype]
            header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
            self._offsets[name] = offset
            offset += size
        raw = strict_json(header).encode()
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


def subset(targets: EncodedTexts | MappedTargets, columns: Tensor) -> PreparedTargets:
    """The texts at ``columns`` (original indices, in that order) as a small float32 prepared space: what an
    approximate prefilter's candidates are rescored on (:mod:`uwe_lightning.ranking.prefilter`)."""
    if isinstance(targets, MappedTargets):
        unit, norms, offsets = targets.gather(columns)
        return PreparedTargets.from_unit(unit, norms, offsets, targets.pooled, targets.model_id)
    return PreparedTargets.from_encoded(targets.select(columns), "fp32")
