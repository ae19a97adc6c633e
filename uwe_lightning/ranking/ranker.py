"""Rank target spaces with any scorer: encode once (optionally cached on disk), score many queries fast.

The target space is stored *packed*: the token embeddings of all texts concatenated without padding
(``[total_tokens, H]``, fp16) plus offsets. A pooled side (``ScorerSpec.pool_query`` / ``pool_target``) keeps
one mean-pooled row per text, which the scorer treats exactly like the full token matrix.

Scoring never pads the whole target space to its longest text. The fast path (``fast=True``, the default for
float32 scoring) prepares the targets once (:mod:`uwe_lightning.ranking.fast`: unit tokens and norms by exact
token count, in tiles; fp16 storage where its agreement with fp32 was measured) and scores each query block
with one product per tile and the scorer's reduction on it. The reference path (``fast=False``) splits the
targets into *buckets* of (nearly) equal token length, each a dense ``[n, L, H]`` block, and calls the
reference scorer on chunks sized so that its ``[queries, targets, Lq, Ly]`` intermediates stay under
``max_elements``. Both give the reference scorer's scores (tests/test_fast.py). Which list is the target space
decides the direction (jobs -> skills, or skills -> jobs).

The query side may run on another backend (``query_backend="onnx"``: the model's ONNX export under ONNX
Runtime, :mod:`uwe_lightning.model.onnx`); the target space is always encoded (and cached) by torch, and the
query embeddings are the same token embeddings, so every scorer works unchanged.

This module is over 400 lines: the Ranker is the one class every command, the service and WorkBench evaluation
rank through, and its two scoring paths (fast and reference) stay side by side so that the reference the tests
hold the fast path to is the one it replaces.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from uwe_lightning.io import ConfigError
from uwe_lightning.model.encoder import Encoder
from uwe_lightning.model.pretrained import UWEModel
from uwe_lightning.model.scoring import ScorerSpec
from uwe_lightning.ranking import cache as cache_lib
from uwe_lightning.ranking import fast as fast_lib
from uwe_lightning.ranking.fast import PreparedTargets, topk_stable
from uwe_lightning.ranking.packed import Bucket, EncodedTexts
from uwe_lightning.ranking.texts import check_texts as _check_texts

if TYPE_CHECKING:
    from uwe_lightning.ranking.index import TargetIndex

Side = Literal["query", "target"]
SIDES: tuple[str, ...] = ("query", "target")
QUERY_BACKENDS: tuple[str, ...] = ("torch", "onnx", "onnx_int8", "torch_int8")


class CacheMismatchError(ValueError):
    """An explicitly given cache file was built for another model, scorer pooling, token limit or texts."""


# ----------------------------------------------------------------------------------------------------------
# Ranker
# ----------------------------------------------------------------------------------------------------------


def auto_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Ranker:
    """An encoder + scorer that ranks target spaces; the target space is encoded once (and cached on disk).

    ``model_id`` names an in-memory encoder for cache keys; an encoder loaded with :meth:`from_pretrained`
    from a directory is identified by the sha256 of its files instead (so do not train a loaded encoder in
    place and reuse its caches). ``compute_dtype`` defaults to fp32 (CPU and GPU); fp16/bf16 is fine on GPU.
    ``max_elements`` bounds the per-call ``[queries, targets, Lq, Ly]`` intermediates of the token scorers;
    ``target_chunk_elements`` the target values per scorer call (cache-sized chunks); buckets: see
    :func:`plan_buckets`. ``query_backend="onnx"`` encodes queries with ``onnx_file`` under ONNX Runtime
    (:meth:`from_pretrained` finds ``<model dir>/onnx/model.onnx`` itself).

    ``fast``: score through :mod:`~uwe_lightning.ranking.fast` (float32 compute only; other compute dtypes
    take the reference path); ``precision``: its storage of the target tokens, ``auto`` =
    :data:`~uwe_lightning.ranking.fast.DEFAULT_PRECISION` of the scorer, or ``fp32`` / ``fp16``;
    ``tile_tokens`` / ``tile_elements``: its tile sizes.
    """

    def __init__(
        self,
        encoder: Encoder,
        scorer: str | ScorerSpec = "mean",
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
        query_backend: str = "torch",
        onnx_file: str | Path | None = None,
        fast: bool = True,
        precision: str = "auto",
        tile_tokens: int = fast_lib.DEFAULT_TILE_TOKENS,
        tile_elements: int = fast_lib.DEFAULT_TILE_ELEMENTS,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = auto_device(device)
        # What is ranked with (encoder, scorer, token limit) is a UWEModel; the rest here is how.
        self.model = UWEModel(encoder.to(self.device).eval(), scorer, tau, max_length=max_length)
        self.batch_size = batch_size
        self.compute_dtype = compute_dtype or torch.float32
        self.max_elements = max_elements
        self.bucket_min_size = bucket_min_size
        self.bucket_max_padding = bucket_max_padding
        self.target_chunk_elements = target_chunk_elements
        self.fast = fast
        fast_lib.resolve_precision(precision, self.spec.name)  # validates
        self.precision = precision
        self.tile_tokens = tile_tokens
        self.tile_elements = tile_elements
        self._given_model_id = model_id
        self.model_dir: Path | None = None  # set by from_pretrained: the checkpoint lives on disk
        self.display_name: str | None = None
        self.last_index_hit = False
        self.last_index_path: Path | None = None
        self.set_query_backend(query_backend, onnx_file)

    def set_query_backend(self, backend: str, onnx_file: str | Path | None = None) -> None:
        """Encode queries with ``torch`` (the encoder itself), ``onnx`` (``onnx_file``, default
        ``<model dir>/onnx/model.onnx``; see :func:`~uwe_lightning.model.onnx.load_onnx_encoder`), or an int8
        variant: ``onnx_int8`` (default ``<model dir>/onnx/model_int8.onnx``, ``export onnx --int8``) or
        ``torch_int8`` (:func:`~uwe_lightning.model.onnx.torch_int8_encoder`). int8 is lossy: its MAP cost is
        measured in experiments/results/fast/agreement.md."""
        if backend not in QUERY_BACKENDS:
            raise ConfigError(f"query_backend={backend!r}: must be one of {', '.join(QUERY_BACKENDS)}")
        self.query_encoder: Encoder = self.encoder
        self.query_backend = "torch"
        if backend in ("onnx", "onnx_int8"):
            from uwe_lightning.model.onnx import load_onnx_encoder

            weights = (lambda: cache_lib.model_fingerprint(self.model_dir)) if self.model_dir else None
            self.query_encoder = load_onnx_encoder(self.encoder, onnx_file, self.model_dir, weights,
                                                   int8=backend == "onnx_int8")
        elif backend == "torch_int8":
            from uwe_lightning.model.onnx import torch_int8_encoder

            if self.device.type != "cpu":
                raise ConfigError("query_backend=torch_int8 runs on CPU only (torch.ao dynamic quantisation)")
            self.query_encoder = torch_int8_encoder(self.encoder)
        self.query_backend = backend

    @classmethod
    def from_pretrained(cls, name_or_path: str, scorer: str | None = None, tau: float | None = None, **kw) -> Ranker:
        """A ranker on :meth:`UWEModel.from_pretrained(name_or_path) <UWEModel.from_pretrained>`: a saved UWE
        model (its ``uwe.json`` gives scorer / tau / max_length), a backbone name (``mpnet``, ``minilm``), a HF
        directory or a hub id. ``kw``: the constructor's settings, and ``model_dir`` for named backbones."""
        model = UWEModel.from_pretrained(
            name_or_path, scorer=scorer, tau=tau, max_length=kw.pop("max_length", None),
            model_dir=kw.pop("model_dir", None),
        )
        kw.setdefault("model_id", None)
        display_name = kw["model_id"] or str(name_or_path)
        ranker = cls.from_model(model, **kw)
        ranker.display_name = display_name
        return ranker

    @classmethod
    def from_model(cls, model: UWEModel, **kw) -> Ranker:
        """A ranker with ``model``'s encoder, scorer and token limit (``kw``: the other settings)."""
        kw.setdefault("max_length", model.max_length)
        backend, onnx_file = kw.pop("query_backend", "torch"), kw.pop("onnx_file", None)
        ranker = cls(model.encoder, scorer=model.scorer, **kw)
        ranker.model_dir = model.source_dir
        ranker.set_query_backend(backend, onnx_file)
        return ranker

    def with_scorer(self, scorer: str, tau: float | None = None, **kw) -> Ranker:
        """Another ranker on the same encoder (no copy) and settings, with scorer ``scorer``."""
        settings = dict(
            batch_size=self.batch_size, max_length=self.max_length, device=self.device,
            model_id=self._given_model_id, compute_dtype=self.compute_dtype, max_elements=self.max_elements,
            bucket_min_size=self.bucket_min_size, bucket_max_padding=self.bucket_max_padding,
            target_chunk_elements=self.target_chunk_elements, fast=self.fast, precision=self.precision,
            tile_tokens=self.tile_tokens, tile_elements=self.tile_elements,
        )
        other = Ranker(self.encoder, scorer=scorer, tau=tau, **{**settings, **kw})
        other.model_dir, other.display_name = self.model_dir, self.display_name
        other.query_encoder, other.query_backend = self.query_encoder, self.query_backend  # one session
        return other

    def exact(self) -> Ranker:
        """This ranker if it scores in float32, else one on the same encoder that does: evaluation numbers
        (WorkBench, WorkRB) are the exact scorer's; reduced precision may reorder near-ties."""
        if self.target_precision == "fp32":  # also ``auto`` where the scorer's default storage is fp32
            return self
        return self.with_scorer(self.spec.name, tau=self.spec.tau, precision="fp32")

    @property
    def encoder(self) -> Encoder:
        return self.model.encoder

    @property
    def spec(self) -> ScorerSpec:
        return self.model.scorer

    @property
    def max_length(self) -> int | None:
        return self.model.max_length

    @property
    def model_id(self) -> str:
        """A readable name of the model (the given id, the name it was loaded by, or the encoder's name)."""
        return self.display_name or self._given_model_id or self.encoder.name or "encoder"

    def checkpoint_id(self, memo_dir: str | Path | None = None, allow_state_hash: bool = True) -> str | None:
        """Identity of the weights for cache keys: file sha256 (directory), else the given id, else the
        sha256 of the in-memory parameters (``None`` when ``allow_state_hash`` is False)."""
        tag = getattr(self.encoder, "cache_tag", "")  # e.g. the target prompt of a sentence-transformers model
        if self.model_dir is not None:
            identity = "sha256:" + cache_lib.model_fingerprint(self.model_dir, memo_dir)
        elif self._given_model_id or allow_state_hash:
            identity = (f"id:{self._given_model_id}" if self._given_model_id
                        else "state-sha256:" + cache_lib.state_fingerprint(self.encoder))
        else:
            return None
        return identity + (f"+{tag}" if tag else "")

    def _hidden_size(self) -> int:
        if not hasattr(self, "_hidden_memo"):
            self._hidden_memo = self.encoder.hidden_size
        return self._hidden_memo

    def _identity(self) -> str | None:
        """:meth:`checkpoint_id` without a state hash, computed once per ranker: every scoring call checks it,
        and fingerprinting a directory stats (and on a change hashes) its files."""
        if not hasattr(self, "_identity_memo"):
            self._identity_memo = self.checkpoint_id(allow_state_hash=False)
        return self._identity_memo

    def effective_max_length(self) -> int:
        return self.model.effective_max_length()

    def pooled(self, side: Side) -> bool:
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {side!r}")
        return self.spec.pool_query if side == "query" else self.spec.pool_target

    def embed(self, texts: Sequence[str], show_progress: bool = False, side: Side = "target") -> list[Tensor]:
        """Raw token embeddings ``[n_tokens, H]`` (fp32, CPU) per text, in input order, as ``side`` embeds it:
        the query backend (ONNX) for queries, and the side's prompt for encoders that have them.

        Lenient on purpose (an empty text is just its special tokens): :meth:`rank` and :meth:`index` are
        where user input is checked.
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not a single string")
        texts = list(texts)
        if not texts:
            return []
        if side == "query" and self.query_encoder is not self.encoder:
            return self.query_encoder.encode(texts, batch_size=self.batch_size, show_progress=show_progress,
                                             max_length=self.effective_max_length())
        return self.model.embed(texts, batch_size=self.batch_size, show_progress=show_progress, side=side)

    @property
    def side_dependent(self) -> bool:
        """Whether queries are embedded apart from targets (a query backend, or side prompts)."""
        return self.query_encoder is not self.encoder or bool(getattr(self.encoder, "side_dependent", False))

    def pack(self, token_list: Sequence[Tensor], side: Side) -> EncodedTexts:
        """Pack token embeddings of one side; mean-pools them when the scorer pools that side."""
        return EncodedTexts.from_token_list(
            token_list, pooled=self.pooled(side), model_id=self._identity()
        )

    def encode(self, texts: Sequence[str], side: Side, show_progress: bool = False) -> EncodedTexts:
        return self.pack(self.embed(texts, show_progress=show_progress, side=side), side)

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
        whether the last call loaded from disk, ``self.last_index_path`` which file holds the space (None when it
        is not on disk: no cache asked for, or an unwritable cache directory, which is warned about once). ``embed_fn``: raw token embeddings in place of :meth:`embed`
        (a memo shared by rankers on this encoder, so pooled and token variants embed each text once).
        """
        texts = _check_texts(texts, "targets")
        self.last_index_hit, self.last_index_path = False, None

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

        tokens, offsets, hit, on_disk = cache_lib.load_or_build(path, key, build)
        self.last_index_hit = hit
        self.last_index_path = path if on_disk else None  # None: the cache could not be written
        return EncodedTexts(tokens, offsets, pooled=key.pooled, model_id=self.checkpoint_id(allow_state_hash=False))

    @staticmethod
    def _check_explicit_cache(path: Path, key: cache_lib.CacheKey) -> None:
        if not path.is_file():
            return
        try:
            stored = cache_lib.read_key(path)
        except cache_lib.CacheError:
            return  # unreadable: load_or_build warns and rebuilds it
        if stored.format != key.format:
            return  # an older file layout, not another model: load_or_build warns and rebuilds it
        if stored != key:
            raise CacheMismatchError(
                f"cache file {path} does not belong to this model/scorer/targets: "
                + "; ".join(key.differences(stored)) + " (stored != current). Use another file or delete it."
            )

    # -- scoring ---------------------------------------------------------------------------------------------

    @property
    def uses_fast_path(self) -> bool:
        """Whether scoring goes through :mod:`~uwe_lightning.ranking.fast` (float32 compute, a known scorer)."""
        return self.fast and self.compute_dtype == torch.float32 and self.spec.name in fast_lib.REDUCTIONS

    @property
    def target_precision(self) -> str:
        """The storage precision the fast path prepares target spaces in (``auto`` resolved for the scorer)."""
        return fast_lib.resolve_precision(self.precision, self.spec.name)

    def prepare(self, targets: EncodedTexts | PreparedTargets) -> PreparedTargets:
        """The fast path's form of ``targets`` (built once and kept on the EncodedTexts)."""
        if isinstance(targets, PreparedTargets):
            return targets
        return fast_lib.prepared_of(targets, self.target_precision, self.device, self.tile_tokens)

    def _check_pair(self, queries: EncodedTexts, targets: EncodedTexts | PreparedTargets) -> None:
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
        hidden = self._hidden_size()
        if targets.hidden_size != hidden:
            raise ValueError(f"targets have hidden size {targets.hidden_size}, the model {hidden}: wrong model")
        ids = {enc.model_id for enc in (queries, targets)} - {None}
        mine = self._identity()
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
        self, queries: EncodedTexts, targets: EncodedTexts | PreparedTargets, block_size: int = 1024
    ) -> Iterator[tuple[int, Tensor]]:
        """``(first query row, scores [b, n_targets])`` for consecutive blocks of ``block_size`` queries.

        Scores are fp32 on the ranker's device. The fast path prepares ``targets`` once (kept on the object);
        the reference path builds its target buckets once per object; queries are grouped by length per block.
        ``targets`` may be a :class:`~uwe_lightning.ranking.fast.PreparedTargets` (e.g. memory-mapped) for the
        fast path.
        """
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self._check_pair(queries, targets)
        if isinstance(targets, PreparedTargets) or self.uses_fast_path:
            yield from self._fast_blocks(queries, self.prepare(targets), block_size)
            return
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

    def _fast_blocks(self, queries: EncodedTexts, prepared: PreparedTargets, block_size: int
                     ) -> Iterator[tuple[int, Tensor]]:
        if prepared.pooled != self.pooled("target"):
            raise ValueError(f"the prepared target space is {'pooled' if prepared.pooled else 'token-level'}; "
                             f"scorer '{self.spec.name}' needs it the other way: prepare it with this ranker")
        for start in range(0, len(queries), block_size):
            stop = min(start + block_size, len(queries))
            with torch.no_grad():
                block = queries if (start, stop) == (0, len(queries)) else queries.select(torch.arange(start, stop))
                groups = fast_lib.query_groups(block, self.device)
                out = fast_lib.score(prepared, groups, stop - start, self.spec.name, self.spec.tau,
                                     self.tile_elements)
            yield start, out

    def rank(
        self, queries: Sequence[str] | EncodedTexts, targets: EncodedTexts | PreparedTargets | TargetIndex, k: int = 10,
        block_size: int = 1024, prefilter=None, candidates: int = 1000,
    ) -> tuple[Tensor, Tensor]:
        """Top-``k`` targets per query: ``(scores [N, k], target indices [N, k])`` on CPU, best first.

        ``k`` is capped at the number of targets. Ties: the lower target index first (as the metrics rank).
        ``prefilter``: a :class:`~uwe_lightning.ranking.prefilter.Prefilter` over the targets' pooled vectors;
        each query is then scored exactly on its ``candidates`` nearest targets only (token-level scorers; the
        targets an EncodedTexts or a memory-mapped space; its recall is measured, not guaranteed).
        ``targets`` may also be a :class:`~uwe_lightning.ranking.index.TargetIndex` (its own search; indices are
        positions into its ``ids`` / ``texts``).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        from uwe_lightning.ranking.index import TargetIndex

        if isinstance(targets, TargetIndex):  # an index searches itself (an engine: candidates, then this scorer)
            return targets.search(queries, k=k)
        if prefilter is not None:
            from uwe_lightning.ranking.prefilter import rank_prefiltered

            if isinstance(queries, EncodedTexts):
                raise TypeError("rank(prefilter=...) takes query texts (their pooled vectors are searched)")
            return rank_prefiltered(self, _check_texts(queries, "queries"), targets, prefilter, k, candidates)
        if not isinstance(targets, EncodedTexts | PreparedTargets):
            raise TypeError("targets must be EncodedTexts (use ranker.index(texts) to build the target space)")
        if len(targets) == 0:
            raise ValueError("empty target space: nothing to rank")
        if not isinstance(queries, EncodedTexts):
            queries = self.encode(_check_texts(queries, "queries"), "query")
        k = min(k, len(targets))
        top_scores, top_index = [], []
        for _, scores in self.score_blocks(queries, targets, block_size=block_size):
            values, index = topk_stable(scores, k)
            top_scores.append(values.cpu())
            top_index.append(index.cpu())
        return torch.cat(top_scores), torch.cat(top_index)


def padded_scores(ranker: Ranker, queries: EncodedTexts, targets: EncodedTexts) -> Tensor:
    """Reference all-pairs scores with everything padded at once (tests and small inputs only)."""
    q = queries.to_token_embeddings(dtype=ranker.compute_dtype, device=ranker.device)
    y = targets.to_token_embeddings(dtype=ranker.compute_dtype, device=ranker.device)
    with torch.inference_mode():
        return ranker.spec.fn(q, y).float()
