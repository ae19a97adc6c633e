"""``edges``: rank a vocabulary's skills for the held-out texts of one's own graph (suite ``own``).

Queries are the distinct texts of a held-out edge file (the generic edge format, :mod:`uwe_lightning.data.edges`),
targets every label of the skill vocabulary, positives each text's skills. Two ways to build it:

* ``file=<edges>`` alone: the whole file is the split (``python -m uwe_lightning.evaluate 'tasks=[edges]'
  edges.file=heldout.csv edges.skill_vocab=skills.csv``), whatever ``split`` is asked for;
* ``file`` + ``holdout`` (what a ``data=edges`` run passes): the same seeded split of the training file that kept
  these texts out of training, so validation and test never see a trained text.

Without a file it is unavailable (:class:`TaskUnavailable`), so code that walks every registered task (the leakage
report, offline bundles) passes over it; ``evaluate`` refuses ``tasks=[edges]`` without ``edges.file`` itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from uwe_lightning.data.edges import heldout_graphs, load_edges
from uwe_lightning.data.graphs import load_vocabulary
from uwe_lightning.workbench.dataset import RankingDataset, TaskUnavailable
from uwe_lightning.workbench.registry import OWN_SUITE, Task, register_task
from uwe_lightning.workbench.tasks.builders import check_split


@register_task
class EdgesTask(Task):
    name = "edges"
    group = "OwnEdges"
    suite = OWN_SUITE
    description = "Your held-out edges: text -> its skills among the vocabulary (edges.file, edges.skill_vocab)"

    def __init__(self, file: str | None = None, skill_vocab: str = "esco-v1.2.0", on_unknown: str = "error",
                 holdout: Mapping[str, Any] | None = None) -> None:
        self.file = file
        self.skill_vocab = skill_vocab
        self.on_unknown = on_unknown
        self.holdout = dict(holdout) if holdout else None

    def load(self, split: str, data_dir: str | Path | None = None) -> RankingDataset:
        check_split(self.name, split)
        if not self.file:
            raise TaskUnavailable("task edges needs a held-out edge file: edges.file=<csv with columns skill,text> "
                                  "(and edges.skill_vocab=<csv with columns uri,label>)")
        vocab = load_vocabulary(self.skill_vocab, data_dir)
        if self.holdout:
            full = load_edges(self.file, vocab, "heldout", self.on_unknown)
            graph = heldout_graphs(full, vocab, self.holdout, self.on_unknown)[1].get(split)
        else:
            graph = load_edges(self.file, vocab, "heldout", self.on_unknown, vocab_key="edges.skill_vocab")
        queries = list(graph.texts) if graph is not None else []
        labels = [sorted(int(s) for s in graph.skills_of(i)) for i in range(len(queries))] if graph else []
        meta = {"source": self.file, "vocabulary": vocab.name, "n_edges": graph.n_edges if graph else 0,
                "holdout": self.holdout}
        return RankingDataset(self.name, split, queries, list(vocab.labels), labels, meta=meta)
