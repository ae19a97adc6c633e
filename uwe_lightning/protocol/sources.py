"""Where the open protocol's graph texts come from (all inside the data pack).

* **J** (job titles): the real vacancy titles of ``workbench/job2skill_val/job_skill_val.parquet``; every title
  not held out for validation (:mod:`uwe_lightning.protocol.splits`) is linked to each of its skills.
* **V** (vacancy sentences): each ESCO v1.2.0 skill's description, plus the SkillSkape train sentences
  (``extra/skillskape/train.csv``) linked to their skills (labels matched to the vocabulary after strip +
  case-fold, else as ESCO v1.1.0 labels through their URI; ``['UNK']`` = no skill; unmappable labels are
  counted and dropped).
* **A** (skill alternatives): the altLabels of the training half of the skills, each linked to its skill;
  altLabels equal to the skill's own preferredLabel are dropped (trivial pairs, also dropped from SkillNorm).
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass, field
from pathlib import Path

from uwe_lightning.data.graphs import GRAPHS, normalize_text
from uwe_lightning.io import DataError, read_csv_checked
from uwe_lightning.paths import data_file
from uwe_lightning.protocol.leakage import SkillResolver, TextSkill
from uwe_lightning.protocol.splits import is_altlabel_training_skill, is_validation_title
from uwe_lightning.workbench.tasks.sources import VACANCY_TITLES_FILE, read_vacancy_titles

SKILLSKAPE_TRAIN_FILE = "extra/skillskape/train.csv"
SKILLSKAPE_NONE = "UNK"


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
    candidates = {name: _Candidates() for name in GRAPHS}
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
        "source": VACANCY_TITLES_FILE,
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
