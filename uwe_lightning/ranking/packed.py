"""Packed target spaces: token embeddings of many texts concatenated without padding, scored in buckets.

:class:`EncodedTexts` stores ``tokens [total_tokens, H]`` (fp16 on disk and in memory) and ``offsets [N+1]``; a
pooled side keeps one mean-pooled row per text, which the scorers treat exactly like the full token matrix.
For scoring, the texts are split once into *buckets* of (nearly) equal token length (:func:`plan_buckets`),
each a dense ``[n, L, H]`` block kept on the scoring device, so the target space is never padded to its
longest text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from uwe_lightning.model.encoder import TokenEmbeddings
from uwe_lightning.ranking import cache as cache_lib


@dataclass
class Bucket:
    """Texts of one length range as a dense block: ``rows`` index the columns of the EncodedTexts."""

    rows: Tensor  # [n] long, on the scoring device
    tokens: TokenEmbeddings  # [n, L, H]; mask all True when every text has exactly L tokens

    @property
    def width(self) -> int:
        return int(self.tokens.embeddings.shape[1])


def plan_buckets(lengths: Tensor, min_size: int = 32, max_padding: float = 0.0) -> list[Tensor]:
    """Group row indices by token length: one group per length, except that a group grows over the next
    lengths while it has fewer than ``min_size`` rows or its padding stays within ``max_padding`` of its real
    tokens (few scorer calls without wasting compute on padding).

    >>> [g.tolist() for g in plan_buckets(torch.tensor([3, 1, 3, 2, 9]), min_size=1)]
    [[1], [3], [0, 2], [4]]
    >>> [g.tolist() for g in plan_buckets(torch.tensor([3, 1, 3, 2, 9]), min_size=2)]
    [[1, 3], [0, 2], [4]]
    """
    if lengths.numel() == 0:
        return []
    order = torch.sort(lengths, stable=True).indices
    values, counts = torch.unique_consecutive(lengths[order], return_counts=True)
    groups: list[Tensor] = []
    start = n_rows = real = 0
    for value, count in zip(values.tolist(), counts.tolist(), strict=True):
        grown_rows, grown_real = n_rows + count, real + value * count
        fits = n_rows < min_size or value * grown_rows - grown_real <= max_padding * grown_real
        if n_rows and not fits:
            groups.append(order[start : start + n_rows])
            start, grown_rows, grown_real = start + n_rows, count, value * count
        n_rows, real = grown_rows, grown_real
    groups.append(order[start : start + n_rows])
    return groups


class EncodedTexts:
    """Texts as packed token embeddings: ``tokens [total_tokens, H]`` and ``offsets [N+1]`` (no padding).

    ``pooled``: one mean-pooled row per text. ``model_id``: the checkpoint identity it was encoded with, when
    known (a ranker refuses to score texts of another model). Buckets for scoring are built on first use per
    (device, dtype) and reused; :meth:`select` makes a new object (with its own buckets).
    """

    def __init__(self, tokens: Tensor, offsets: Tensor, pooled: bool = False, model_id: str | None = None) -> None:
        cache_lib.check_packed(tokens, offsets, pooled=pooled)
        self.tokens = tokens
        self.offsets = offsets
        self.pooled = pooled
        self.model_id = model_id
        self._buckets: dict[tuple, list[Bucket]] = {}
        self._prepared: dict[tuple, object] = {}  # the fast path's forms of this space (fast.prepared_of)

    @classmethod
    def from_token_list(
        cls, token_list: Sequence[Tensor], pooled: bool = False, model_id: str | None = None,
        dtype: torch.dtype = torch.float16,
    ) -> EncodedTexts:
        """Pack ``[n_i, H]`` tensors; with ``pooled`` each becomes its fp32 mean, then stored as ``dtype``."""
        if not token_list:
            raise ValueError("no texts to pack")
        empty = [i for i, t in enumerate(token_list) if t.dim() != 2 or t.shape[0] == 0]
        if empty:
            raise ValueError(f"text {empty[0]} has no token embeddings (shape {tuple(token_list[empty[0]].shape)})")
        if pooled:
            rows = torch.stack([t.float().mean(0) for t in token_list])
            lengths = torch.ones(len(token_list), dtype=torch.int64)
        else:
            rows = torch.cat([t.float() for t in token_list])
            lengths = torch.tensor([t.shape[0] for t in token_list], dtype=torch.int64)
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
        return cls(rows.to(dtype), offsets, pooled=pooled, model_id=model_id)

    def __len__(self) -> int:
        return self.offsets.numel() - 1

    def __repr__(self) -> str:
        return (f"EncodedTexts(n={len(self)}, tokens={tuple(self.tokens.shape)}, dtype={self.tokens.dtype}, "
                f"pooled={self.pooled})")

    @property
    def hidden_size(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def lengths(self) -> Tensor:
        return self.offsets.diff()

    def _rows(self, rows: Sequence[int] | Tensor | None) -> Tensor:
        if rows is None:
            return torch.arange(len(self))
        index = torch.as_tensor(rows).to("cpu", torch.int64).reshape(-1)
        if index.numel() and (int(index.min()) < -len(self) or int(index.max()) >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} texts")
        return index % max(len(self), 1)

    def token_rows(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """Rows of ``tokens`` of the texts at ``index`` (in order) and their offsets once gathered."""
        lengths = self.lengths[index]
        new_offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
        shift = torch.repeat_interleave(self.offsets[index] - new_offsets[:-1], lengths)
        return shift + torch.arange(int(new_offsets[-1])), new_offsets

    def select(self, index: Sequence[int] | Tensor) -> EncodedTexts:
        """The texts at ``index`` (any order, repeats allowed), still packed."""
        rows = self._rows(index)
        if rows.numel() == 0:
            raise ValueError("select() needs at least one row")
        token_rows, offsets = self.token_rows(rows)
        return EncodedTexts(self.tokens[token_rows], offsets, pooled=self.pooled, model_id=self.model_id)

    def to_token_embeddings(
        self, rows: Sequence[int] | Tensor | None = None, dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> TokenEmbeddings:
        """Right-padded ``TokenEmbeddings [n, max_len, H]`` of ``rows`` (default: all), for scoring."""
        index = self._rows(rows)
        lengths = self.lengths[index]
        token_rows, offsets = self.token_rows(index)
        width = int(lengths.max()) if index.numel() else 0
        emb = self.tokens.new_zeros((index.numel(), width, self.hidden_size), dtype=dtype or self.tokens.dtype)
        row_of = torch.repeat_interleave(torch.arange(index.numel()), lengths)
        position = torch.arange(token_rows.numel()) - offsets[:-1][row_of]
        emb[row_of, position] = self.tokens[token_rows].to(emb.dtype)
        mask = torch.arange(width)[None, :] < lengths[:, None]
        out = TokenEmbeddings(emb, mask)
        return out.to(device) if device is not None else out

    def buckets(
        self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, min_size: int = 32,
        max_padding: float = 0.0, cache: bool = True,
    ) -> list[Bucket]:
        """Length buckets on ``device`` in ``dtype``; built once per setting and kept when ``cache``."""
        device = torch.device(device)
        key = (str(device), dtype, min_size, max_padding)
        if key in self._buckets:
            return self._buckets[key]
        out = [
            Bucket(rows.to(device), self.to_token_embeddings(rows, dtype=dtype, device=device))
            for rows in plan_buckets(self.lengths, min_size, max_padding)
        ]
        if cache:
            self._buckets[key] = out
        return out



def memory_bytes(encoded: EncodedTexts) -> int:
    """Bytes of the packed tensors (what the cache file holds, give or take the header)."""
    return encoded.tokens.numel() * encoded.tokens.element_size() + encoded.offsets.numel() * 8
