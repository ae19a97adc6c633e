"""What a user would pick instead, measured beside the Ranker on the same vectors: the peers of the bench.

- ``mean``: sentence-transformers' ``util.semantic_search`` over precomputed embeddings (its default
  ``cos_sim``, which normalises both sides on every call) and FAISS ``IndexFlatIP`` over normalised vectors
  (exhaustive inner product: cosine).
- ``maxsim``: the straightforward padded-einsum MaxSim that PyLate's ``colbert_scores`` computes
  (``einsum("ash,bth->abst")``, masks multiplied in, max over document tokens, sum over query tokens) over
  normalised document tokens padded per batch, as a user would hold them; PyLate itself is not imported: its
  pinned sentence-transformers / transformers versions cannot be installed beside this project's (see
  experiments/results/pylate/parity.md), so its formula is written out here.

Every peer returns the top-k of the same vectors the Ranker ranks, so the bench can check that the top-10 agree
(the padded MaxSim differs from ours by the constant 1 / query length, which keeps the ranking, and by PyLate's
padding rule: a padded document position scores 0, which only matters when every real token's cosine is < 0).

Also here: timing with CPU time beside wall time (a shared machine inflates the wall time; the process's CPU
time is much less affected), resident-memory probes, and the scratch copy of a model directory with its ONNX
export that the benches use when the model directory itself has none (the shared model cache is not written to).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from uwe_lightning.ranking.packed import EncodedTexts

# ----------------------------------------------------------------------------------------------------------
# Timing and memory
# ----------------------------------------------------------------------------------------------------------


def timed_call(fn: Callable[[], object]) -> tuple[float, float]:
    """``(wall ms, process CPU ms)`` of one call. On a machine shared with other jobs the wall time includes
    waiting for a CPU; the CPU time does not (it still includes the slowdown of shared caches and memory)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return 1000 * (time.perf_counter() - wall), 1000 * (time.process_time() - cpu)


def batch_rate(fn: Callable[[], object], n_queries: int, repeats: int = 5) -> dict:
    """Queries/s of one call ranking a batch of ``n_queries``: the median of ``repeats`` timed calls after an
    untimed one (the first call also pays for allocating and faulting in the score matrix)."""
    fn()
    calls = sorted((timed_call(fn) for _ in range(repeats)), key=lambda wc: wc[0])
    wall, cpu = calls[len(calls) // 2]
    return {"queries": int(n_queries), "repeats": repeats, "wall_ms": wall, "cpu_ms": cpu,
            "queries_per_s": 1000 * int(n_queries) / wall}


def latency_stats(walls: Sequence[float], cpus: Sequence[float] | None = None) -> dict:
    """p50 / p95 / mean of wall milliseconds (and of CPU milliseconds when given)."""
    if not walls:
        return {"n": 0}
    out = {"p50": float(np.percentile(walls, 50)), "p95": float(np.percentile(walls, 95)),
           "mean": float(np.mean(walls)), "n": len(walls)}
    if cpus:
        out.update(cpu_p50=float(np.percentile(cpus, 50)), cpu_mean=float(np.mean(cpus)))
    return out


def time_each(fn: Callable[[object], object], items: Sequence[object], warmup: int = 0) -> dict:
    """:func:`latency_stats` of ``fn(item)`` per item, after ``warmup`` untimed calls on the first items."""
    for item in items[:warmup]:
        fn(item)
    walls, cpus = [], []
    for item in items:
        wall, cpu = timed_call(lambda item=item: fn(item))
        walls.append(wall)
        cpus.append(cpu)
    return latency_stats(walls, cpus)


def _status_kib(key: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) if found else None


def rss_bytes() -> int | None:
    """The resident set of this process (``VmRSS``; None where /proc is absent)."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def reset_peak_rss() -> bool:
    """Reset the peak resident set (``VmHWM``) to the current one; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int | None:
    kib = _status_kib("VmHWM")
    return None if kib is None else kib * 1024


# ----------------------------------------------------------------------------------------------------------
# Peers
# ----------------------------------------------------------------------------------------------------------


def pooled_vectors(encoded: EncodedTexts) -> Tensor:
    """The float32 ``[N, H]`` vectors of a pooled space (what a sentence-transformers user holds)."""
    if not encoded.pooled:
        raise ValueError("pooled_vectors needs a pooled space (mean scorer)")
    return encoded.tokens.float()


class SemanticSearch:
    """sentence-transformers: ``util.semantic_search(query, corpus, top_k=k)`` with its default ``cos_sim``."""

    name = "sentence-transformers semantic_search"

    def __init__(self, corpus: Tensor) -> None:
        from sentence_transformers import util

        self.util = util
        self.corpus = corpus.float().contiguous()

    def memory_bytes(self) -> int:
        return self.corpus.numel() * 4

    def search(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        hits = self.util.semantic_search(queries.float(), self.corpus, top_k=k)
        scores = torch.tensor([[h["score"] for h in row] for row in hits])
        index = torch.tensor([[h["corpus_id"] for h in row] for row in hits], dtype=torch.int64)
        return scores, index


class FaissFlatIP:
    """FAISS exhaustive inner product (``IndexFlatIP``) over L2-normalised vectors: cosine, exact."""

    name = "FAISS IndexFlatIP"

    def __init__(self, corpus: Tensor) -> None:
        import faiss

        vectors = F.normalize(corpus.float(), dim=-1, eps=1e-8).numpy()
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(vectors)

    def memory_bytes(self) -> int:
        return self.index.ntotal * self.index.d * 4

    def search(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        q = F.normalize(queries.float(), dim=-1, eps=1e-8).numpy()
        scores, index = self.index.search(q, k)
        return torch.from_numpy(scores), torch.from_numpy(index).long()


class PaddedMaxSim:
    """PyLate's ``colbert_scores`` formula over documents padded per batch of ``batch`` (original order).

    The documents' normalised tokens are held as float32 ``[b, longest in batch, H]`` blocks with masks, as a
    user of ``colbert_scores`` would feed them; scores are ``sum_s max_t (q_s . d_t * mask_t)``.
    """

    name = "padded einsum MaxSim (PyLate colbert_scores)"

    def __init__(self, targets: EncodedTexts, batch: int = 1024) -> None:
        self.blocks = []
        for start in range(0, len(targets), batch):
            rows = torch.arange(start, min(start + batch, len(targets)))
            padded = targets.to_token_embeddings(rows, dtype=torch.float32)
            self.blocks.append((F.normalize(padded.embeddings, dim=-1, eps=1e-8), padded.mask.float()))

    def memory_bytes(self) -> int:
        return sum(e.numel() * 4 + m.numel() * 4 for e, m in self.blocks)

    def scores(self, query_unit: Tensor) -> Tensor:
        """``[n_docs]`` MaxSim sums of one query (``[Lq, H]`` normalised tokens)."""
        out = []
        q = query_unit[None]
        for emb, mask in self.blocks:
            s = torch.einsum("ash,bth->abst", q, emb)
            s = s * mask[None, :, None, :]
            out.append(s.max(dim=-1).values.sum(dim=-1)[0])
        return torch.cat(out)

    def search(self, query_unit: Tensor, k: int) -> tuple[Tensor, Tensor]:
        scores = self.scores(query_unit)
        return torch.topk(scores, min(k, scores.numel()))


def top_k_agreement(a: Tensor, b: Tensor) -> float:
    """Mean over rows of |a_row & b_row| / k for two ``[n, k]`` index lists."""
    a, b = torch.atleast_2d(a), torch.atleast_2d(b)
    k = a.shape[1]
    return sum(len(set(x) & set(y)) for x, y in zip(a.tolist(), b.tolist(), strict=True)) / (k * len(a))


# ----------------------------------------------------------------------------------------------------------
# Model directories with an ONNX export
# ----------------------------------------------------------------------------------------------------------


def fmt_ms(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"
