"""The ``open`` training protocol: UWE's three skill-centred graphs built only from the data pack.

The paper's training data (scraped vacancies, LLM titles, synthetic sentences and paraphrases) is not
public (data README, "What the pack cannot give"). This protocol rebuilds the same graph structure from
public sources, and fixes which parts of WorkBench it may be evaluated on:

* **J** (job titles): the real vacancy titles of ``workbench/job2skill_val/job_skill_val.parquet``.
  A fixed split by a stable hash of the title (SHA-256 of the stripped, case-folded title, salted with
  ``"uwe-open/J"``; not Python's per-process salted ``hash``) puts ~``val_fraction`` of the titles aside:
  they are the validation set of ``Job2Skill@open`` / ``Skill2Job@open``; every other title is linked to
  each of its skills.
* **V** (vacancy sentences): each ESCO v1.2.0 skill's description, plus the SkillSkape train sentences
  (``extra/skillskape/train.csv``) linked to their skills (labels matched to the vocabulary after strip +
  case-fold, else as ESCO v1.1.0 labels through their URI; ``['UNK']`` = no skill; unmappable labels are
  counted and dropped).
* **A** (skill alternatives): the altLabels of a fixed half of the skills (stable hash of the URI, salted
  with ``"uwe-open/A"``), each linked to its skill; altLabels equal to the skill's own preferredLabel are
  dropped (trivial pairs, also dropped from SkillNorm).

Leakage. No query of a reported test set may be a training text paired with its label. Texts are compared
after strip + case-fold and labels by skill (v1.2.0 preferredLabel/URI; v1.1.0 SkillExtract labels through
their URI). Training edges that would form a (query, label) pair of a WorkBench test split, or of a split
used for validation under this protocol, are dropped (counts in ``meta["leakage"]``); V sentences equal to
a SkillExtract sentence are dropped whatever their labels (likewise any training text equal to such a sentence). One exception is by construction: the full
SkillNorm split contains every altLabel, so the A graph's altLabels ARE SkillNorm test queries. Under this
protocol the clean SkillNorm number is ``SkillNorm@heldout`` (queries whose skills all lie in the held-out
half); the full SkillNorm number is CONTAMINATED and may only be reported beside it, marked as such.

Registered tasks (on import of this module), in the groups of their base tasks:

* ``Job2Skill@open``: val = held-out titles only; test = the standard Job2Skill test.
* ``Skill2Job@open``: val = skills -> held-out titles only; test = the standard Skill2Job test.
* ``SkillNorm@heldout``: val/test = SkillNorm queries whose label skills all lie in the held-out half.

The registered tasks use the default fractions; a protocol built with other fractions records them in
``meta`` and must be evaluated with task instances built with the same fractions.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from uwe_lightning.data.graphs import BipartiteGraph, SkillVocabulary, normalize_text
from uwe_lightning.esco import load_skills
from uwe_lightning.io import DataError, read_csv_checked
from uwe_lightning.paths import data_file, resolve_data_dir
from uwe_lightning.workbench.dataset import RankingDataset, TaskUnavailable
from uwe_lightning.workbench.registry import Task, get_task, register_task, task_names
from uwe_lightning.workbench.tasks.sources import read_vacancy_titles

JOB_TITLES_FILE = "workbench/job2skill_val/job_skill_val.parquet"
SKILLSKAPE_TRAIN_FILE = "extra/skillskape/train.csv"
SKILLSKAPE_NONE = "UNK"
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_ALTLABEL_TRAIN_FRACTION = 0.5
TITLE_SALT = "uwe-open/J"
ALTLABEL_SALT = "uwe-open/A"
GRAPH_NAMES = ("J", "V", "A")

#: The base tasks replaced by a protocol variant for validation (their standard val overlaps training).
REPLACED_FOR_VALIDATION = {"Job2Skill": "Job2Skill@open", "Skill2Job": "Skill2Job@open", "SkillNorm": "SkillNorm@heldout"}
#: Test splits whose overlap with the A graph is by construction (reported as contaminated).
CONTAMINATED = {
    "SkillNorm": "the full SkillNorm split holds every altLabel, so the training half's altLabels (graph A) "
    "are its queries; report SkillNorm@heldout as the clean number and the full one only marked contaminated"
}
#: Task groups whose queries are sentences: a training sentence equal to one is dropped whatever its labels.
SENTENCE_QUERY_GROUPS = ("SkillExtract",)

TextSkill = tuple[str, int]  # (normalised text, skill index): one training edge as leakage sees it


# ---------------------------------------------------------------------------------------------------------
# Stable splits
# ---------------------------------------------------------------------------------------------------------


def stable_unit(key: str, salt: str) -> float:
    """A number in [0, 1) fixed by (salt, key) on every machine and run (SHA-256, not Python's ``hash``).

    >>> round(stable_unit("data engineer", TITLE_SALT), 6) == round(stable_unit("data engineer", TITLE_SALT), 6)
    True
    """
    digest = hashlib.sha256(f"{salt}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def is_validation_title(title: str, val_fraction: float = DEFAULT_VAL_FRACTION) -> bool:
    """Whether a vacancy title is held out for validation (hash of the stripped, case-folded title)."""
    return stable_unit(normalize_text(title), TITLE_SALT) < val_fraction


def is_altlabel_training_skill(uri: str, altlabel_train_fraction: float = DEFAULT_ALTLABEL_TRAIN_FRACTION) -> bool:
    """Whether a skill's altLabels are training texts (graph A); the others form the held-out half."""
    return stable_unit(uri.strip(), ALTLABEL_SALT) < altlabel_train_fraction


# ---------------------------------------------------------------------------------------------------------
# The protocol object
# ---------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------
# Skill resolution for leakage (v1.2.0 labels/URIs, v1.1.0 labels through their URI)
# ---------------------------------------------------------------------------------------------------------


class SkillResolver:
    """Maps a task text to a v1.2.0 skill index, or None: v1.2.0 URI/preferredLabel, else a v1.1.0
    preferredLabel whose URI is a v1.2.0 skill (SkillExtract targets are v1.1.0 labels)."""

    def __init__(self, vocab: SkillVocabulary, data_dir: str | os.PathLike | None) -> None:
        self.vocab = vocab
        self._v110: dict[str, int] = {}
        try:
            old = load_skills(data_dir, "v1.1.0")
        except DataError:
            old = None
        if old is not None:
            for uri, label in zip(old["uri"], old["label"], strict=True):
                index = vocab.get(uri)
                if index is not None:
                    self._v110.setdefault(normalize_text(label), index)

    def __call__(self, text: str) -> int | None:
        found = self.vocab.get(text)
        return found if found is not None else self._v110.get(normalize_text(text))


def dataset_pairs(dataset: RankingDataset, resolve: SkillResolver) -> list[tuple[int, int, list[TextSkill]]]:
    """For each (query i, label j) pair of a ranking dataset, the training edges that would leak it:
    (query text, label skill) when the label is a skill, (label text, query skill) when the query is one."""
    query_norm, query_skill, target_norm, target_skill = _resolved(dataset, resolve)
    pairs = []
    for i, row in enumerate(dataset.labels):
        for j in row:
            keys = []
            if target_skill[j] is not None:
                keys.append((query_norm[i], target_skill[j]))
            if query_skill[i] is not None:
                keys.append((target_norm[j], query_skill[i]))
            pairs.append((i, j, keys))
    return pairs


def dataset_pair_keys(dataset: RankingDataset, resolve: SkillResolver) -> set[TextSkill]:
    """The union of :func:`dataset_pairs`' keys (fast path for building the protocol)."""
    query_norm, query_skill, target_norm, target_skill = _resolved(dataset, resolve)
    keys = {
        (query_norm[i], target_skill[j])
        for i, row in enumerate(dataset.labels)
        for j in row
        if target_skill[j] is not None
    }
    keys.update(
        (target_norm[j], query_skill[i])
        for i, row in enumerate(dataset.labels)
        if query_skill[i] is not None
        for j in row
    )
    return keys


def _resolved(dataset: RankingDataset, resolve: SkillResolver) -> tuple[list, list, list, list]:
    """Normalised texts and skill indices (or None) of a dataset's queries and targets."""
    return (
        [normalize_text(q) for q in dataset.queries],
        [resolve(q) for q in dataset.queries],
        [normalize_text(t) for t in dataset.targets],
        [resolve(t) for t in dataset.targets],
    )


def leaked_pairs(
    protocol: OpenProtocol, dataset: RankingDataset, resolve: SkillResolver | None = None
) -> list[tuple[str, str]]:
    """The (query, label target) pairs of ``dataset`` that are training (text, skill) edges of ``protocol``."""
    resolve = resolve or SkillResolver(protocol.vocab, protocol.meta.get("data_dir"))
    train = protocol.training_pairs()
    return [
        (dataset.queries[i], dataset.targets[j])
        for i, j, keys in dataset_pairs(dataset, resolve)
        if any(key in train for key in keys)
    ]


def leakage_report(
    protocol: OpenProtocol,
    data_dir: str | os.PathLike | None = None,
    tasks: Sequence[str] | None = None,
    split: str = "test",
) -> dict[str, int]:
    """task -> number of its (query, label) pairs that are training (text, skill) edges of ``protocol``.

    ``tasks`` defaults to every registered task; tasks whose data is absent (:class:`TaskUnavailable`) are
    left out. Under this protocol every entry must be 0 except the full ``SkillNorm`` (contaminated by
    construction, see module docstring).
    """
    resolve = SkillResolver(protocol.vocab, data_dir)
    report = {}
    for name in tasks if tasks is not None else task_names():
        try:
            dataset = get_task(name).load(split, data_dir)
        except TaskUnavailable:
            continue
        report[name] = len(leaked_pairs(protocol, dataset, resolve))
    return report


# ---------------------------------------------------------------------------------------------------------
# Graph sources
# ---------------------------------------------------------------------------------------------------------


def _parse_label_list(cell: str, path: Path, row: int) -> list[str]:
    """SkillSkape's ``skills`` cell: a Python-list string of labels; ``['UNK']`` means no skill."""
    try:
        labels = ast.literal_eval(cell)
    except (ValueError, SyntaxError) as err:
        raise DataError(f"{path}: row {row} (1-based): field 'skills' is not a Python list string: {cell!r}") from err
    if not isinstance(labels, (list, tuple)) or not all(isinstance(x, str) for x in labels):
        raise DataError(f"{path}: row {row} (1-based): field 'skills' must be a list of strings, got {cell!r}")
    return [x.strip() for x in labels if x.strip() and x.strip() != SKILLSKAPE_NONE]


def _skillskape_pairs(
    data_dir: str | os.PathLike | None, resolve: SkillResolver
) -> tuple[list[int], list[str], dict]:
    """SkillSkape train (sentence, skill) pairs; labels are v1.2.0 preferredLabels or, failing that, v1.1.0
    ones mapped through their URI (SkillSkape predates v1.2.0)."""
    path = data_file(data_dir, SKILLSKAPE_TRAIN_FILE)
    frame = read_csv_checked(path, ["sentence", "skills"], non_empty=["sentence", "skills"])
    skills, texts, unmapped = [], [], []
    n_none = n_unlinked = n_mentions = 0
    for row, (sentence, cell) in enumerate(zip(frame["sentence"], frame["skills"], strict=True), start=1):
        labels = _parse_label_list(cell, path, row)
        n_none += not labels
        n_mentions += len(labels)
        linked = 0
        for label in labels:
            index = resolve(label)
            if index is None:
                unmapped.append(label)
                continue
            skills.append(index)
            texts.append(sentence.strip())
            linked += 1
        n_unlinked += bool(labels) and not linked
    counts = {
        "sentences": len(frame),
        "sentences_unk": n_none,
        "label_mentions": n_mentions,
        "unmapped_label_mentions": len(unmapped),
        "unmapped_distinct_labels": len(set(unmapped)),
        "unmapped_examples": sorted(set(unmapped))[:10],
        "sentences_without_mapped_skill": n_unlinked,
    }
    return skills, texts, counts


@dataclass
class _Candidates:
    """Raw training pairs of one graph before leakage filtering."""

    skills: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    def add(self, skill: int, text: str) -> None:
        self.skills.append(skill)
        self.texts.append(text)


def _graph_candidates(
    data_dir: str | os.PathLike | None,
    resolve: SkillResolver,
    skills_frame,
    val_fraction: float,
    alt_fraction: float,
) -> tuple[dict[str, _Candidates], dict, list[TextSkill]]:
    """Raw pairs of each graph, what was counted per graph, and the (title, skill) pairs of held-out titles.
    Title skills are v1.2.0 labels (exact vocabulary match); SkillSkape labels may be v1.1.0 ones."""
    vocab = resolve.vocab
    candidates = {name: _Candidates() for name in GRAPH_NAMES}
    meta: dict = {}
    held_out_pairs: list[TextSkill] = []

    titles = read_vacancy_titles(data_dir)
    n_val = n_unmapped = 0
    for title, labels in titles:
        held_out = is_validation_title(title, val_fraction)
        n_val += held_out
        for label in labels:
            index = vocab.get(label)
            if index is None:
                n_unmapped += 1
            elif held_out:
                held_out_pairs.append((normalize_text(title), index))
            else:
                candidates["J"].add(index, title)
    meta["J"] = {
        "source": JOB_TITLES_FILE,
        "titles": len(titles),
        "train_titles": len(titles) - n_val,
        "val_titles": n_val,
        "unmapped_skill_mentions": n_unmapped,
    }

    n_descriptions = 0
    for index, description in enumerate(skills_frame["description"]):
        if description:
            candidates["V"].add(index, description)
            n_descriptions += 1
    ss_skills, ss_texts, ss_counts = _skillskape_pairs(data_dir, resolve)
    for skill, text in zip(ss_skills, ss_texts, strict=True):
        candidates["V"].add(skill, text)
    meta["V"] = {"descriptions": n_descriptions, "skillskape": {"source": SKILLSKAPE_TRAIN_FILE, **ss_counts}}

    n_train_skills = n_same_as_label = 0
    for index, (uri, label, alts) in enumerate(
        zip(skills_frame["uri"], skills_frame["label"], skills_frame["alt_labels"], strict=True)
    ):
        if not is_altlabel_training_skill(uri, alt_fraction):
            continue
        n_train_skills += 1
        for alt in alts:
            if len(alt) <= 1 or normalize_text(alt) == normalize_text(label):
                n_same_as_label += 1
                continue
            candidates["A"].add(index, alt)
    meta["A"] = {
        "training_half_skills": n_train_skills,
        "held_out_half_skills": len(vocab) - n_train_skills,
        "dropped_trivial_altlabels": n_same_as_label,
    }
    return candidates, meta, held_out_pairs


# ---------------------------------------------------------------------------------------------------------
# Leakage filtering
# ---------------------------------------------------------------------------------------------------------


def _evaluation_splits(alt_fraction: float) -> list[tuple[str, str, Task]]:
    """(task name, split, task) of every split reported or used for validation under the protocol: every base
    task's test and val, except that the val of a replaced base task is its protocol variant's. The @open
    variants' val pairs are the held-out graph-J pairs, added by the caller without reloading the tasks;
    their test splits are the base tests. SkillNorm@heldout/test is listed on its own: it is a subset of the
    (exempt, contaminated) SkillNorm test that must stay clean."""
    base = [name for name in task_names() if name not in PROTOCOL_TASKS]
    splits = [(name, "test", get_task(name)) for name in base]
    splits += [(name, "val", get_task(name)) for name in base if name not in REPLACED_FOR_VALIDATION]
    heldout = SkillNormHeldout(alt_fraction)
    splits += [(heldout.name, "val", heldout), (heldout.name, "test", heldout)]
    return splits


def _protected_pairs(
    data_dir: str | os.PathLike | None,
    resolve: SkillResolver,
    alt_fraction: float,
    held_out_title_pairs: Iterable[TextSkill],
) -> tuple[dict[str, set[TextSkill]], set[str], dict[str, set[str]], dict]:
    """Per evaluation split ("task/split"), the (text, skill) keys of its pairs; the sentence queries of
    SENTENCE_QUERY_GROUPS; the normalised queries of every test split; and what was unavailable."""
    # The held-out graph-J pairs are exactly the pairs of Job2Skill@open/val and Skill2Job@open/val.
    keys: dict[str, set[TextSkill]] = {"Job2Skill@open/val": set(held_out_title_pairs)}
    sentences: set[str] = set()
    test_queries: dict[str, set[str]] = {}
    unavailable = []
    for name, split, task in _evaluation_splits(alt_fraction):
        try:
            dataset = task.load(split, data_dir)
        except TaskUnavailable:
            unavailable.append(f"{name}/{split}")
            continue
        keys[f"{name}/{split}"] = dataset_pair_keys(dataset, resolve)
        if task.group in SENTENCE_QUERY_GROUPS:
            sentences.update(normalize_text(q) for q in dataset.queries)
        if split == "test":
            test_queries[name] = {normalize_text(q) for q in dataset.queries}
    return keys, sentences, test_queries, {"unavailable_splits": unavailable}


def _is_allowed(graph: str, sources: set[str]) -> bool:
    """A graph-A edge may overlap the contaminated full SkillNorm test (by construction), nothing else may."""
    exempt = {f"{task}/test" for task in CONTAMINATED} if graph == "A" else set()
    return sources <= exempt


def _filter_candidates(
    name: str, candidates: _Candidates, protected: dict[str, set[TextSkill]], sentences: set[str]
) -> tuple[_Candidates, dict]:
    """Drop the candidate edges that would form an evaluation pair (or equal a sentence query)."""
    any_protected = set().union(*protected.values())
    kept = _Candidates()
    dropped_by_source: dict[str, int] = defaultdict(int)
    n_sentence = 0
    for skill, text in zip(candidates.skills, candidates.texts, strict=True):
        key = normalize_text(text)
        if key in sentences:
            n_sentence += 1
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
    }
    return kept, report


# ---------------------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------------------


def build_open_protocol(
    data_dir: str | os.PathLike | None = None,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    altlabel_train_fraction: float = DEFAULT_ALTLABEL_TRAIN_FRACTION,
) -> OpenProtocol:
    """Build (or reuse, within this process) the open protocol's J/V/A graphs. Treat the result as read-only."""
    if not 0.0 <= val_fraction < 1.0 or not 0.0 <= altlabel_train_fraction <= 1.0:
        raise ValueError(
            f"val_fraction must be in [0, 1) and altlabel_train_fraction in [0, 1]; got {val_fraction}, "
            f"{altlabel_train_fraction}"
        )
    root = str(resolve_data_dir(data_dir).resolve())
    return _build_open_protocol(root, float(val_fraction), float(altlabel_train_fraction))


@functools.lru_cache(maxsize=4)
def _build_open_protocol(data_dir: str, val_fraction: float, alt_fraction: float) -> OpenProtocol:
    start = time.perf_counter()
    skills = load_skills(data_dir, "v1.2.0")
    vocab = SkillVocabulary.from_frame(skills, name="esco-v1.2.0")
    resolve = SkillResolver(vocab, data_dir)
    candidates, sources_meta, held_out_pairs = _graph_candidates(data_dir, resolve, skills, val_fraction, alt_fraction)
    protected, sentences, test_queries, availability = _protected_pairs(data_dir, resolve, alt_fraction, held_out_pairs)

    graphs: dict[str, BipartiteGraph] = {}
    leakage: dict = {**availability, "graphs": {}}
    for name in GRAPH_NAMES:
        kept, report = _filter_candidates(name, candidates[name], protected, sentences)
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
        "leakage": leakage,
        "counts": {name: graph.summary() for name, graph in graphs.items()},
        "build_seconds": round(time.perf_counter() - start, 2),
    }
    return OpenProtocol(graphs=graphs, vocab=vocab, meta=meta)


def _validation_task_names() -> list[str]:
    return [REPLACED_FOR_VALIDATION.get(name, name) for name in task_names() if name not in PROTOCOL_TASKS]


def clear_cache() -> None:
    _build_open_protocol.cache_clear()


# ---------------------------------------------------------------------------------------------------------
# Protocol task variants
# ---------------------------------------------------------------------------------------------------------


def _restrict_targets(dataset: RankingDataset, keep: Iterable[bool], task: str, note: str) -> RankingDataset:
    """Keep only some targets (order preserved), remap labels, drop queries left without a label."""
    keep = np.fromiter(keep, dtype=bool, count=len(dataset.targets))
    new_index = np.cumsum(keep) - 1
    queries, labels = [], []
    for query, row in zip(dataset.queries, dataset.labels, strict=True):
        kept = [int(new_index[j]) for j in row if keep[j]]
        if kept:
            queries.append(query)
            labels.append(kept)
    targets = [t for t, k in zip(dataset.targets, keep, strict=True) if k]
    meta = {**dataset.meta, "notes": [*dataset.meta.get("notes", []), note]}
    return RankingDataset(task, dataset.split, queries, targets, labels, meta=meta)


def _restrict_queries(dataset: RankingDataset, keep: Iterable[bool], task: str, note: str) -> RankingDataset:
    rows = [i for i, k in enumerate(keep) if k]
    meta = {**dataset.meta, "notes": [*dataset.meta.get("notes", []), note]}
    exclude = [dataset.exclude[i] for i in rows] if dataset.exclude is not None else None
    return RankingDataset(
        task,
        dataset.split,
        [dataset.queries[i] for i in rows],
        list(dataset.targets),
        [list(dataset.labels[i]) for i in rows],
        exclude=exclude,
        meta=meta,
    )


@register_task
class Job2SkillOpen(Task):
    """Job2Skill under the open protocol: val = the held-out vacancy titles only; test = standard test."""

    name = "Job2Skill@open"
    group = "Job2Skill"
    description = "Job2Skill, validation on the titles held out of the open protocol's J graph"

    def __init__(self, val_fraction: float = DEFAULT_VAL_FRACTION) -> None:
        self.val_fraction = val_fraction

    def load(self, split: str, data_dir: str | Path | None = None) -> RankingDataset:
        base = get_task("Job2Skill").load(split, data_dir)
        if split == "test":
            return _restrict_queries(base, [True] * base.n_queries, self.name, "Standard Job2Skill test.")
        keep = [is_validation_title(q, self.val_fraction) for q in base.queries]
        return _restrict_queries(
            base, keep, self.name, f"Open protocol: only the {sum(keep)} titles held out of graph J."
        )


@register_task
class Skill2JobOpen(Task):
    """Skill2Job under the open protocol: val targets = the held-out vacancy titles; test = standard test."""

    name = "Skill2Job@open"
    group = "Skill2Job"
    description = "Skill2Job, validation on the titles held out of the open protocol's J graph"

    def __init__(self, val_fraction: float = DEFAULT_VAL_FRACTION) -> None:
        self.val_fraction = val_fraction

    def load(self, split: str, data_dir: str | Path | None = None) -> RankingDataset:
        base = get_task("Skill2Job").load(split, data_dir)
        if split == "test":
            return _restrict_queries(base, [True] * base.n_queries, self.name, "Standard Skill2Job test.")
        keep = [is_validation_title(t, self.val_fraction) for t in base.targets]
        return _restrict_targets(
            base, keep, self.name, f"Open protocol: target space = the {sum(keep)} titles held out of graph J."
        )


@register_task
class SkillNormHeldout(Task):
    """SkillNorm restricted to queries whose label skills all lie in the held-out half (no altLabel of theirs
    is a training text): the clean SkillNorm number under the open protocol."""

    name = "SkillNorm@heldout"
    group = "SkillNorm"
    description = "SkillNorm on the skills whose altLabels the open protocol holds out"

    def __init__(self, altlabel_train_fraction: float = DEFAULT_ALTLABEL_TRAIN_FRACTION) -> None:
        self.altlabel_train_fraction = altlabel_train_fraction

    def load(self, split: str, data_dir: str | Path | None = None) -> RankingDataset:
        base = get_task("SkillNorm").load(split, data_dir)
        label_to_uri = dict(zip(*_skill_label_uri(data_dir), strict=True))
        held_out = [not is_altlabel_training_skill(label_to_uri[t], self.altlabel_train_fraction) for t in base.targets]
        keep = [all(held_out[j] for j in row) for row in base.labels]
        return _restrict_queries(
            base, keep, self.name, "Open protocol: only queries whose skills' altLabels are not training texts."
        )


def _skill_label_uri(data_dir: str | os.PathLike | None) -> tuple[list[str], list[str]]:
    skills = load_skills(data_dir, "v1.2.0")
    return skills["label"].tolist(), skills["uri"].tolist()


PROTOCOL_TASKS = (Job2SkillOpen.name, Skill2JobOpen.name, SkillNormHeldout.name)
