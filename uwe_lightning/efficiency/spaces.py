"""Target spaces, encoded once per variant (pooled or token level) and cached on disk, as users rank them.

Loading, building and caching a space is :meth:`~uwe_lightning.ranking.ranker.Ranker.index` (same cache keys
and files as ``uwe_lightning.rank``); what the benchmark adds is a memo of raw token embeddings for one phase
of the run, handed to ``index`` as its ``embed_fn``, so that a text shared by several target spaces, or by the
pooled and token variants of one, is embedded once.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from uwe_lightning.ranking import cache as cache_lib
from uwe_lightning.ranking.packed import EncodedTexts, memory_bytes
from uwe_lightning.ranking.ranker import Ranker
from uwe_lightning.workbench.dataset import RankingDataset


class TextMemo:
    """Raw token embeddings by text, kept (fp16, half the memory of ~100k texts) until :meth:`clear`.

    Not :class:`~uwe_lightning.workbench.runner.EncoderRankingModel`'s memo: that one embeds every text of
    the run up front, while here a text is embedded only when a space misses the disk cache, so a warm cache
    costs no encoding at all.
    """

    def __init__(self, ranker: Ranker) -> None:
        self.ranker = ranker
        self.store: dict[str, torch.Tensor] = {}

    def embed(self, texts: Sequence[str], show_progress: bool = False) -> list[torch.Tensor]:
        """``ranker.embed(texts)`` (fp32, in order), embedding only the texts not seen yet."""
        missing = [t for t in dict.fromkeys(texts) if t not in self.store]
        if missing:
            for text, tokens in zip(missing, self.ranker.embed(missing, show_progress=show_progress), strict=True):
                self.store[text] = tokens.to(torch.float16)
        return [self.store[t].float() for t in texts]

    def clear(self) -> None:
        self.store.clear()


@dataclass
class SpaceInfo:
    """One distinct target space, the tasks that use it, its encoded variants and how each was obtained."""

    name: str
    texts: list[str]
    tasks: list[str] = field(default_factory=list)
    encoded: dict[bool, EncodedTexts] = field(default_factory=dict)  # by "pooled"
    cache: dict[str, dict] = field(default_factory=dict)  # "pooled"/"tokens": hit, seconds, path, bytes


def by_target_pooling(rankers: Mapping[str, Ranker]) -> dict[bool, Ranker]:
    """One ranker per target-side storage (pooled or token level): scorers that store the same tensors share
    one encoded space."""
    out: dict[bool, Ranker] = {}
    for ranker in rankers.values():
        out.setdefault(ranker.pooled("target"), ranker)
    return out


def build_space(
    name: str, texts: Sequence[str], rankers: Mapping[bool, Ranker], memo: TextMemo, cache_dir: Path | None,
    show_progress: bool = False,
) -> SpaceInfo:
    """Each variant in ``rankers`` from the cache under ``cache_dir``, else embedded through ``memo`` and cached."""
    info = SpaceInfo(name, list(texts))
    embed_fn: Callable[[list[str]], list[torch.Tensor]] = functools.partial(memo.embed, show_progress=show_progress)
    for pooled, ranker in rankers.items():
        start = time.perf_counter()
        encoded = ranker.index(info.texts, cache_dir=cache_dir, embed_fn=embed_fn)
        seconds = time.perf_counter() - start
        path = ranker.last_index_path if cache_dir is not None else None
        info.encoded[pooled] = encoded
        info.cache["pooled" if pooled else "tokens"] = {
            "hit": ranker.last_index_hit, "seconds": round(seconds, 3), "path": str(path) if path else None,
            "bytes": memory_bytes(encoded),
        }
    return info


def encode_task_spaces(
    datasets: Mapping[str, RankingDataset], rankers: Mapping[bool, Ranker], cache_dir: Path | None,
    show_progress: bool = False, log: Callable[[str], None] | None = None,
) -> tuple[dict[str, SpaceInfo], dict[str, str]]:
    """The distinct target spaces of ``datasets`` by texts digest (SkillNorm and Job2Skill share theirs), and
    each task's digest. One memo for all of them: ESCO versions share most texts."""
    memo = TextMemo(next(iter(rankers.values())))
    spaces: dict[str, SpaceInfo] = {}
    task_space: dict[str, str] = {}
    for name, ds in datasets.items():
        digest = cache_lib.texts_sha256(ds.targets)
        if digest not in spaces:
            if log:
                log(f"target space of {name}: {len(ds.targets)} texts")
            spaces[digest] = build_space(name, ds.targets, rankers, memo, cache_dir, show_progress)
        spaces[digest].tasks.append(name)
        task_space[name] = digest
    memo.clear()
    return spaces, task_space
