"""The popularity prior: every query gets the same ranking, targets ordered by how often their skill is linked in the
training edges. A trained model must beat it to have learnt anything about the query; on a skewed graph (a few
skills on most job titles) it is a strong baseline, so it is shown beside every result on one's own graph.

Only training edges may feed it (``model.edges``: the run's ``heldout/train.csv`` or the training file of a split
made by hand), never the held-out ones it is evaluated on. ``model.edges=open`` counts the open protocol's training
graph J (vacancy titles -> skills, its held-out validation titles removed) for WorkBench: there it ranks skill targets
(Job2Skill, SkillNorm, SkillExtr, SkillSim) by how many training titles name them; occupation targets (Skill2Job,
JobNorm) are no skills and all score 0.

Its scores tie by construction (one list for every query; every skill without a training edge scores 0, so do
skills of equal count), so it is evaluated with ``ties="expected"``: MAP and RP@10 are their exact expectation
over a uniformly random order within each tie (:mod:`uwe_lightning.workbench.metrics`), never the accident of
the vocabulary file's order. On the occupation tasks that is the MAP of a random ranking.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from uwe_lightning.data.edges import load_edges
from uwe_lightning.data.graphs import BipartiteGraph, SkillVocabulary, load_vocabulary, normalize_text
from uwe_lightning.io import ConfigError


class PopularityRankingModel:
    """Scores a target by the training-edge count of the skill it names (label or URI, normalised); 0 if none.

    >>> model = PopularityRankingModel({"python": 3, "sql": 1})
    >>> next(model.score_blocks(["any title"], ["SQL", "Python", "welding"], 8))[1].tolist()
    [[1.0, 3.0, 0.0]]
    """

    name = "popularity"
    ties = "expected"  # see the module docstring

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = {normalize_text(k): int(v) for k, v in counts.items()}

    @classmethod
    def from_edges(cls, files: Sequence[str | Path], skill_vocab: str, data_dir: str | Path | None = None
                   ) -> PopularityRankingModel:
        """Count the edges per skill in ``files`` (the generic edge format over ``skill_vocab``)."""
        if not files:
            raise ConfigError("model=popularity needs the training edges: model.edges=<edge file> (or a list), "
                              "e.g. <run dir>/heldout/train.csv; never the held-out edges it is evaluated on")
        vocab = load_vocabulary(skill_vocab, data_dir)
        graphs = [load_edges(file, vocab, Path(file).stem, vocab_key="model.skill_vocab") for file in files]
        return cls.from_graph(graphs, vocab)

    @classmethod
    def from_graph(cls, graphs: BipartiteGraph | Sequence[BipartiteGraph], vocab: SkillVocabulary
                   ) -> PopularityRankingModel:
        """Count the edges per skill of training graph(s) over ``vocab`` (by label and by URI)."""
        per_skill: Counter[int] = Counter()
        for graph in [graphs] if isinstance(graphs, BipartiteGraph) else graphs:
            per_skill.update(graph.skill_index.tolist())
        counts: dict[str, int] = {}
        for skill, n in per_skill.items():
            counts[vocab.labels[skill]] = n
            counts[vocab.uris[skill]] = n
        return cls(counts)

    def prepare(self, texts: Sequence[str], show_progress: bool = False) -> None:
        """Nothing to prepare: the scores do not depend on the query."""

    def score_blocks(self, queries: Sequence[str], targets: Sequence[str], block_size: int
                     ) -> Iterator[tuple[int, torch.Tensor]]:
        row = torch.tensor([float(self.counts.get(normalize_text(t), 0)) for t in targets], dtype=torch.float32)
        for start in range(0, len(queries), block_size):
            n = min(block_size, len(queries) - start)
            yield start, row.unsqueeze(0).expand(n, -1).clone()
