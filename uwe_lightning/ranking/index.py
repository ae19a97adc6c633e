"""Target indexes: one interface for a target space that is searched, grown and persisted, whatever holds it.

Why: a WorkBench space (<= 100k texts) fits in memory and is scored exactly in milliseconds; a job-posting corpus
or a company catalogue of millions of items that grows every day does not, and must be updated without
re-encoding everything. Both sit behind :class:`TargetIndex`, so :meth:`Ranker.rank`, ``rank`` and ``serve``
rank against either the same way:

- ``build(ids, texts)``: encode and insert in batches, with progress; an index that already holds some of the
  ids (a build that was interrupted, or an earlier version of the space) encodes only what is new or changed,
  and drops ids no longer listed;
- ``upsert(ids, texts)`` / ``delete(ids)``: add, update or remove items by id;
- ``search(queries, k)``: the top ``k`` per query as ``(scores [N, k], positions [N, k])``, positions into
  :attr:`TargetIndex.ids` / :attr:`TargetIndex.texts` (the catalogue of ids and texts, held in memory: strings
  are small, the embeddings are what outgrows a machine);
- ``save`` / ``open``: persist and reopen.

Backends: :class:`ExactIndex` (the packed space in memory, scored exactly by the Ranker's fast path: the
default, as fast as ranking an :class:`EncodedTexts` directly) and :class:`~uwe_lightning.ranking.engine.LanceIndex`
(LanceDB, embedded on local disk by default; object storage or a LanceDB server with the same code): candidates
from the engine's approximate search over mean vectors, re-scored exactly with the ranker's scorer.
:func:`choose_backend` picks one by the memory the exact index would hold (``auto``).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from uwe_lightning.io import ConfigError, DataError, atomic_write_text, make_dirs
from uwe_lightning.ranking.packed import EncodedTexts

BACKENDS: tuple[str, ...] = ("auto", "exact", "lancedb")
#: ``backend=auto`` keeps the in-memory exact index while the space it holds stays within this many GiB and uses
#: the engine above. Memory, not a target count, because on few cores the engine is no faster than the exact scan
#: at useful recall (1M ``mean`` targets: recall 0.98 in 86-176 ms against the exact fp32 scan's 106 ms,
#: experiments/results/scale/README.md): what it buys is a space served from disk. 1M ``mean`` targets are
#: 1.4 GiB (the packed fp16 space + its fp16 prepared copy: exact); 1M token-level targets of ~10 tokens ~14 GiB
#: (engine).
ENGINE_ABOVE_GIB = 4.0
#: What an index records about the model that encoded it; a ranker that differs in any of these is refused.
IDENTITY_FIELDS = ("model", "hidden_size", "max_length", "scorer", "pooled")
#: Where the engine takes a search's candidates from (``index.candidates_from``): the mean vectors, the token
#: embeddings (its multi-vector MaxSim), or ``auto`` (tokens for a token scorer).
CANDIDATE_SOURCES = ("auto", "mean", "tokens")


class IndexMismatchError(ConfigError):
    """An index built by another model, token limit or scorer than the ranker asked to search it."""


class ReadOnlyIndexError(ConfigError):
    """A write (build, upsert, delete) to an index opened read-only."""


def identity_of(ranker) -> dict:
    """The model identity an index records (:data:`IDENTITY_FIELDS`)."""
    return {"model": ranker.checkpoint_id(allow_state_hash=True), "hidden_size": int(ranker._hidden_size()),
            "max_length": int(ranker.effective_max_length()), "scorer": ranker.spec.name,
            "pooled": bool(ranker.pooled("target"))}


def check_identity(stored: dict, ranker, where: str) -> None:
    """One line naming every field where the index at ``where`` and ``ranker`` differ."""
    mine = identity_of(ranker)
    diffs = [f"{name} {stored.get(name)!r} != {mine[name]!r}" for name in IDENTITY_FIELDS
             if stored.get(name) != mine[name]]
    if diffs:
        raise IndexMismatchError(f"index {where} was built for another model/scorer: {'; '.join(diffs)} "
                                 "(index != ranker); rebuild it for this model or point index.uri elsewhere")


def check_ids(ids: Sequence[str], texts: Sequence[str]) -> tuple[list[str], list[str]]:
    """Ids and texts as lists of equal length, every id non-empty and listed once (an index is keyed by id)."""
    ids, texts = [str(i) for i in ids], list(texts)
    if len(ids) != len(texts):
        raise ValueError(f"{len(ids)} ids for {len(texts)} texts: give one id per text")
    seen: set[str] = set()
    for i, ident in enumerate(ids):
        if not ident:
            raise DataError(f"target id {i} is empty: every target needs an id")
        if ident in seen:
            raise DataError(f"target id {ident!r} is listed twice (row {i}): an index is keyed by id; "
                            "give each target its own id")
        seen.add(ident)
    return ids, texts


class TargetIndex(ABC):
    """A searchable target space (see the module docstring); ``ids[i]`` / ``texts[i]``: the item at position i."""

    backend: str = ""
    ranker = None

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.texts: list[str] = []
        self.read_only = False

    def __len__(self) -> int:
        return self.count()

    @abstractmethod
    def count(self) -> int:
        """Items searchable now."""

    @abstractmethod
    def build(self, ids: Sequence[str], texts: Sequence[str], show_progress: bool = False) -> dict:
        """Make the index hold exactly these items (encode + insert what is missing or changed, in batches;
        delete the rest); a summary of what was done."""

    @abstractmethod
    def upsert(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        """Add these items, or replace the text (and embeddings) of ids already held."""

    @abstractmethod
    def delete(self, ids: Sequence[str]) -> None:
        """Remove these ids (unknown ids are ignored)."""

    @abstractmethod
    def search(self, queries: Sequence[str] | EncodedTexts, k: int = 10) -> tuple[Tensor, Tensor]:
        """Top ``k`` per query: ``(scores [N, k], positions [N, k])`` on CPU, best first (ties: lower
        position first); positions into :attr:`ids` / :attr:`texts`."""

    def _writable(self, what: str) -> None:
        if self.read_only:
            raise ReadOnlyIndexError(f"the {self.backend} index is open read-only (read-only disk); cannot {what}")


class ExactIndex(TargetIndex):
    """The packed target space in memory, scored exactly by the ranker (the default; unchanged speed)."""

    backend = "exact"

    def __init__(self, ranker, ids: Sequence[str] = (), texts: Sequence[str] = (),
                 encoded: EncodedTexts | None = None) -> None:
        super().__init__()
        self.ranker = ranker
        self.ids, self.texts = list(ids), list(texts)
        self.encoded = encoded

    @classmethod
    def from_texts(cls, ranker, ids: Sequence[str], texts: Sequence[str], cache_dir=None, cache_file=None,
                   show_progress: bool = False) -> ExactIndex:
        """The space of ``texts`` through :meth:`Ranker.index` (its on-disk cache: a reopened space is a file
        read, not an encoding)."""
        encoded = ranker.index(list(texts), cache_dir=cache_dir, cache_file=cache_file, show_progress=show_progress)
        return cls(ranker, ids, texts, encoded)

    def count(self) -> int:
        return 0 if self.encoded is None else len(self.encoded)

    def build(self, ids, texts, show_progress: bool = False) -> dict:
        ids, texts = list(ids), list(texts)
        self.encoded = self.ranker.index(texts, show_progress=show_progress)
        self.ids, self.texts = ids, texts
        return {"encoded": len(texts), "kept": 0, "deleted": 0}

    def upsert(self, ids, texts) -> None:
        ids, texts = check_ids(ids, texts)
        position = {ident: i for i, ident in enumerate(self.ids)}
        replaced = [position[i] for i in ids if i in position]
        if replaced:
            self._drop(replaced)
        new = self.ranker.encode(texts, "target")
        self.encoded = new if self.encoded is None else concat([self.encoded, new])
        self.ids += ids
        self.texts += texts

    def delete(self, ids) -> None:
        wanted = {str(i) for i in ids}
        self._drop([p for p, ident in enumerate(self.ids) if ident in wanted])

    def _drop(self, positions: list[int]) -> None:
        gone = set(positions)
        keep = [p for p in range(len(self.ids)) if p not in gone]
        self.ids = [self.ids[p] for p in keep]
        self.texts = [self.texts[p] for p in keep]
        self.encoded = self.encoded.select(torch.tensor(keep)) if keep else None

    def search(self, queries, k: int = 10) -> tuple[Tensor, Tensor]:
        if self.encoded is None:
            raise ValueError("empty target space: nothing to rank")
        return self.ranker.rank(queries, self.encoded, k=k)

    def save(self, path: str | Path) -> Path:
        """The packed tensors (the target cache's format) and the catalogue, under directory ``path``."""
        from safetensors.torch import save_file

        from uwe_lightning.io import atomic_write_path

        root = make_dirs(path)
        with atomic_write_path(root / "space.safetensors") as tmp:
            save_file({"tokens": self.encoded.tokens.contiguous(), "offsets": self.encoded.offsets}, str(tmp))
        atomic_write_text(root / "index.json", json.dumps(
            {"backend": self.backend, "identity": identity_of(self.ranker), "ids": self.ids, "texts": self.texts},
            ensure_ascii=False))
        return root

    @classmethod
    def open(cls, ranker, path: str | Path) -> ExactIndex:
        from safetensors.torch import load_file

        root = Path(path)
        meta = json.loads((root / "index.json").read_text(encoding="utf-8"))
        check_identity(meta["identity"], ranker, str(root))
        tensors = load_file(str(root / "space.safetensors"))
        encoded = EncodedTexts(tensors["tokens"], tensors["offsets"], pooled=meta["identity"]["pooled"],
                               model_id=ranker._identity())
        return cls(ranker, meta["ids"], meta["texts"], encoded)


def concat(parts: Sequence[EncodedTexts]) -> EncodedTexts:
    """Packed spaces one after the other (same pooling and model)."""
    tokens = torch.cat([p.tokens for p in parts])
    lengths = torch.cat([p.lengths for p in parts])
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    return EncodedTexts(tokens, offsets, pooled=parts[0].pooled, model_id=parts[0].model_id)


def describe_index(index: TargetIndex) -> dict:
    """What a run report says about the index it ranked against."""
    out: dict = {"backend": index.backend, "n": index.count()}
    if index.backend != "exact":
        out.update(uri=str(index.uri), table=index.name, candidates=index.candidates, read_only=index.read_only)
    return out


def exact_space_bytes(n_targets: int, tokens_per_target: float, hidden_size: int, bytes_per_value: int = 4) -> int:
    """What the exact index holds in memory for a space: one row per stored vector (``tokens_per_target`` 1 for a
    pooled space).

    >>> round(exact_space_bytes(1_000_000, 1, 384) / 2**30, 2), round(exact_space_bytes(1_000_000, 10, 384) / 2**30, 1)
    (1.43, 14.3)
    """
    return int(n_targets * tokens_per_target * hidden_size * bytes_per_value)


def choose_backend(backend: str, n_targets: int, engine_above: int | None = None, space_bytes: int | None = None,
                   engine_above_gib: float = ENGINE_ABOVE_GIB) -> str:
    """``exact`` or ``lancedb``. ``auto`` picks the engine when the exact index would hold more than
    ``engine_above_gib`` GiB (``space_bytes``, :func:`exact_space_bytes`), or, where ``engine_above`` is given,
    for more than that many targets.

    >>> choose_backend("auto", 1_000_000, space_bytes=exact_space_bytes(1_000_000, 1, 384))
    'exact'
    >>> choose_backend("auto", 1_000_000, space_bytes=exact_space_bytes(1_000_000, 10, 384))
    'lancedb'
    >>> choose_backend("auto", 300_000, engine_above=250_000)
    'lancedb'
    """
    if backend not in BACKENDS:
        raise ConfigError(f"index.backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend != "auto":
        return backend
    if engine_above is not None:
        return "lancedb" if n_targets > engine_above else "exact"
    return "lancedb" if (space_bytes or 0) > engine_above_gib * 2**30 else "exact"


def check_index_settings(settings) -> None:
    """``index.*`` of a rank / serve config, checked before the model loads (one line per bad key)."""
    from uwe_lightning.io import check_whole_number

    if settings is None:
        return
    choose_backend(settings.get("backend", "auto"), 0)
    for key in ("engine_above", "candidates", "nprobes", "build_batch"):
        check_whole_number(settings.get(key), f"index.{key}", optional=True)
    gib = settings.get("engine_above_gib")
    if gib is not None and (isinstance(gib, bool) or not isinstance(gib, (int, float)) or gib <= 0):
        raise ConfigError(f"index.engine_above_gib must be a number > 0 (auto uses the engine when the exact "
                          f"index would hold more GiB than this), got {gib!r}")
    for key in ("probe_fraction", "token_probe_fraction"):
        fraction = settings.get(key)
        if fraction is not None and (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
                                     or not 0 < fraction <= 1):
            raise ConfigError(f"index.{key} must be a number in (0, 1] (the share of IVF partitions a search "
                              f"probes when index.nprobes is null), got {fraction!r}")
    source = settings.get("candidates_from")
    if source is not None and source not in CANDIDATE_SOURCES:
        raise ConfigError(f"index.candidates_from must be one of {', '.join(CANDIDATE_SOURCES)} (where the "
                          f"engine's candidates come from), got {source!r}")
    read_only = settings.get("read_only")
    if read_only is not None and not isinstance(read_only, bool):
        raise ConfigError(f"index.read_only must be true, false or null (auto), got {read_only!r}")
