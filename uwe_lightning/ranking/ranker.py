"""Rank target spaces with any scorer: encode once (optionally cached on disk), score many queries fast.

The target space is stored *packed*: the token embeddings of all texts concatenated without padding
(``[total_tokens, H]``, fp16) plus offsets. A pooled side (``ScorerSpec.pool_query`` / ``pool_target``) keeps
one mean-pooled row per text, which the scorer treats exactly like the full token matrix.

Scoring never pads the whole target space to its longest text: the targets are split once into *buckets* of
(nearly) equal token length, each a dense ``[n, L, H]`` block kept on the scoring device, and every bucket is
scored in chunks sized so that the scorer's ``[queries, targets, Lq, Ly]`` intermediates stay under
``max_elements``; the bucket's scores are scattered into their columns. Queries of a block are bucketed the same
way. Which list is the target space decides the direction (jobs -> skills, or skills -> jobs).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from uwe_lightning.model.backbones import resolve_backbone
from uwe_lightning.model.encoder import Encoder, TokenEmbeddings
from uwe_lightning.model.scoring import ScorerSpec, get_scorer
from uwe_lightning.ranking import cache as cache_lib

Side = Literal["query", "target"]
SIDES: tuple[str, ...] = ("query", "target")
UWE_CONFIG = "uwe.json"


class CacheMismatchError(ValueError):
    """An explicitly given cache file was built for another model, scorer pooling, token limit or texts."""


# ----------------------------------------------------------------------------------------------------------
# Packed texts
# ----------------------------------------------------------------------------------------------------------


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

    def _token_rows(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """Rows of ``tokens`` of the selected texts (in order) and their new offsets."""
        lengths = self.lengths[index]
        new_offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
        shift = torch.repeat_interleave(self.offsets[index] - new_offsets[:-1], lengths)
        return shift + torch.arange(int(new_offsets[-1])), new_offsets

    def select(self, index: Sequence[int] | Tensor) -> EncodedTexts:
        """The texts at ``index`` (any order, repeats allowed), still packed."""
        rows = self._rows(index)
        if rows.numel() == 0:
            raise ValueError("select() needs at least one row")
        token_rows, offsets = self._token_rows(rows)
        return EncodedTexts(self.tokens[token_rows], offsets, pooled=self.pooled, model_id=self.model_id)

    def to_token_embeddings(
        self, rows: Sequence[int] | Tensor | None = None, dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> TokenEmbeddings:
        """Right-padded ``TokenEmbeddings [n, max_len, H]`` of ``rows`` (default: all), for scoring."""
        index = self._rows(rows)
        lengths = self.lengths[index]
        token_rows, offsets = self._token_rows(index)
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


# ----------------------------------------------------------------------------------------------------------
# Ranker
# ----------------------------------------------------------------------------------------------------------


def auto_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def read_uwe_config(model_dir: str | Path) -> dict:
    """``uwe.json`` of a trained export (``{}`` when absent); a malformed file is an error naming it."""
    path = Path(model_dir) / UWE_CONFIG
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object with scorer/tau/max_length, got {type(data).__name__}")
    return data


def _check_texts(texts: Sequence[str], what: str) -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{what} must be a list of strings, not a single string")
    texts = list(texts)
    if not texts:
        raise ValueError(f"empty {what} list: nothing to rank")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{what}[{i}] is {type(text).__name__}, expected str")
        if not text.strip():
            raise ValueError(f"{what}[{i}] is an empty text")
    return texts


class Ranker:
    """An encoder + scorer that ranks target spaces; the target space is encoded once (and cached on disk).

    ``model_id`` names an in-memory encoder for cache keys; an encoder loaded with :meth:`from_pretrained`
    from a directory is identified by the sha256 of its files instead (so do not train a loaded encoder in
    place and reuse its caches). ``compute_dtype`` defaults to fp32 (CPU and GPU); fp16/bf16 is fine on GPU.
    ``max_elements`` bounds the per-call ``[queries, targets, Lq, Ly]`` intermediates of the token scorers;
    ``target_chunk_elements`` the target values per scorer call (cache-sized chunks); buckets: see
    :func:`plan_buckets`.
    """

    def __init__(
        self,
        encoder: Encoder,
        scorer: str = "mean",
        tau: float | None = None,
        batch_size: int = 128,
        max_length: int | None = None,
        device: str | None = None,
        model_id: str | None = None,
        compute_dtype: torch.dtype | None = None,
        max_elements: int = 1 << 24,
        bucket_min_size: int = 32,
        bucket_max_padding: float = 0.0,
        target_chunk_elements: int = 1 << 19,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be >= 1 or None, got {max_length}")
        self.device = auto_device(device)
        self.encoder = encoder.to(self.device).eval()
        self.spec: ScorerSpec = get_scorer(scorer, tau)
        self.batch_size = batch_size
        self.max_length = max_length
        self.compute_dtype = compute_dtype or torch.float32
        self.max_elements = max_elements
        self.bucket_min_size = bucket_min_size
        self.bucket_max_padding = bucket_max_padding
        self.target_chunk_elements = target_chunk_elements
        self._given_model_id = model_id
        self.model_dir: Path | None = None  # set by from_pretrained: the checkpoint lives on disk
        self.display_name: str | None = None
        self.last_index_hit = False
        self.last_index_path: Path | None = None

    @classmethod
    def from_pretrained(cls, name_or_path: str, scorer: str | None = None, tau: float | None = None, **kw) -> Ranker:
        """A backbone name (``mpnet``, ``minilm``), a HF directory, or a trained UWE export (a HF directory
        with ``uwe.json``, whose ``scorer``/``tau``/``max_length`` are the defaults here)."""
        path = resolve_backbone(str(name_or_path), kw.pop("model_dir", None))
        saved = read_uwe_config(path) if Path(path).is_dir() else {}
        if scorer is None:
            scorer = saved.get("scorer") or "mean"
            tau = saved.get("tau") if tau is None else tau
        elif tau is None and scorer == saved.get("scorer"):
            tau = saved.get("tau")
        if "max_length" not in kw and saved.get("max_length") is not None:
            kw["max_length"] = int(saved["max_length"])
        kw.setdefault("model_id", None)
        ranker = cls(Encoder.from_pretrained(path), scorer=scorer, tau=tau, **kw)
        if Path(path).is_dir():
            ranker.model_dir = Path(path)
        ranker.display_name = kw["model_id"] or str(name_or_path)
        return ranker

    def with_scorer(self, scorer: str, tau: float | None = None, **kw) -> Ranker:
        """Another ranker on the same encoder (no copy) and settings, with scorer ``scorer``."""
        settings = dict(
            batch_size=self.batch_size, max_length=self.max_length, device=self.device,
            model_id=self._given_model_id, compute_dtype=self.compute_dtype, max_elements=self.max_elements,
            bucket_min_size=self.bucket_min_size, bucket_max_padding=self.bucket_max_padding,
            target_chunk_elements=self.target_chunk_elements,
        )
        other = Ranker(self.encoder, scorer=scorer, tau=tau, **{**settings, **kw})
        other.model_dir, other.display_name = self.model_dir, self.display_name
        return other

    # -- identity --------------------------------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        """A readable name of the model (the given id, the name it was loaded by, or the encoder's name)."""
        return self.display_name or self._given_model_id or self.encoder.name or "encoder"

    def checkpoint_id(self, memo_dir: str | Path | None = None, allow_state_hash: bool = True) -> str | None:
        """Identity of the weights for cache keys: file sha256 (directory), else the given id, else the
        sha256 of the in-memory parameters (``None`` when ``allow_state_hash`` is False)."""
        if self.model_dir is not None:
            return "sha256:" + cache_lib.model_fingerprint(self.model_dir, memo_dir)
        if self._given_model_id:
            return "id:" + self._given_model_id
        if allow_state_hash:
            return "state-sha256:" + cache_lib.state_fingerprint(self.encoder)
        return None

    def effective_max_length(self) -> int:
        return int(self.max_length or self.encoder.model_max_length())

    def pooled(self, side: Side) -> bool:
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {side!r}")
        return self.spec.pool_query if side == "query" else self.spec.pool_target

    # -- encoding --------------------------------------------------------------------------------------------

    def embed(self, texts: Sequence[str], show_progress: bool = False) -> list[Tensor]:
        """Raw token embeddings ``[n_tokens, H]`` (fp32, CPU) per text, in input order.

        Lenient on purpose (an empty text is just its special tokens): :meth:`rank` and :meth:`index` are
        where user input is checked.
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not a single string")
        texts = list(texts)
        if not texts:
            return []
        return self.encoder.encode(texts, batch_size=self.batch_size, max_length=self.max_length,
                                   show_progress=show_progress)

    def pack(self, token_list: Sequence[Tensor], side: Side) -> EncodedTexts:
        """Pack token embeddings of one side; mean-pools them when the scorer pools that side."""
        return EncodedTexts.from_token_list(
            token_list, pooled=self.pooled(side), model_id=self.checkpoint_id(allow_state_hash=False)
        )

    def encode(self, texts: Sequence[str], side: Side, show_progress: bool = False) -> EncodedTexts:
        return self.pack(self.embed(texts, show_progress=show_progress), side)

    def cache_key(self, texts: Sequence[str], memo_dir: str | Path | None = None) -> cache_lib.CacheKey:
        """The cache key of ``texts`` as this ranker's target space."""
        return cache_lib.CacheKey(
            model=self.checkpoint_id(memo_dir), pooled=self.pooled("target"),
            max_length=self.effective_max_length(), texts_sha256=cache_lib.texts_sha256(texts), n_texts=len(texts),
        )

    def index(
        self, texts: Sequence[str], cache_dir: str | Path | None = None, show_progress: bool = False,
        cache_file: str | Path | None = None, embed_fn: Callable[[list[str]], list[Tensor]] | None = None,
    ) -> EncodedTexts:
        """The target space of ``texts``; cached under ``cache_dir`` (file named by the key) when given.

        ``cache_file``: an explicit file instead; one built for another model / scorer pooling / token limit /
        texts raises :class:`CacheMismatchError` rather than being overwritten. ``self.last_index_hit`` says
        whether the last call loaded from disk. ``embed_fn``: raw token embeddings in place of :meth:`embed`
        (a memo shared by rankers on this encoder, so pooled and token variants embed each text once).
        """
        texts = _check_texts(texts, "targets")
        self.last_index_hit = False

        def encode() -> EncodedTexts:
            tokens = embed_fn(texts) if embed_fn is not None else self.embed(texts, show_progress=show_progress)
            return self.pack(tokens, "target")

        if cache_dir is None and cache_file is None:
            return encode()
        memo_dir = cache_dir if cache_dir is not None else Path(cache_file).parent
        key = self.cache_key(texts, memo_dir)
        if cache_file is not None:
            path = Path(cache_file)
            self._check_explicit_cache(path, key)
        else:
            path = cache_lib.cache_path(cache_dir, key)

        def build() -> tuple[Tensor, Tensor]:
            encoded = encode()
            return encoded.tokens, encoded.offsets

        tokens, offsets, hit = cache_lib.load_or_build(path, key, build)
        self.last_index_hit = hit
        self.last_index_path = path
        return EncodedTexts(tokens, offsets, pooled=key.pooled, model_id=self.checkpoint_id(allow_state_hash=False))

    @staticmethod
    def _check_explicit_cache(path: Path, key: cache_lib.CacheKey) -> None:
        if not path.is_file():
            return
        try:
            stored = cache_lib.read_key(path)
        except cache_lib.CacheError:
            return  # unreadable: load_or_build warns and rebuilds it
        if stored != key:
            raise CacheMismatchError(
                f"cache file {path} does not belong to this model/scorer/targets: "
                + "; ".join(key.differences(stored)) + " (stored != current). Use another file or delete it."
            )

    # -- scoring ---------------------------------------------------------------------------------------------

    def _check_pair(self, queries: EncodedTexts, targets: EncodedTexts) -> None:
        if len(queries) == 0 or len(targets) == 0:
            raise ValueError(f"nothing to score: {len(queries)} queries, {len(targets)} targets")
        for side, enc in (("query", queries), ("target", targets)):
            if enc.pooled != self.pooled(side):
                raise ValueError(
                    f"{side} side is {'pooled' if enc.pooled else 'token-level'} but scorer "
                    f"'{self.spec.name}' needs it {'pooled' if self.pooled(side) else 'token-level'}; "
                    "encode it with this ranker"
                )
        if queries.hidden_size != targets.hidden_size:
            raise ValueError(f"hidden sizes differ: queries {queries.hidden_size}, targets {targets.hidden_size}")
        hidden = self.encoder.hidden_size
        if targets.hidden_size != hidden:
            raise ValueError(f"targets have hidden size {targets.hidden_size}, the model {hidden}: wrong model")
        ids = {enc.model_id for enc in (queries, targets)} - {None}
        mine = self.checkpoint_id(allow_state_hash=False)
        if len(ids) > 1 or (mine is not None and ids and ids != {mine}):
            raise ValueError(f"queries/targets were encoded by another model ({sorted(ids)}; this ranker: {mine})")

    def _score_bucket(self, q: Bucket, target_buckets: Sequence[Bucket], n_targets: int) -> Tensor:
        """Scores ``[len(q.rows), n_targets]`` of one query bucket against every target bucket.

        Each scorer call covers at most ``max_elements`` query-token x target-token pairs, so memory per call
        is bounded whatever the sizes, and at most ``target_chunk_elements`` target values (a few MB), so the
        scorer's per-target passes (pooling, normalising) run in cache: 3-8x faster on CPU than one call over a
        100k-target bucket. Results are scattered into the targets' columns.
        """
        n_q, width_q, hidden = q.tokens.embeddings.shape
        out = torch.empty((n_q, n_targets), dtype=torch.float32, device=self.device)
        for y in target_buckets:
            q_step = max(1, min(n_q, self.max_elements // max(1, width_q * y.width)))
            y_step = max(1, min(self.max_elements // max(1, q_step * width_q * y.width),
                                self.target_chunk_elements // max(1, y.width * hidden)))
            for q_start in range(0, n_q, q_step):
                q_part = q.tokens[q_start : q_start + q_step]
                rows = out[q_start : q_start + q_step]
                for y_start in range(0, len(y.rows), y_step):
                    scores = self.spec.fn(q_part, y.tokens[y_start : y_start + y_step])
                    rows.index_copy_(1, y.rows[y_start : y_start + y_step], scores.float())
        return out

    def score_blocks(
        self, queries: EncodedTexts, targets: EncodedTexts, block_size: int = 1024
    ) -> Iterator[tuple[int, Tensor]]:
        """``(first query row, scores [b, n_targets])`` for consecutive blocks of ``block_size`` queries.

        Scores are fp32 on the ranker's device. Target buckets are built once per ``targets`` object and kept
        on it; the queries of each block are bucketed by length too.
        """
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self._check_pair(queries, targets)
        settings = dict(device=self.device, dtype=self.compute_dtype, min_size=self.bucket_min_size,
                        max_padding=self.bucket_max_padding)
        target_buckets = targets.buckets(**settings)
        for start in range(0, len(queries), block_size):
            stop = min(start + block_size, len(queries))
            with torch.no_grad():
                block = queries.select(torch.arange(start, stop))
                query_buckets = block.buckets(cache=False, **settings)
                if len(query_buckets) == 1 and torch.equal(query_buckets[0].rows.cpu(), torch.arange(stop - start)):
                    out = self._score_bucket(query_buckets[0], target_buckets, len(targets))
                else:
                    out = torch.empty((stop - start, len(targets)), dtype=torch.float32, device=self.device)
                    for q in query_buckets:
                        out.index_copy_(0, q.rows, self._score_bucket(q, target_buckets, len(targets)))
            yield start, out

    def rank(
        self, queries: Sequence[str] | EncodedTexts, targets: EncodedTexts, k: int = 10, block_size: int = 1024
    ) -> tuple[Tensor, Tensor]:
        """Top-``k`` targets per query: ``(scores [N, k], target indices [N, k])`` on CPU, best first.

        ``k`` is capped at the number of targets. Ties keep torch.topk's order.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not isinstance(targets, EncodedTexts):
            raise TypeError("targets must be EncodedTexts (use ranker.index(texts) to build the target space)")
        if len(targets) == 0:
            raise ValueError("empty target space: nothing to rank")
        if not isinstance(queries, EncodedTexts):
            queries = self.encode(_check_texts(queries, "queries"), "query")
        k = min(k, len(targets))
        top_scores, top_index = [], []
        for _, scores in self.score_blocks(queries, targets, block_size=block_size):
            values, index = torch.topk(scores, k, dim=1)
            top_scores.append(values.cpu())
            top_index.append(index.cpu())
        return torch.cat(top_scores), torch.cat(top_index)


def padded_scores(ranker: Ranker, queries: EncodedTexts, targets: EncodedTexts) -> Tensor:
    """Reference all-pairs scores with everything padded at once (tests and small inputs only)."""
    q = queries.to_token_embeddings(dtype=ranker.compute_dtype, device=ranker.device)
    y = targets.to_token_embeddings(dtype=ranker.compute_dtype, device=ranker.device)
    with torch.inference_mode():
        return ranker.spec.fn(q, y).float()


def memory_bytes(encoded: EncodedTexts) -> int:
    """Bytes of the packed tensors (what the cache file holds, give or take the header)."""
    return encoded.tokens.numel() * encoded.tokens.element_size() + encoded.offsets.numel() * 8


__all__ = [
    "Bucket", "CacheMismatchError", "EncodedTexts", "Ranker", "auto_device", "memory_bytes", "padded_scores",
    "plan_buckets", "read_uwe_config",
]
