"""Build the open protocol: UWE's three skill-centred graphs from the data pack only, leakage-filtered.

The paper's training data (scraped vacancies, LLM titles, synthetic sentences and paraphrases) is not public
(data README, "What the pack cannot give"). This protocol rebuilds the same graph structure from public sources
(:mod:`~uwe_lightning.protocol.sources`), with fixed splits (:mod:`~uwe_lightning.protocol.splits`), and drops
every training edge that would leak an evaluation pair (:mod:`~uwe_lightning.protocol.leakage`).
:class:`OpenProtocolSource` is what the data module's ``source`` config instantiates;
:class:`EnrichedOpenSource` (``data=open_enriched``) adds edge files (e.g. the output of
``python -m uwe_lightning.enrich``) to its graphs, through the same filter plus the :class:`QueryGuard`.
"""

from __future__ import annotations

import functools
import os
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uwe_lightning.data.edges import ON_UNKNOWN, load_edges
from uwe_lightning.data.graphs import GRAPHS, BipartiteGraph, SkillVocabulary, normalize_text
from uwe_lightning.esco import load_skills
from uwe_lightning.io import DataError
from uwe_lightning.paths import derived_dir, resolve_data_dir
from uwe_lightning.protocol.derived import load_derived_protocol
from uwe_lightning.protocol.leakage import (
    CONTAMINATED,
    QUERY_TEXTS_ALLOWED,
    REPLACED_FOR_VALIDATION,
    QueryGuard,
    SkillResolver,
    TextSkill,
    _protected_pairs,
)
from uwe_lightning.protocol.sources import _Candidates, _graph_candidates
from uwe_lightning.protocol.splits import (
    ALTLABEL_SALT,
    DEFAULT_ALTLABEL_TRAIN_FRACTION,
    DEFAULT_VAL_FRACTION,
    TITLE_SALT,
)
from uwe_lightning.protocol.tasks import PROTOCOL_TASKS
from uwe_lightning.workbench.registry import WORKBENCH_SUITE, Task, get_task, task_names


@dataclass
class OpenProtocol:
    """The graphs of one protocol build, their skill vocabulary, and what was counted, split and dropped."""

    graphs: dict[str, BipartiteGraph]
    vocab: SkillVocabulary
    meta: dict = field(default_factory=dict)

    def training_pairs(self) -> set[TextSkill]:
        """Every training edge as (normalised text, skill index), over all graphs."""
        cached = getattr(self, "_training_pairs", None)
        if cached is None:
            cached = {
                (normalize_text(graph.texts[t]), int(s))
                for graph in self.graphs.values()
                for s, t in zip(graph.skill_index, graph.text_index, strict=True)
            }
            self._training_pairs = cached
        return cached

    def summary(self) -> dict[str, dict[str, int]]:
        return {name: graph.summary() for name, graph in self.graphs.items()}

    def task_options(self) -> dict[str, dict[str, Any]]:
        """The options that build this protocol's task variants with its own fractions."""
        return protocol_task_options(self.meta["val_fraction"], self.meta["altlabel_train_fraction"])

    def task(self, name: str) -> Task:
        """The task ``name``; a protocol variant is built with this protocol's fractions."""
        return get_task(name, **self.task_options().get(name, {}))


def protocol_task_options(val_fraction: float, altlabel_train_fraction: float) -> dict[str, dict[str, Any]]:
    """Per protocol task, the fraction it must be built with to match graphs built with these fractions.

    >>> protocol_task_options(0.05, 0.5)["Job2Skill@open"]
    {'val_fraction': 0.05}
    """
    return {
        "Job2Skill@open": {"val_fraction": float(val_fraction)},
        "Skill2Job@open": {"val_fraction": float(val_fraction)},
        "SkillNorm@heldout": {"altlabel_train_fraction": float(altlabel_train_fraction)},
    }


def _is_allowed(graph: str, sources: set[str]) -> bool:
    """A graph-A edge may overlap the contaminated full SkillNorm test (by construction), nothing else may."""
    exempt = {f"{task}/test" for task in CONTAMINATED} if graph == "A" else set()
    return sources <= exempt


def _filter_candidates(
    name: str,
    candidates: _Candidates,
    protected: dict[str, set[TextSkill]],
    sentences: set[str],
    test_queries: dict[str, set[str]],
) -> tuple[_Candidates, dict]:
    """Drop the candidate edges that would form an evaluation pair, whose text equals a sentence query, or
    whose text is a query of a reported test split (``test_queries``: the splits not in QUERY_TEXTS_ALLOWED)."""
    any_protected = set().union(*protected.values())
    any_test_query = set().union(*test_queries.values()) if test_queries else set()
    kept = _Candidates()
    dropped_by_source: dict[str, int] = defaultdict(int)
    dropped_test_query: dict[str, int] = defaultdict(int)
    n_sentence = 0
    for skill, text in zip(candidates.skills, candidates.texts, strict=True):
        key = normalize_text(text)
        if key in sentences:
            n_sentence += 1
            continue
        if key in any_test_query:
            for task, queries in test_queries.items():
                dropped_test_query[task] += key in queries
            continue
        if (key, skill) in any_protected:
            sources = {source for source, keys in protected.items() if (key, skill) in keys}
            if not _is_allowed(name, sources):
                for source in sources:
                    dropped_by_source[source] += 1
                continue
        kept.add(skill, text)
    report = {
        "candidate_edges": len(candidates.skills),
        "dropped_edges": len(candidates.skills) - len(kept.skills),
        "dropped_by_split": dict(sorted(dropped_by_source.items())),
        "dropped_text_equal_to_sentence_query": n_sentence,
        "dropped_text_equal_to_test_query": {t: n for t, n in sorted(dropped_test_query.items()) if n},
    }
    return kept, report


def _extra_candidates(
    name: str, path: str, vocab: SkillVocabulary, guard: QueryGuard, on_unknown: str
) -> tuple[_Candidates, dict]:
    """The edges of an added edge file, less those whose text equals an evaluation query (:class:`QueryGuard`)."""
    graph = load_edges(path, vocab, name, on_unknown)
    kept = _Candidates()
    dropped: dict[str, int] = defaultdict(int)
    for skill, text_id in zip(graph.skill_index, graph.text_index, strict=True):
        text = graph.texts[text_id]
        hits = guard.hits(text)
        for split in hits:
            dropped[split] += 1
        if not hits:
            kept.add(int(skill), text)
    report = {"source": path, "rows": graph.meta["rows"], "edges": graph.n_edges,
              "dropped_unknown_skill": graph.meta["dropped_unknown_skill"],
              "dropped_text_equal_to_query": dict(sorted(dropped.items())), "after_query_guard": len(kept.skills)}
    return kept, report


def _extra_key(extra_edges: Mapping[str, str | None] | None) -> tuple[tuple[str, str, int, int], ...]:
    """(graph, path, mtime, size) of each added edge file: the cache key changes when a file is rewritten."""
    key = []
    for name, path in sorted((extra_edges or {}).items()):
        if path is None:
            continue
        if name not in GRAPHS:
            raise DataError(f"extra edge file for unknown graph {name!r} ({path}); the graphs are {list(GRAPHS)}")
        file = Path(path).expanduser()
        if not file.is_file():
            raise DataError(f"extra edge file {file} (graph {name}) does not exist; write it with "
                            "`python -m uwe_lightning.enrich all` or set data.source.extra_edges.{name}=null")
        stat = file.stat()
        key.append((name, str(file.resolve()), stat.st_mtime_ns, stat.st_size))
    return tuple(key)


def build_open_protocol(
    data_dir: str | os.PathLike | None = None,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    altlabel_train_fraction: float = DEFAULT_ALTLABEL_TRAIN_FRACTION,
    extra_edges: Mapping[str, str | None] | None = None,
    on_unknown: str = "error",
) -> OpenProtocol:
    """Build (or reuse, within this process) the open protocol's J/V/A graphs. Treat the result as read-only.

    ``extra_edges``: graph -> edge file added to that graph (generic edge format); its edges pass the
    protocol's filter and, being generated, the :class:`QueryGuard` (counts in ``meta["extra_edges"]``).
    """
    if not 0.0 <= val_fraction < 1.0 or not 0.0 <= altlabel_train_fraction <= 1.0:
        raise ValueError(
            f"val_fraction must be in [0, 1) and altlabel_train_fraction in [0, 1]; got {val_fraction}, "
            f"{altlabel_train_fraction}"
        )
    if on_unknown not in ON_UNKNOWN:
        raise ValueError(f"on_unknown must be one of {ON_UNKNOWN}, got {on_unknown!r}")
    root = str(resolve_data_dir(data_dir).resolve())
    if derived_dir(root) is not None:  # an unpacked offline bundle: the built graphs, no raw pack
        if any((extra_edges or {}).values()):
            raise DataError(f"{root} is a derived data directory (an offline bundle): it holds the protocol as "
                            "packed; add extra edge files where the bundle is packed, not on the node")
        return _load_derived(root, float(val_fraction), float(altlabel_train_fraction))
    return _build_open_protocol(root, float(val_fraction), float(altlabel_train_fraction), _extra_key(extra_edges),
                                on_unknown)


@functools.lru_cache(maxsize=4)
def _load_derived(data_dir: str, val_fraction: float, alt_fraction: float) -> OpenProtocol:
    vocab, graphs, meta = load_derived_protocol(Path(data_dir), val_fraction, alt_fraction)
    return OpenProtocol(graphs=graphs, vocab=vocab, meta=meta)


@functools.lru_cache(maxsize=4)
def _build_open_protocol(data_dir: str, val_fraction: float, alt_fraction: float,
                         extra: tuple[tuple[str, str, int, int], ...] = (), on_unknown: str = "error") -> OpenProtocol:
    start = time.perf_counter()
    skills = load_skills(data_dir, "v1.2.0")
    vocab = SkillVocabulary.from_frame(skills, name="esco-v1.2.0")
    resolve = SkillResolver(vocab, data_dir)
    candidates, sources_meta, held_out_pairs = _graph_candidates(data_dir, resolve, skills, val_fraction, alt_fraction)
    protected, sentences, test_queries, availability = _protected_pairs(data_dir, resolve, alt_fraction, held_out_pairs)

    graphs: dict[str, BipartiteGraph] = {}
    leakage: dict = {**availability, "graphs": {}}
    unseen = {task: queries for task, queries in test_queries.items() if task not in QUERY_TEXTS_ALLOWED}
    extra_files = {name: path for name, path, _, _ in extra}
    guard = QueryGuard.from_data_pack(data_dir, val_fraction, alt_fraction) if extra_files else None
    extra_meta: dict = {}
    for name in GRAPHS:
        if name in extra_files and guard is not None:
            added, extra_meta[name] = _extra_candidates(name, extra_files[name], vocab, guard, on_unknown)
            candidates[name].skills += added.skills
            candidates[name].texts += added.texts
            sources_meta[name] = {**sources_meta[name], "extra_edges": extra_meta[name]}  # into graph.meta
        kept, report = _filter_candidates(name, candidates[name], protected, sentences, unseen)
        graphs[name] = BipartiteGraph.from_pairs(name, kept.skills, kept.texts, len(vocab), sources_meta[name])
        leakage["graphs"][name] = report
    all_texts = {normalize_text(t) for graph in graphs.values() for t in graph.texts}
    leakage["test_queries_seen_as_training_text"] = {
        task: len(queries & all_texts) for task, queries in test_queries.items()
    }
    meta = {
        "protocol": "open",
        "data_dir": data_dir,
        "val_fraction": val_fraction,
        "altlabel_train_fraction": alt_fraction,
        "split_hash": f"sha256('<salt>\\0<key>')[:8] / 2**64; J key = strip+casefold title, salt {TITLE_SALT!r}; "
        f"A key = skill URI, salt {ALTLABEL_SALT!r}",
        "validation_tasks": _validation_task_names(),
        "contaminated": dict(CONTAMINATED),
        "query_texts_allowed": dict(QUERY_TEXTS_ALLOWED),
        "leakage": leakage,
        "counts": {name: graph.summary() for name, graph in graphs.items()},
        "extra_edges": extra_meta,
        "build_seconds": round(time.perf_counter() - start, 2),
    }
    return OpenProtocol(graphs=graphs, vocab=vocab, meta=meta)


def _validation_task_names() -> list[str]:
    """The WorkBench tasks a run under this protocol validates on (zero-shot suites never)."""
    return [REPLACED_FOR_VALIDATION.get(name, name) for name in task_names(WORKBENCH_SUITE)
            if name not in PROTOCOL_TASKS]


def clear_cache() -> None:
    _build_open_protocol.cache_clear()
    _load_derived.cache_clear()


#: The public sources the open protocol's training graphs are built from (for the model card: origin, hub copy
#: where the data pack's SOURCE.md names one, license as that SOURCE.md states it).
OPEN_PROTOCOL_SOURCES: tuple[dict[str, str], ...] = (
    {"name": "ESCO v1.2.0 skills, altLabels, descriptions and occupation-skill relations (European Commission)",
     "license": "ESCO (c) European Union, reuse with attribution"},
    {"name": "vacancy titles -> ESCO skills (TechWolf, the WorkRB validation set)",
     "hub_id": "TechWolf/vacancy-job-to-skill", "license": "Apache-2.0 (techwolf-ai/workrb); ESCO labels (c) EU"},
    {"name": "SkillSkape synthetic job-ad sentences (Magron et al. 2024)", "hub_id": "jjzha/skillskape",
     "license": "MIT; ESCO labels (c) EU"},
)


class OpenProtocolSource:
    """The ``data=open`` graph source: the open protocol's graphs, and its validation tasks built to match.

    Args:
        data_dir: the data pack (``None``: the default data dir).
        val_fraction: share of vacancy titles held out of J for ``Job2Skill@open`` / ``Skill2Job@open``.
        altlabel_train_fraction: share of skills whose altLabels train graph A (the rest: ``SkillNorm@heldout``).
    """

    def __init__(
        self,
        data_dir: str | None = None,
        val_fraction: float = DEFAULT_VAL_FRACTION,
        altlabel_train_fraction: float = DEFAULT_ALTLABEL_TRAIN_FRACTION,
    ) -> None:
        self.data_dir = data_dir
        self.val_fraction = float(val_fraction)
        self.altlabel_train_fraction = float(altlabel_train_fraction)
        self.protocol: OpenProtocol | None = None

    def load(self, graphs: Sequence[str]) -> tuple[SkillVocabulary, dict[str, BipartiteGraph]]:
        unknown = sorted(set(graphs) - set(GRAPHS))
        if unknown:
            raise ValueError(f"the open protocol has graphs {list(GRAPHS)}; got {list(graphs)}")
        self.protocol = build_open_protocol(self.data_dir, self.val_fraction, self.altlabel_train_fraction)
        return self.protocol.vocab, {name: self.protocol.graphs[name] for name in graphs}

    def task_options(self) -> dict[str, dict[str, Any]]:
        return protocol_task_options(self.val_fraction, self.altlabel_train_fraction)

    #: What the model card lists as the training data's sources.
    card_datasets = OPEN_PROTOCOL_SOURCES

    def describe(self) -> dict[str, Any]:
        return {"source": "open", "val_fraction": self.val_fraction,
                "altlabel_train_fraction": self.altlabel_train_fraction}


class EnrichedOpenSource(OpenProtocolSource):
    """The ``data=open_enriched`` graph source: the open protocol's graphs plus edge files per graph (the
    output of ``python -m uwe_lightning.enrich``: ``J.csv``, ``V.csv``, ``A.csv``), filtered like the protocol's
    own edges and by the :class:`QueryGuard`.

    Args:
        extra_edges: graph -> edge file (null: that graph gets nothing added).
        on_unknown: ``error`` or ``drop`` rows whose skill is not an ESCO v1.2.0 skill.
    """

    def __init__(
        self,
        data_dir: str | None = None,
        val_fraction: float = DEFAULT_VAL_FRACTION,
        altlabel_train_fraction: float = DEFAULT_ALTLABEL_TRAIN_FRACTION,
        extra_edges: Mapping[str, str | None] | None = None,
        on_unknown: str = "error",
    ) -> None:
        super().__init__(data_dir, val_fraction, altlabel_train_fraction)
        self.extra_edges = {g: str(p) for g, p in (extra_edges or {}).items() if p is not None}
        self.on_unknown = on_unknown

    def load(self, graphs: Sequence[str]) -> tuple[SkillVocabulary, dict[str, BipartiteGraph]]:
        unknown = sorted(set(graphs) - set(GRAPHS))
        if unknown:
            raise ValueError(f"the open protocol has graphs {list(GRAPHS)}; got {list(graphs)}")
        extra = {g: p for g, p in self.extra_edges.items() if g in graphs}
        self.protocol = build_open_protocol(self.data_dir, self.val_fraction, self.altlabel_train_fraction, extra,
                                            self.on_unknown)
        return self.protocol.vocab, {name: self.protocol.graphs[name] for name in graphs}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "source": "open_enriched", "extra_edges": dict(self.extra_edges),
                "on_unknown": self.on_unknown}
