"""A lexical sanity floor: TF-IDF over character n-grams, cosine similarity.

Any neural model that does not clearly beat this on WorkBench is broken. The vocabulary and IDF are fitted
once per run on every distinct text of the run (queries and targets of all tasks), as the runner prepares
them; scores are sparse products computed block by block.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch


class TfidfRankingModel:
    name = "tfidf"

    def __init__(self, ngram_range: tuple[int, int] = (3, 5), min_df: int = 1) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vectorizer = TfidfVectorizer(
            analyzer="char_wb", ngram_range=ngram_range, min_df=min_df, sublinear_tf=True, lowercase=True
        )
        self._row: dict[str, int] = {}
        self._matrix = None

    def prepare(self, texts: Sequence[str], show_progress: bool = False) -> None:
        texts = list(dict.fromkeys(texts))
        self._matrix = self.vectorizer.fit_transform(texts).astype(np.float32).tocsr()  # rows L2-normalised
        self._row = {t: i for i, t in enumerate(texts)}

    def score_blocks(
        self, queries: Sequence[str], targets: Sequence[str], block_size: int
    ) -> Iterator[tuple[int, torch.Tensor]]:
        if self._matrix is None:
            raise RuntimeError("call prepare() with the run's texts first")
        target_t = self._matrix[[self._row[t] for t in targets]].T.tocsc()
        for start in range(0, len(queries), block_size):
            rows = [self._row[q] for q in queries[start : start + block_size]]
            block = (self._matrix[rows] @ target_t).toarray()
            yield start, torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32))
