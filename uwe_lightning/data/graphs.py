"""Skill-centred bipartite graphs: the skill vocabulary, one graph per text space, and the generic edge format.

UWE's training data is a star of bipartite graphs around the skill space S (paper section 4): job titles J,
vacancy sentences V and skill alternatives A are each linked to skills. A :class:`BipartiteGraph` holds one of
them as integer edges (skill index, text index) with neighbour lists in both directions, so a batch sampler
can pick a neighbour of a skill in O(1) and decide "is there an edge between batch skill i and batch text j"
for a whole batch at once (the positives of the many-to-many loss).

Graphs from your own edge files: :mod:`uwe_lightning.data.edges`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from uwe_lightning.io import DataError, read_table

#: The three skill-centred bipartite graphs (paper section 4): job titles, vacancy sentences, skill alternatives.
GRAPHS = ("J", "V", "A")


def normalize_text(text: str) -> str:
    """The comparison key of a text: whitespace-stripped and case-folded (used for merging and leakage)."""
    return text.strip().casefold()


class UnknownSkillError(LookupError):
    """A skill URI or label that is not in the vocabulary."""

    def __str__(self) -> str:  # LookupError would print the repr of the message
        return str(self.args[0]) if self.args else ""


# ---------------------------------------------------------------------------------------------------------
# Skill vocabulary
# ---------------------------------------------------------------------------------------------------------


class SkillVocabulary:
    """The ordered skill space S: URIs and preferredLabels, looked up by either.

    Skill ``i`` is row ``i`` of the source (ESCO file order), so indices are stable across runs. Labels are
    matched after :func:`normalize_text`; URIs exactly (after strip).

    >>> vocab = SkillVocabulary(["u:1", "u:2"], ["Manage a team", "python"])
    >>> vocab.index("  manage A TEAM "), vocab.index("u:2"), len(vocab)
    (0, 1, 2)
    """

    def __init__(self, uris: Sequence[str], labels: Sequence[str], name: str = "custom") -> None:
        if len(uris) != len(labels):
            raise ValueError(f"vocabulary {name}: {len(uris)} URIs but {len(labels)} labels")
        self.name = name
        self.uris: tuple[str, ...] = tuple(str(u).strip() for u in uris)
        self.labels: tuple[str, ...] = tuple(str(label).strip() for label in labels)
        self._by_uri = _unique_index(self.uris, f"vocabulary {name}", "URI")
        self._by_label = _unique_index([normalize_text(x) for x in self.labels], f"vocabulary {name}", "label")

    def __len__(self) -> int:
        return len(self.uris)

    def __repr__(self) -> str:
        return f"SkillVocabulary({self.name!r}, {len(self)} skills)"

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def get(self, key: str) -> int | None:
        """Index of a skill given by URI or preferredLabel, or None."""
        key = key.strip()
        found = self._by_uri.get(key)
        return found if found is not None else self._by_label.get(key.casefold())

    def index(self, key: str) -> int:
        """Index of a skill given by URI or preferredLabel; unknown keys raise :class:`UnknownSkillError`."""
        found = self.get(key)
        if found is None:
            raise UnknownSkillError(f"unknown skill {key!r}: neither a URI nor a preferredLabel of {self!r}")
        return found

    def indices(self, keys: Iterable[str]) -> np.ndarray:
        return np.array([self.index(k) for k in keys], dtype=np.int64)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, name: str = "custom", source: str = "") -> SkillVocabulary:
        """From a frame with columns ``uri`` and ``label`` (the layout of ``esco.load_skills``)."""
        missing = [c for c in ("uri", "label") if c not in frame.columns]
        if missing:
            raise DataError(f"{source or name}: skill vocabulary needs columns 'uri' and 'label'; missing {missing}")
        return cls(frame["uri"].astype(str).tolist(), frame["label"].astype(str).tolist(), name=name)

    @classmethod
    def from_esco(cls, data_dir: str | os.PathLike | None = None, version: str = "v1.2.0") -> SkillVocabulary:
        from uwe_lightning.esco import load_skills

        return cls.from_frame(load_skills(data_dir, version=version), name=f"esco-{version}")


def _unique_index(keys: Sequence[str], owner: str, what: str) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, key in enumerate(keys):
        if not key:
            raise DataError(f"{owner}: skill {i} has an empty {what}")
        if key in index:
            raise DataError(f"{owner}: {what} {key!r} of skill {i} duplicates skill {index[key]}")
        index[key] = i
    return index


def load_vocabulary(spec: str | os.PathLike = "esco-v1.2.0", data_dir: str | os.PathLike | None = None) -> SkillVocabulary:
    """``"esco-<version>"`` (from the data pack) or the path of a table with columns ``uri``, ``label``."""
    spec_str = str(spec)
    if spec_str.startswith("esco-"):
        return SkillVocabulary.from_esco(data_dir, version=spec_str.removeprefix("esco-"))
    path = Path(spec_str).expanduser()
    if not path.is_file():
        raise DataError(f"skill vocabulary {spec_str!r} is neither 'esco-<version>' nor an existing file")
    return SkillVocabulary.from_frame(read_table(path), name=path.stem, source=str(path))


# ---------------------------------------------------------------------------------------------------------
# Bipartite graph
# ---------------------------------------------------------------------------------------------------------


@dataclass
class BipartiteGraph:
    """Edges between the skills of a vocabulary (``n_skills``) and a list of distinct texts.

    Edges are stored deduplicated and sorted by (skill, text); ``skill_indptr``/``skill_neighbors`` give the
    texts of each skill (CSR), ``text_indptr``/``text_neighbors`` the skills of each text.
    """

    name: str
    texts: list[str]
    skill_index: np.ndarray  # int64 [E]
    text_index: np.ndarray  # int64 [E]
    n_skills: int
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        skills = np.asarray(self.skill_index, dtype=np.int64).ravel()
        texts = np.asarray(self.text_index, dtype=np.int64).ravel()
        if skills.shape != texts.shape:
            raise ValueError(f"graph {self.name}: {skills.size} skill ends but {texts.size} text ends")
        n_texts = len(self.texts)
        if skills.size and (skills.min() < 0 or skills.max() >= self.n_skills):
            raise ValueError(f"graph {self.name}: skill index outside [0, {self.n_skills})")
        if texts.size and (texts.min() < 0 or texts.max() >= n_texts):
            raise ValueError(f"graph {self.name}: text index outside [0, {n_texts})")
        keys = np.unique(skills * max(n_texts, 1) + texts)  # sorted by (skill, text), duplicates merged
        self.meta.setdefault("merged_duplicate_edges", int(skills.size - keys.size))
        self._edge_keys = keys
        self.skill_index, self.text_index = np.divmod(keys, max(n_texts, 1))
        self.skill_indptr = _indptr(self.skill_index, self.n_skills)
        self.skill_neighbors = self.text_index
        by_text = np.lexsort((self.skill_index, self.text_index))
        self.text_indptr = _indptr(self.text_index[by_text], n_texts)
        self.text_neighbors = self.skill_index[by_text]

    # -- construction ------------------------------------------------------------------------------------

    @classmethod
    def from_pairs(
        cls, name: str, skill_ids: Iterable[int], texts: Iterable[str], n_skills: int, meta: dict | None = None
    ) -> BipartiteGraph:
        """From parallel (skill index, text) pairs; texts equal after strip + case-fold become one node.

        >>> g = BipartiteGraph.from_pairs("J", [0, 1, 0], ["Nurse", " nurse ", "Chef"], n_skills=2)
        >>> g.texts, g.n_edges, g.neighbors(0).tolist()
        (['Nurse', 'Chef'], 3, [0, 1])
        """
        text_ids: dict[str, int] = {}
        unique_texts: list[str] = []
        skill_list: list[int] = []
        text_list: list[int] = []
        for skill, text in zip(skill_ids, texts, strict=True):
            key = normalize_text(text)
            if key not in text_ids:
                text_ids[key] = len(unique_texts)
                unique_texts.append(text.strip())
            skill_list.append(int(skill))
            text_list.append(text_ids[key])
        return cls(
            name,
            unique_texts,
            np.array(skill_list, dtype=np.int64),
            np.array(text_list, dtype=np.int64),
            n_skills,
            dict(meta or {}),
        )

    # -- queries -----------------------------------------------------------------------------------------

    @property
    def n_texts(self) -> int:
        return len(self.texts)

    @property
    def n_edges(self) -> int:
        return int(self._edge_keys.size)

    @property
    def skill_degree(self) -> np.ndarray:
        return np.diff(self.skill_indptr)

    @property
    def n_skills_covered(self) -> int:
        return int((self.skill_degree > 0).sum())

    def neighbors(self, skill: int) -> np.ndarray:
        """Text indices linked to ``skill``."""
        return self.skill_neighbors[self.skill_indptr[skill] : self.skill_indptr[skill + 1]]

    def skills_of(self, text: int) -> np.ndarray:
        """Skill indices linked to text ``text``."""
        return self.text_neighbors[self.text_indptr[text] : self.text_indptr[text + 1]]

    def has_edge(self, skills: np.ndarray | Sequence[int], texts: np.ndarray | Sequence[int]) -> np.ndarray:
        """Elementwise (broadcast) edge test: ``has_edge(s[:, None], t[None, :])`` is the [S, T] positive mask.

        >>> g = BipartiteGraph.from_pairs("A", [0, 1, 1], ["x", "x", "y"], n_skills=3)
        >>> g.has_edge(np.array([0, 1, 2])[:, None], np.array([0, 1])[None, :]).astype(int).tolist()
        [[1, 0], [1, 1], [0, 0]]
        """
        s, t = np.broadcast_arrays(np.asarray(skills, dtype=np.int64), np.asarray(texts, dtype=np.int64))
        keys = s * max(self.n_texts, 1) + t
        if self._edge_keys.size == 0:
            return np.zeros(keys.shape, dtype=bool)
        pos = np.searchsorted(self._edge_keys, keys).clip(max=self._edge_keys.size - 1)
        return self._edge_keys[pos] == keys

    def summary(self) -> dict[str, int]:
        return {"texts": self.n_texts, "edges": self.n_edges, "skills_covered": self.n_skills_covered}

    def to_frame(self, vocab: SkillVocabulary) -> pd.DataFrame:
        """The graph in the generic edge format (``skill`` = URI), e.g. to save it with :func:`save_edges`."""
        return pd.DataFrame(
            {
                "skill": [vocab.uris[i] for i in self.skill_index],
                "text": [self.texts[j] for j in self.text_index],
            }
        )

    def __repr__(self) -> str:
        return f"BipartiteGraph({self.name!r}, texts={self.n_texts}, edges={self.n_edges}, skills={self.n_skills})"


def _indptr(sorted_ids: np.ndarray, n: int) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.bincount(sorted_ids, minlength=n))]).astype(np.int64)
