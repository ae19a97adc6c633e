"""Leakage: no query of a reported test set (or of a split used for validation) is a training text paired
with its label.

Texts are compared after strip + case-fold and labels by skill (v1.2.0 preferredLabel/URI; v1.1.0 SkillExtract
labels through their URI). Training edges that would form a (query, label) pair of a WorkBench test split, or
of a split used for validation under this protocol, are dropped (counts in ``meta["leakage"]``); training texts
equal to a SkillExtract sentence are dropped whatever their labels. One exception is by construction: the full
SkillNorm split holds every altLabel, so graph A's altLabels ARE SkillNorm test queries; the clean number is
``SkillNorm@heldout`` and the full SkillNorm is reported only beside it, marked contaminated.

Generated training texts (``python -m uwe_lightning.enrich``, edge files added with ``data=open_enriched``) get
a stricter rule, :class:`QueryGuard`: a generated text equal (case-, space-insensitive) to ANY query of a split
the protocol reports or validates on is dropped, whatever its skill and whichever the task.

Zero-shot suites (O*NET) are outside every protocol: the graphs never read their files, no split of theirs is
protected or used for validation, so building the protocol does not depend on them. :func:`zero_shot_overlap`
measures what a zero-shot task shares with the training texts anyway (an O*NET alternate title can also be a
vacancy title; its O*NET label is never a training label).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from uwe_lightning.data.graphs import BipartiteGraph, SkillVocabulary, normalize_text
from uwe_lightning.esco import load_skills
from uwe_lightning.io import DataError
from uwe_lightning.protocol.tasks import PROTOCOL_TASKS, Job2SkillOpen, Skill2JobOpen, SkillNormHeldout
from uwe_lightning.workbench.dataset import RankingDataset, TaskUnavailable
from uwe_lightning.workbench.registry import WORKBENCH_SUITE, Task, get_task, is_zero_shot_only, task_names

#: The base tasks replaced by a protocol variant for validation (their standard val overlaps training).
REPLACED_FOR_VALIDATION = {"Job2Skill": "Job2Skill@open", "Skill2Job": "Skill2Job@open", "SkillNorm": "SkillNorm@heldout"}
#: Test splits whose overlap with the A graph is by construction (reported as contaminated).
CONTAMINATED = {
    "SkillNorm": "the full SkillNorm split holds every altLabel, so the training half's altLabels (graph A) "
    "are its queries; report SkillNorm@heldout as the clean number and the full one only marked contaminated"
}
#: Test splits whose queries may be training texts. Every other test query is never a training text, with any
#: label (data README: "no query of a reported test set is seen in training").
QUERY_TEXTS_ALLOWED = {
    "Skill2Job": "its queries are ESCO skill labels: the skills every graph is anchored on (grounding allowed)",
    "SkillSim": "its queries are ESCO skill labels (grounding in the skill set is allowed)",
    **CONTAMINATED,
}
#: Task groups whose queries are sentences: a training sentence equal to one is dropped whatever its labels.
SENTENCE_QUERY_GROUPS = ("SkillExtract",)

TextSkill = tuple[str, int]  # (normalised text, skill index): one training edge as leakage sees it


class OpenProtocol(Protocol):
    """What the leakage checks read of a protocol build (:class:`uwe_lightning.protocol.build.OpenProtocol`):
    declared here as a structural type so that this module does not import the builder that imports it."""

    graphs: dict[str, BipartiteGraph]
    vocab: SkillVocabulary
    meta: dict

    def training_pairs(self) -> set[TextSkill]: ...


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

    ``tasks`` defaults to every registered task, each built as ``protocol`` builds it (its fractions); tasks
    whose data is absent (:class:`TaskUnavailable`) are left out. Under this protocol every entry must be 0
    except the full ``SkillNorm`` (contaminated by construction, see module docstring).
    """
    resolve = SkillResolver(protocol.vocab, data_dir)
    report = {}
    for name in tasks if tasks is not None else task_names():
        try:
            dataset = protocol.task(name).load(split, data_dir)
        except TaskUnavailable:
            continue
        report[name] = len(leaked_pairs(protocol, dataset, resolve))
    return report


def _evaluation_splits(alt_fraction: float) -> list[tuple[str, str, Task]]:
    """(task name, split, task) of every split reported or used for validation under the protocol: every base
    task's test and val, except that the val of a replaced base task is its protocol variant's. The @open
    variants' val pairs are the held-out graph-J pairs, added by the caller without reloading the tasks;
    their test splits are the base tests. SkillNorm@heldout/test is listed on its own: it is a subset of the
    (exempt, contaminated) SkillNorm test that must stay clean."""
    base = [name for name in task_names(WORKBENCH_SUITE) if name not in PROTOCOL_TASKS]
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


def query_key(text: str) -> str:
    """The guard's comparison key: case-folded, whitespace runs collapsed and stripped.

    >>> query_key("  Data   SCIENTIST ") == query_key("data scientist")
    True
    """
    return " ".join(str(text).split()).casefold()


class QueryGuard:
    """The queries no generated training text may equal: per split (``"task/split"``), their :func:`query_key`.

    Built from the data pack with :meth:`from_data_pack` (every split of :func:`_evaluation_splits`, plus the
    ``@open`` validation splits), or from any mapping for tests and other benchmarks.
    """

    def __init__(self, queries: Mapping[str, Iterable[str]], meta: Mapping | None = None) -> None:
        self._splits: dict[str, list[str]] = {}
        for split, texts in queries.items():
            for key in {query_key(t) for t in texts}:
                self._splits.setdefault(key, []).append(split)
        self.split_names = sorted(queries)
        self.meta = dict(meta or {})

    def __len__(self) -> int:
        return len(self._splits)

    def hits(self, text: str) -> list[str]:
        """The splits (sorted) that hold ``text`` as a query; empty when the text may be trained on."""
        return sorted(self._splits.get(query_key(text), ()))

    @classmethod
    def from_data_pack(
        cls, data_dir: str | os.PathLike | None, val_fraction: float, altlabel_train_fraction: float
    ) -> QueryGuard:
        """Every reported test split and every split validated on under the open protocol built with these
        fractions (absent data: listed in ``meta["unavailable_splits"]``)."""
        splits = _evaluation_splits(altlabel_train_fraction)
        splits += [(task.name, "val", task) for task in (Job2SkillOpen(val_fraction), Skill2JobOpen(val_fraction))]
        queries: dict[str, list[str]] = {}
        unavailable = []
        for name, split, task in splits:
            try:
                queries[f"{name}/{split}"] = task.load(split, data_dir).queries
            except TaskUnavailable:
                unavailable.append(f"{name}/{split}")
            except ValueError as err:  # e.g. no held-out title at all on a tiny pack: an empty split
                unavailable.append(f"{name}/{split} ({err})")
        return cls(queries, {"unavailable_splits": unavailable, "val_fraction": val_fraction,
                             "altlabel_train_fraction": altlabel_train_fraction})


def zero_shot_overlap(
    protocol: OpenProtocol, data_dir: str | os.PathLike | None = None, split: str = "test",
    tasks: Sequence[str] | None = None, task_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, dict[str, int]]:
    """Per zero-shot task (default: every registered one), how many of its queries and targets are training texts
    of ``protocol`` (strip + case-fold), and how many of its (query, label) pairs are training (text, skill) edges.

    Zero-shot tasks are never filtered out of training (their labels are O*NET codes, not ESCO skills), so this
    is a measurement for the report, not a guarantee; tasks whose data is absent are left out. ``task_options``:
    per task, the options it is built with (as :func:`~uwe_lightning.workbench.runner.load_tasks`).
    """
    names = [n for n in (tasks if tasks is not None else task_names()) if is_zero_shot_only(n)]
    resolve = SkillResolver(protocol.vocab, data_dir)
    texts = {normalize_text(t) for graph in protocol.graphs.values() for t in graph.texts}
    report: dict[str, dict[str, int]] = {}
    for name in names:
        try:
            dataset = get_task(name, **dict((task_options or {}).get(name, {}))).load(split, data_dir)
        except TaskUnavailable:
            continue
        queries = {normalize_text(q) for q in dataset.queries}
        targets = {normalize_text(t) for t in dataset.targets}
        report[name] = {
            "n_queries": dataset.n_queries,
            "queries_seen_as_training_text": len(queries & texts),
            "n_targets": dataset.n_targets,
            "targets_seen_as_training_text": len(targets & texts),
            "leaked_pairs": len(leaked_pairs(protocol, dataset, resolve)),
        }
    return report
