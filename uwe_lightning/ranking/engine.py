"""A target index in LanceDB: candidates from the engine, exact re-scoring with our scorer.

Why LanceDB (docs/how-to/serve.md, "Large target spaces"): it is embedded (a directory of Lance files, no
server, memory-mapped reads, so a space larger than RAM is served from disk), and the same client code opens a
table on object storage (``s3://``, ``gs://``, ``az://``: many services read one index) or on a LanceDB
server (``db://``), so a user who outgrows one machine changes ``index.uri`` and nothing else.

One row per target: ``id`` (the key), ``text``, ``text_sha`` (an update re-encodes only changed texts),
``vector`` (the unit mean vector) and what our scorer needs to re-score the candidates exactly: ``pooled`` (the
ranker's fp16 mean row, for ``mean``) or ``tokens`` (its fp16 token embeddings as a LanceDB multi-vector, for
the token scorers). A second table ``<table>_meta`` records the identity of the model that built the index
(:data:`~uwe_lightning.ranking.index.IDENTITY_FIELDS`): any other model is refused.

Search: the engine returns the ``candidates`` best rows per query and the ranker scores those exactly; the
result equals exact ranking of the whole space whenever the true top ``k`` are among the candidates. Where the
candidates come from (``candidates_from``): the nearest mean vectors (``mean``), or the engine's own multi-vector
MaxSim over the stored token embeddings (``tokens``, the default for ``maxsim`` / ``softmax``: a long target that
covers more query tokens scores high under a token scorer while its mean vector sits away from the query,
experiments/results/scale/README.md). Below :data:`ANN_MIN_ROWS` rows the engine scans (exact candidates), above
it searches an IVF-HNSW index. Builds insert in batches, each a committed version: an interrupted build resumes
where it stopped.

This module is over 400 lines: one class owns the table layout, and its writes (resumable build, upsert, delete,
the ANN indexes) and its searches (two candidate sources, exact re-scoring) must agree on that layout.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from uwe_lightning.io import ConfigError, require
from uwe_lightning.ranking.index import (
    TargetIndex,
    check_identity,
    check_ids,
    check_index_settings,
    identity_of,
)
from uwe_lightning.ranking.packed import EncodedTexts
from uwe_lightning.ranking.texts import check_texts

#: Below this many rows the engine scans all vectors (exact candidates); above, an ANN index is built.
ANN_MIN_ROWS = 50_000
#: The ANN index over the mean vectors: graph search inside IVF partitions, 8-bit vectors.
ANN_INDEX = "IVF_HNSW_SQ"
#: Share of the IVF partitions a search probes when ``nprobes`` is not given. Recall is set by the probes, not by
#: the re-scored candidates (experiments/results/scale/README.md: a fixed 20 probes found 0.88 of the exact top 10
#: at 100k and 0.78 at 1M); 0.4 found 0.96 (100k, 60 of 158 partitions) and 0.986 (1M, 200 of 500) after re-scoring.
PROBE_FRACTION = 0.4
#: The same for the multi-vector index over the token embeddings (``index.token_probe_fraction``): there the
#: candidates' recall is set by the candidate count, not the probes (100k targets, 1.2M tokens, 552 partitions:
#: 20 probes held all of the exact MaxSim top 10 in 200 candidates, as did 60 and 220 at 2-7x the time).
TOKEN_PROBE_FRACTION = 0.04
#: A multi-vector search asks each query token's HNSW search for this many times the rows wanted (LanceDB 0.40
#: refuses an ``ef`` below ``10 * limit`` on a multi-vector index: measured, experiments/results/scale/README.md).
MULTIVECTOR_OVERFETCH = 10
#: The table beside each index that records its format and the identity of the model that built it.
META_SUFFIX = "_meta"
#: 2: token embeddings in a multi-vector column (1 stored them as bytes; such an index is rebuilt).
FORMAT_VERSION = 2
#: The column a search takes its candidates from, and the engine's distance on it.
_DISTANCE = {"vector": "dot", "tokens": "cosine"}
_REMOTE = re.compile(r"^[a-z][a-z0-9+.-]*://")


def ann_partitions(rows: int) -> int:
    """IVF partitions of the ANN index over ``rows`` rows (``sqrt(rows) / 2``: 158 at 100k, 500 at 1M).

    >>> ann_partitions(100_000), ann_partitions(1_000_000)
    (158, 500)
    """
    return max(1, int(np.sqrt(rows) / 2))


def probes_for(partitions: int, nprobes: int | None = None, fraction: float = PROBE_FRACTION) -> int:
    """Partitions one search probes: ``nprobes`` when given, else ``fraction`` of the index's ``partitions``.

    >>> probes_for(ann_partitions(1_000_000)), probes_for(ann_partitions(100_000)), probes_for(500, nprobes=20)
    (200, 64, 20)
    """
    if nprobes is not None:
        return int(nprobes)
    return max(1, int(np.ceil(fraction * partitions)))


def text_sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def _quoted(ids: Sequence[str]) -> str:
    return ", ".join("'" + i.replace("'", "''") + "'" for i in ids)


def is_local(uri: str) -> bool:
    """A directory on this machine (not ``s3://``, ``gs://``, ``az://`` or a LanceDB server ``db://``)."""
    return not _REMOTE.match(str(uri)) or str(uri).startswith("file://")


class LanceIndex(TargetIndex):
    """A :class:`~uwe_lightning.ranking.index.TargetIndex` in table ``table`` of the LanceDB at ``uri``.

    ``candidates``: engine hits re-scored exactly per query; ``candidates_from``: ``mean`` (nearest mean vectors),
    ``tokens`` (the engine's multi-vector MaxSim; token scorers only) or ``auto`` (``tokens`` for a token scorer);
    ``nprobes`` / ``ef``: the ANN search effort
    (``nprobes`` None: ``probe_fraction`` of the IVF partitions, ``token_probe_fraction`` on the token index,
    :func:`probes_for`);
    ``build_batch``: texts encoded and inserted per committed batch; ``read_only``: never write (auto: a local
    directory this process cannot write); ``api_key`` / ``storage_options``: passed to ``lancedb.connect``;
    ``embed_fn``: raw token embeddings of a list of target texts in place of the ranker's encoder (a memo of an
    already encoded space, as :meth:`Ranker.index` takes).
    """

    backend = "lancedb"

    def __init__(self, ranker, uri: str | Path, table: str = "targets", candidates: int = 200,
                 nprobes: int | None = None, ef: int = 200, build_batch: int = 4096, read_only: bool | None = None,
                 probe_fraction: float = PROBE_FRACTION, token_probe_fraction: float = TOKEN_PROBE_FRACTION,
                 candidates_from: str = "auto",
                 api_key: str | None = None, storage_options: dict | None = None, embed_fn=None) -> None:
        super().__init__()
        os.environ.setdefault("LANCE_LOG", "error")  # the engine's own log: its warnings are about its internals
        lancedb = require("lancedb", "index.backend=lancedb")
        if candidates < 1 or build_batch < 1:
            raise ConfigError(f"index.candidates and index.build_batch must be >= 1, got {candidates}, {build_batch}")
        check_index_settings({"probe_fraction": probe_fraction, "token_probe_fraction": token_probe_fraction,
                              "candidates_from": candidates_from})
        self.ranker, self.uri, self.name, self.embed_fn = ranker, str(uri), table, embed_fn
        self.candidates, self.nprobes, self.ef, self.build_batch = candidates, nprobes, ef, build_batch
        self.probe_fraction, self.token_probe_fraction = probe_fraction, token_probe_fraction
        local = is_local(self.uri)
        path = Path(self.uri.removeprefix("file://")).expanduser()
        if read_only is None:
            read_only = local and path.exists() and not os.access(path, os.W_OK)
        self.read_only = bool(read_only)
        if local and not path.exists():
            if self.read_only:
                raise ConfigError(f"index {self.uri} does not exist (opened read-only): build it first")
            path.mkdir(parents=True, exist_ok=True)
        kwargs = {k: v for k, v in (("api_key", api_key), ("storage_options", storage_options)) if v}
        self.db = lancedb.connect(str(path) if local else self.uri, **kwargs)
        self.identity = identity_of(ranker)
        self.token_level = not self.identity["pooled"]
        self.hidden = self.identity["hidden_size"]
        if candidates_from == "tokens" and not self.token_level:
            raise ConfigError(f"index.candidates_from=tokens needs a token scorer (maxsim, softmax); scorer "
                              f"{self.identity['scorer']!r} stores no token embeddings: use mean or auto")
        if candidates_from == "auto":
            candidates_from = "tokens" if self.token_level else "mean"
        self.candidates_from = candidates_from
        self.table = self._open_or_create()
        self.position: dict[str, int] = {}
        #: column -> {"rows": table rows when its ANN index was built, "partitions": its IVF partitions}
        self.ann: dict[str, dict] = dict(self._meta().get("ann", {}))

    # -- tables --------------------------------------------------------------------------------------------

    @property
    def where(self) -> str:
        return f"{self.uri}::{self.name}"

    def _names(self) -> set[str]:
        listed = self.db.table_names(limit=1 << 20) if hasattr(self.db, "table_names") else []
        return set(listed)

    def _schema(self):
        pa = require("pyarrow", "index.backend=lancedb")
        fields = [pa.field("id", pa.string()), pa.field("text", pa.string()), pa.field("text_sha", pa.string()),
                  pa.field("vector", pa.list_(pa.float32(), self.hidden))]
        fields.append(pa.field("tokens", pa.list_(pa.list_(pa.float16(), self.hidden))) if self.token_level
                      else pa.field("pooled", pa.binary()))
        return pa.schema(fields)

    def _open_or_create(self):
        names = self._names()
        meta_name = self.name + META_SUFFIX
        if self.name in names:
            if meta_name not in names:
                raise ConfigError(f"index {self.where} has no {meta_name} table: it was not built by uwe_lightning "
                                  "(point index.uri / index.table at another place)")
            self._meta_table = self.db.open_table(meta_name)
            stored = self._meta()
            if int(stored.get("format", -1)) != FORMAT_VERSION:
                raise ConfigError(f"index {self.where} has format {stored.get('format')}, this version reads "
                                  f"{FORMAT_VERSION}: rebuild it")
            check_identity(stored.get("identity", {}), self.ranker, self.where)
            return self.db.open_table(self.name)
        if self.read_only:
            raise ConfigError(f"index {self.where} does not exist (opened read-only): build it first")
        pa = require("pyarrow", "index.backend=lancedb")
        meta = {"format": FORMAT_VERSION, "identity": self.identity, "ann": {}}
        rows = pa.table({"key": list(meta), "value": [json.dumps(v) for v in meta.values()]})
        self._meta_table = self.db.create_table(meta_name, rows, mode="overwrite")
        return self.db.create_table(self.name, schema=self._schema())

    def _meta(self) -> dict:
        rows = self._meta_table.to_arrow().to_pydict()
        return {k: json.loads(v) for k, v in zip(rows["key"], rows["value"], strict=True)}

    def _set_meta(self, key: str, value) -> None:
        self._meta_table.delete(f"key = '{key}'")
        pa = require("pyarrow", "index.backend=lancedb")
        self._meta_table.add(pa.table({"key": [key], "value": [json.dumps(value)]}))

    def count(self) -> int:
        return int(self.table.count_rows())

    def stored(self) -> dict[str, str]:
        """``id -> text_sha`` of every stored row (what a resumed build compares against)."""
        n = self.count()
        if n == 0:
            return {}
        rows = self.table.search().select(["id", "text_sha"]).limit(n).to_arrow().to_pydict()
        return dict(zip(rows["id"], rows["text_sha"], strict=True))

    def load_catalogue(self) -> None:
        """Ids and texts from the engine (reopening an index without its source list)."""
        n = self.count()
        rows = self.table.search().select(["id", "text"]).limit(max(n, 1)).to_arrow().to_pydict() if n else {}
        self.attach(rows.get("id", []), rows.get("text", []))

    def attach(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        """Use ``ids`` / ``texts`` as the catalogue search positions refer to."""
        self.ids, self.texts = list(ids), list(texts)
        self.position = {ident: i for i, ident in enumerate(self.ids)}

    # -- writing -------------------------------------------------------------------------------------------

    def _rows(self, ids: list[str], texts: list[str]):
        """Encoded rows of ``texts`` as an Arrow table of :meth:`_schema`."""
        pa = require("pyarrow", "index.backend=lancedb")
        token_list = self.embed_fn(texts) if self.embed_fn else self.ranker.embed(texts, side="target")
        packed = self.ranker.pack(token_list, "target")
        vectors = F.normalize(torch.stack([t.float().mean(0) for t in token_list]), dim=-1, eps=1e-8)
        columns = {"id": ids, "text": texts, "text_sha": [text_sha(t) for t in texts],
                   "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.numpy().reshape(-1)), self.hidden)}
        if self.token_level:  # a multi-vector: one fixed-size fp16 list per token, a list of them per target
            per_token = pa.FixedSizeListArray.from_arrays(
                pa.array(packed.tokens.to(torch.float16).numpy().reshape(-1)), self.hidden)
            columns["tokens"] = pa.ListArray.from_arrays(pa.array(packed.offsets.numpy().astype(np.int32)), per_token)
        else:
            raw = packed.tokens.to(torch.float16).numpy()
            columns["pooled"] = [row.tobytes() for row in raw]
        return pa.table(columns, schema=self._schema())

    def _delete_ids(self, ids: Sequence[str], chunk: int = 2000) -> None:
        ids = list(ids)
        for start in range(0, len(ids), chunk):
            self.table.delete(f"id IN ({_quoted(ids[start : start + chunk])})")

    def build(self, ids, texts, show_progress: bool = False) -> dict:
        """Make the index hold exactly ``ids`` / ``texts``: rows already stored with the same text are kept (a
        half-built index resumes), changed ones re-encoded, ids no longer listed deleted; then the ANN index is
        (re)built where the table is large enough."""
        from tqdm.auto import tqdm

        ids, texts = check_ids(ids, texts)
        have = self.stored()
        wanted = {i: text_sha(t) for i, t in zip(ids, texts, strict=True)}
        todo = [p for p, i in enumerate(ids) if have.get(i) != wanted[i]]
        gone = [i for i, sha in have.items() if wanted.get(i) != sha]
        if todo or gone:
            self._writable("build")
        self._delete_ids(gone)
        with tqdm(total=len(todo), unit="text", desc=f"index {self.name}", disable=not show_progress) as bar:
            for start in range(0, len(todo), self.build_batch):
                part = todo[start : start + self.build_batch]
                self.table.add(self._rows([ids[p] for p in part], [texts[p] for p in part]))
                bar.update(len(part))
        self.attach(ids, texts)
        ann = self.refresh_ann()
        return {"encoded": len(todo), "kept": len(ids) - len(todo), "deleted": len(gone) - len(set(gone) & set(
            ids[p] for p in todo)), "ann": ann}

    @property
    def search_column(self) -> str:
        """The column candidates are searched in: ``vector`` (mean vectors) or ``tokens`` (multi-vector MaxSim)."""
        return "tokens" if self.candidates_from == "tokens" else "vector"

    def _vectors_in(self, column: str, rows: int, sample: int = 2000) -> int:
        """Vectors the ANN index over ``column`` holds: one per row, or the rows' tokens (estimated from the
        first ``sample`` rows: it only sizes the partitions)."""
        if column == "vector":
            return rows
        pc = require("pyarrow.compute", "index.backend=lancedb")
        head = self.table.search().select(["tokens"]).limit(min(rows, sample)).to_arrow().column("tokens")
        return int(rows * float(pc.mean(pc.list_value_length(head)).as_py() or 1.0))

    def refresh_ann(self) -> str | None:
        """Build the ANN index over :attr:`search_column` once the table reaches :data:`ANN_MIN_ROWS` rows,
        rebuild it when the table doubled since; rows added in between are searched by a flat scan next to it
        (the engine does that). The multi-vector index holds every token (cosine); the mean one, a row (dot)."""
        from lancedb.index import IvfHnswSq

        n, column = self.count(), self.search_column
        built = int(self.ann.get(column, {}).get("rows", 0))
        if self.read_only or n < ANN_MIN_ROWS or (built and n < 2 * built):
            return None
        partitions = ann_partitions(self._vectors_in(column, n))
        self.table.create_index(column, config=IvfHnswSq(distance_type=_DISTANCE[column], num_partitions=partitions),
                                replace=True)
        self.ann[column] = {"rows": n, "partitions": partitions}
        self._set_meta("ann", self.ann)
        return ANN_INDEX

    def upsert(self, ids, texts) -> None:
        ids, texts = check_ids(ids, texts)
        self._writable("upsert")
        self._delete_ids(ids)
        for start in range(0, len(ids), self.build_batch):
            self.table.add(self._rows(ids[start : start + self.build_batch], texts[start : start + self.build_batch]))
        for ident, text in zip(ids, texts, strict=True):
            if ident in self.position:
                self.texts[self.position[ident]] = text
            else:
                self.position[ident] = len(self.ids)
                self.ids.append(ident)
                self.texts.append(text)

    def delete(self, ids) -> None:
        self._writable("delete")
        ids = [str(i) for i in ids]
        self._delete_ids(ids)
        for ident in ids:
            self.position.pop(ident, None)  # positions of the others stay; this one is never returned again

    # -- searching -----------------------------------------------------------------------------------------

    def candidates_of(self, query_tokens: Tensor, n: int):
        """The engine's ``n`` best rows for one query's raw token embeddings ``[n_tokens, H]``, with the columns
        re-scoring needs: by the unit mean vector (dot) or, ``candidates_from=tokens``, by the engine's MaxSim of
        the query tokens against the stored ones (cosine; the order of our ``maxsim`` scorer)."""
        columns = ["id", "tokens" if self.token_level else "pooled", "_distance"]
        column = self.search_column
        tokens = column == "tokens"
        probe = query_tokens.float().numpy() if tokens else F.normalize(
            query_tokens.float().mean(0), dim=-1, eps=1e-8).numpy()
        query = self.table.search(probe, vector_column_name=column).distance_type(_DISTANCE[column]).limit(n).select(
            columns)
        ann = self.ann.get(column)
        if ann:  # the HNSW search list must hold all hits asked for (Lance refuses a smaller ef)
            fraction = self.token_probe_fraction if tokens else self.probe_fraction
            query = query.nprobes(probes_for(ann["partitions"], self.nprobes, fraction)).ef(
                max(self.ef, n * (MULTIVECTOR_OVERFETCH if tokens else 1)))
        return query.to_arrow()

    def _space_of(self, found) -> tuple[EncodedTexts, Tensor]:
        """The candidates as a packed space in position order, and their positions (unknown ids dropped)."""
        ids = found.column("id").to_pylist()
        keep = [j for j, i in enumerate(ids) if i in self.position]
        positions = torch.tensor([self.position[ids[j]] for j in keep], dtype=torch.int64)
        order = torch.sort(positions, stable=True).indices.tolist()
        rows = [keep[o] for o in order]
        if self.token_level:
            pc = require("pyarrow.compute", "index.backend=lancedb")
            picked = pc.take(found.column("tokens"), rows).combine_chunks()
            counts = pc.list_value_length(picked).to_numpy().astype(np.int64)
            raw = picked.flatten().flatten().to_numpy(zero_copy_only=False).reshape(-1, self.hidden)
        else:
            column = found.column("pooled").to_pylist()
            raw = np.frombuffer(b"".join(column[r] for r in rows), dtype=np.float16).reshape(-1, self.hidden)
            counts = np.ones(len(rows), dtype=np.int64)
        offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(counts)]))
        space = EncodedTexts(torch.from_numpy(raw.copy()), offsets, pooled=not self.token_level,
                             model_id=self.ranker._identity())
        return space, positions[order]

    def search(self, queries, k: int = 10, candidates: int | None = None) -> tuple[Tensor, Tensor]:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if isinstance(queries, EncodedTexts):
            raise TypeError("the lancedb index searches query texts (their mean vectors go to the engine)")

        queries = check_texts(queries, "queries")
        return self.search_embedded(self.ranker.embed(queries, side="query"), k=k, candidates=candidates)

    def search_embedded(self, token_list: Sequence[Tensor], k: int = 10, candidates: int | None = None
                        ) -> tuple[Tensor, Tensor]:
        """:meth:`search` for queries already embedded (raw ``[n_tokens, H]`` each, as :meth:`Ranker.embed`
        gives them for the query side)."""
        wanted = max(candidates or self.candidates, k)
        out_scores, out_index = [], []
        capped = False
        for tokens in token_list:
            found = self.candidates_of(tokens, wanted)
            if found.num_rows == 0:
                raise ValueError(f"empty target space: index {self.where} holds no targets")
            if found.num_rows < k and not capped:  # fewer targets than k in all (as Ranker.rank caps k)
                k, capped = min(k, self.count()), True
            space, positions = self._space_of(found)
            query = self.ranker.pack([tokens], "query")
            scores, top = self.ranker.rank(query, space, k=min(k, len(space)))
            index = positions[top[0]]
            if index.numel() < k:  # the ANN search found fewer than k: pad like the prefilter does
                pad = k - index.numel()
                scores = torch.cat([scores[0], torch.full((pad,), -torch.inf)])[None]
                index = torch.cat([index, torch.full((pad,), -1, dtype=torch.int64)])
            out_scores.append(scores)
            out_index.append(index[None])
        return torch.cat(out_scores), torch.cat(out_index)

    def disk_bytes(self) -> int | None:
        """Bytes of the index directory (local indexes only)."""
        if not is_local(self.uri):
            return None
        root = Path(self.uri.removeprefix("file://")).expanduser()
        return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
