"""Graphs from edge files, and :class:`EdgeFileSource`: training on your own skill-centred graphs.

The generic edge format. Any graph can be given as a file of (skill, text) rows, so users can train on their own data (e.g. the
paper's synthetic titles / sentences / paraphrases):

* format by suffix: ``.csv``, ``.tsv`` (or ``.tab``), ``.parquet``, ``.jsonl`` (or ``.ndjson``; one JSON
  object per line);
* required columns / keys: ``skill`` and ``text``; other columns are ignored;
* ``skill``: a skill URI of the vocabulary, or its preferredLabel (matched after whitespace strip and
  case-fold);
* ``text``: the free text linked to that skill (whitespace-stripped; must not be empty);
* one row per edge; a text linked to several skills appears in several rows. Texts are merged when equal
  after strip + case-fold (the first spelling is kept) and duplicate edges are merged.

Errors name the file, the row (1-based data row, header not counted) and the field; unknown skills either
raise (``on_unknown="error"``) or are dropped and counted in ``graph.meta`` (``on_unknown="drop"``).

Example (CSV)::

    skill,text
    manage a team,Team Lead
    http://data.europa.eu/esco/skill/ccd0a1d9-afda-43d9-b901-96344886e14d,python developer
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from uwe_lightning.data.graphs import BipartiteGraph, SkillVocabulary, load_vocabulary
from uwe_lightning.io import DataError, read_table

EDGE_COLUMNS = ("skill", "text")
ON_UNKNOWN = ("error", "drop")




def _cell(value: object) -> str:
    """A cell as stripped text; missing values (None/NaN) become empty."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value).strip()


def load_edges(
    path: str | os.PathLike, vocab: SkillVocabulary, name: str | None = None, on_unknown: str = "error"
) -> BipartiteGraph:
    """Read a graph in the generic edge format (see module docstring) against ``vocab``.

    ``graph.meta`` records the source, the rows read, the dropped unknown-skill rows (``on_unknown="drop"``)
    and up to 10 examples of them.
    """
    if on_unknown not in ON_UNKNOWN:
        raise ValueError(f"on_unknown must be one of {ON_UNKNOWN}, got {on_unknown!r}")
    path = Path(path)
    frame = read_table(path)
    missing = [c for c in EDGE_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {missing}; the edge format needs columns 'skill' and 'text' "
            f"(found {list(frame.columns)})"
        )
    skill_ids: list[int] = []
    texts: list[str] = []
    unknown: list[str] = []
    for row, (skill_cell, text_cell) in enumerate(zip(frame["skill"], frame["text"], strict=True), start=1):
        skill, text = _cell(skill_cell), _cell(text_cell)
        if not text:
            raise DataError(f"{path}: row {row}: empty field 'text'")
        if not skill:
            raise DataError(f"{path}: row {row}: empty field 'skill'")
        index = vocab.get(skill)
        if index is None:
            if on_unknown == "error":
                raise DataError(
                    f"{path}: row {row}: field 'skill' = {skill!r} is neither a URI nor a preferredLabel of "
                    f"{vocab!r} (add data.source.on_unknown=drop to skip such rows)"
                )
            unknown.append(skill)
            continue
        skill_ids.append(index)
        texts.append(text)
    meta = {
        "source": str(path),
        "rows": len(frame),
        "dropped_unknown_skill": len(unknown),
        "unknown_skill_examples": list(dict.fromkeys(unknown))[:10],
    }
    name = name or path.stem
    if not skill_ids:
        why = f" ({len(unknown)} rows with unknown skills dropped)" if unknown else ""
        raise DataError(f"graph {name}: 0 edges in {path}{why}; an edge file needs rows of (skill, text)")
    return BipartiteGraph.from_pairs(name, skill_ids, texts, len(vocab), meta)


def save_edges(graph: BipartiteGraph, vocab: SkillVocabulary, path: str | os.PathLike) -> Path:
    """Write ``graph`` in the generic edge format (type by suffix), e.g. to inspect or edit a protocol graph."""
    path = Path(path)
    frame = graph.to_frame(vocab)
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".tab"):
        frame.to_csv(path, sep="," if suffix == ".csv" else "\t", index=False)
    elif suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif suffix in (".jsonl", ".ndjson"):
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        raise DataError(f"{path}: unsupported edge file type {suffix!r}; use .csv, .tsv, .parquet or .jsonl")
    return path


class EdgeFileSource:
    """Graphs read from one edge file per graph (the ``data=edges`` config), over ``skill_vocab``.

    Args:
        edge_files: graph name -> edge file; entries left null (graphs not trained) are ignored.
        skill_vocab: ``"esco-<version>"`` from the data pack, or a table with columns ``uri``, ``label``.
        on_unknown: ``error`` (default) or ``drop`` rows whose skill is not in the vocabulary.
        data_dir: the data pack (for ``esco-*`` vocabularies).
    """

    def __init__(
        self,
        edge_files: Mapping[str, str | None] | None = None,
        skill_vocab: str = "esco-v1.2.0",
        on_unknown: str = "error",
        data_dir: str | None = None,
    ) -> None:
        if on_unknown not in ON_UNKNOWN:
            raise ValueError(f"on_unknown must be one of {ON_UNKNOWN}, got {on_unknown!r}")
        self.edge_files = {g: str(p) for g, p in (edge_files or {}).items() if p is not None}
        self.skill_vocab = skill_vocab
        self.on_unknown = on_unknown
        self.data_dir = data_dir

    def load(self, graphs: Sequence[str]) -> tuple[SkillVocabulary, dict[str, BipartiteGraph]]:
        missing = [g for g in graphs if g not in self.edge_files]
        if missing:
            raise ValueError(f"data=edges needs edge_files for graphs {missing} (got {sorted(self.edge_files)})")
        vocab = load_vocabulary(self.skill_vocab, self.data_dir)
        return vocab, {g: load_edges(self.edge_files[g], vocab, g, self.on_unknown) for g in graphs}

    def task_options(self) -> dict[str, dict[str, Any]]:
        """Your own graphs define no evaluation splits: every task is built with its defaults."""
        return {}

    def describe(self) -> dict[str, Any]:
        return {"source": "edges", "edge_files": dict(self.edge_files), "skill_vocab": self.skill_vocab,
                "on_unknown": self.on_unknown}
