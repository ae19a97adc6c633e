"""An optional approximate prefilter for token-level scorers: nearest pooled vectors, then exact rescoring.

Why: exact token-level scoring reads every target token for every query (5 GB of fp16 at 1M targets); the
mean-pooled vectors are 64x smaller and an approximate index over them finds, in a few milliseconds, the
candidates that the exact scorer then ranks. The result is exact *among the candidates*; what it can miss is
measured as recall@10 against exact scoring over the full space (experiments/bench/bench_peers.py: 100k and 1M
synthetic targets), never assumed.

Backends (cosine on the L2-normalised pooled vectors): ``faiss_ivf`` (FAISS IVF with 8-bit scalar-quantised
codes: a quarter of the fp32 bytes; ``nlist`` lists, ``nprobe`` probed), ``faiss_hnsw`` (FAISS HNSW, flat
vectors), ``usearch`` (usearch HNSW, int8) and ``exact`` (a float32 matrix product: the prefilter's own
baseline). FAISS and usearch are optional (``pip install 'uwe_lightning[ann]'``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from uwe_lightning.io import require
from uwe_lightning.ranking import fast
from uwe_lightning.ranking.packed import EncodedTexts

BACKENDS: tuple[str, ...] = ("faiss_ivf", "faiss_hnsw", "usearch", "exact")


def _require(module: str):
    return require(module, f"the {module} prefilter")


class Prefilter:
    """An approximate index over the targets' mean-pooled vectors (``[N, H]``, any float dtype).

    Built in chunks of ``chunk`` vectors (a memory-mapped fp16 matrix is never converted whole).
    ``build_seconds`` and :meth:`memory_bytes` are recorded for the bench.
    """

    def __init__(self, vectors: Tensor, backend: str = "faiss_ivf", nlist: int | None = None, nprobe: int = 32,
                 hnsw_m: int = 32, ef_search: int = 128, seed: int = 0, chunk: int = 1 << 16) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"prefilter backend {backend!r}: must be one of {', '.join(BACKENDS)}")
        self.backend, self.n, self.dim = backend, int(vectors.shape[0]), int(vectors.shape[1])
        self.nprobe, self.ef_search = nprobe, ef_search
        start = time.perf_counter()

        def chunks():
            for first in range(0, self.n, chunk):
                yield first, F.normalize(vectors[first : first + chunk].float(), dim=-1, eps=1e-8)

        if backend == "exact":
            self.matrix = torch.cat([c for _, c in chunks()])
        elif backend.startswith("faiss"):
            faiss = _require("faiss")
            if backend == "faiss_ivf":
                self.nlist = nlist or max(1, min(self.n // 39, int(4 * math.sqrt(self.n))))
                quantizer = faiss.IndexFlatIP(self.dim)
                self.index = faiss.IndexIVFScalarQuantizer(quantizer, self.dim, self.nlist,
                                                           faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
                sample = torch.randperm(self.n, generator=torch.Generator().manual_seed(seed))[: 64 * self.nlist]
                train = F.normalize(vectors[sample.sort().values].float(), dim=-1, eps=1e-8)
                self.index.train(train.numpy())
                self.index.nprobe = nprobe
                self._quantizer = quantizer  # the index refers to it: keep it alive
            else:
                self.index = faiss.IndexHNSWFlat(self.dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
                self.index.hnsw.efSearch = ef_search
            for _, part in chunks():
                self.index.add(part.numpy())
        else:
            usearch = _require("usearch.index")
            self.index = usearch.Index(ndim=self.dim, metric="cos", dtype="i8", connectivity=hnsw_m,
                                       expansion_search=ef_search)
            for first, part in chunks():
                self.index.add(torch.arange(first, first + len(part)).numpy(), part.numpy())
        self.build_seconds = time.perf_counter() - start

    def memory_bytes(self) -> int:
        """Bytes of the index (codes + lists for IVF, vectors + graph for HNSW)."""
        if self.backend == "exact":
            return self.matrix.numel() * 4
        if self.backend == "usearch":
            return int(self.index.memory_usage)
        if self.backend == "faiss_ivf":
            return self.n * (self.dim + 8) + self.nlist * self.dim * 4  # 8-bit codes + ids, centroids
        return self.n * self.dim * 4 + int(self.index.hnsw.neighbors.size()) * 4  # vectors + graph links

    def search(self, queries: Tensor, n: int) -> Tensor:
        """Up to ``n`` candidate target indices per query (``[B, n]``; -1 where fewer were found)."""
        q = F.normalize(torch.atleast_2d(queries).float(), dim=-1, eps=1e-8)
        n = min(n, self.n)
        if self.backend == "exact":
            return torch.topk(q @ self.matrix.T, n, dim=1).indices
        if self.backend.startswith("faiss"):
            return torch.from_numpy(self.index.search(q.numpy(), n)[1]).long()
        found = self.index.search(q.numpy(), n)
        keys = found.keys if q.shape[0] > 1 else found.keys[None]
        return torch.from_numpy(keys.astype("int64")).reshape(q.shape[0], -1)


def pooled_query_vectors(token_list: Sequence[Tensor]) -> Tensor:
    """The mean of each query's raw token embeddings (``[B, H]`` float32): the pooled side the index holds."""
    return torch.stack([t.float().mean(0) for t in token_list])


def rank_prefiltered(ranker, queries: Sequence[str] | Sequence[Tensor], targets: EncodedTexts | fast.MappedTargets,
                     prefilter: Prefilter, k: int = 10, candidates: int = 1000) -> tuple[Tensor, Tensor]:
    """Top-``k`` of each query among the prefilter's ``candidates``, scored exactly by ``ranker``'s scorer
    (float32 fast path); ``(scores [N, k], target indices [N, k])`` like :meth:`Ranker.rank`.

    ``queries``: texts, or their raw token embeddings (``[n_tokens, H]`` each) when already encoded.
    """
    if ranker.pooled("target"):
        raise ValueError(f"scorer '{ranker.spec.name}' pools the targets: rank the pooled space directly, a "
                         "prefilter is for token-level scorers")
    if queries and isinstance(queries[0], str):
        token_list = ranker.embed(list(queries), side="query")  # type: ignore[arg-type]
    else:
        token_list = list(queries)  # type: ignore[arg-type]
    k = min(k, len(targets))
    wanted = prefilter.search(pooled_query_vectors(token_list), max(candidates, k))
    out_scores, out_index = [], []
    for tokens, row in zip(token_list, wanted, strict=True):
        columns = row[row >= 0]
        space = fast.subset(targets, columns)
        query = ranker.pack([tokens], "query")
        scores = fast.score(space, fast.query_groups(query), 1, ranker.spec.name, ranker.spec.tau)
        # Ties among candidates: the lower original index first, as over the full space.
        order = torch.sort(columns, stable=True).indices
        values, top = fast.topk_stable(scores[:, order], min(k, columns.numel()))
        index = columns[order][top[0]]
        if index.numel() < k:  # fewer candidates than k: pad (never happens with candidates >= k)
            values = torch.cat([values[0], torch.full((k - index.numel(),), -math.inf)])[None]
            index = torch.cat([index, torch.full((k - index.numel(),), -1, dtype=torch.int64)])
        out_scores.append(values)
        out_index.append(index[None])
    return torch.cat(out_scores), torch.cat(out_index)
