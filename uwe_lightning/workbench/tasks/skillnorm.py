"""SkillNorm: ESCO v1.2.0 altLabel -> its skill(s), with workrb's class-uniform val/test split."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from uwe_lightning.esco import SKILL_FILES, load_skills
from uwe_lightning.workbench.registry import register_task
from uwe_lightning.workbench.tasks.base import RankingTask, TaskSplit
from uwe_lightning.workbench.tasks.builders import class_uniform_split, target_index


def skillnorm_alt_to_skills(skills: pd.DataFrame, index: dict[str, int]) -> dict[str, list[int]]:
    """altLabel -> its skills' target indices, in skill FILE order then altLabel order.

    As workrb: an altLabel equal to its skill's preferredLabel (after stripping) is dropped, and so is a
    one-character altLabel (none in the pack); an altLabel string shared by several skills becomes one
    multi-label query, placed where it first appears.
    """
    alt_to_skills: dict[str, list[int]] = {}
    for label, alts in zip(skills["label"], skills["alt_labels"], strict=True):
        skill = index[label]
        for alt in alts:
            # README over workrb: compare stripped texts (workrb compares with the raw preferredLabel).
            if len(alt) <= 1 or alt == label:
                continue
            members = alt_to_skills.setdefault(alt, [])
            if skill not in members:
                members.append(skill)
    return alt_to_skills


@register_task
class SkillNorm(RankingTask):
    """ESCO v1.2.0 altLabel -> its skill(s) among all 13,939 v1.2.0 skills.

    Class-uniform split (workrb ``class_uniform_split``): walking the skills in FILE order and their
    altLabels in order, an altLabel goes to validation when one of its skills has no validation altLabel
    yet, else to test. This pack gives 13,502 / 72,006 queries (as its README says) against the paper's
    13,222 / 73,311 (see ``meta["notes"]``): (1) the pack's skills file is sorted by URI, not in ESCO's
    original row order, which moves altLabels between val and test; (2) the paper's total, 86,533, equals
    the number of non-empty altLabel entries of the pack's file, whereas dropping the 515 altLabels equal
    to their preferredLabel and merging 510 identical strings of several skills (README, workrb) leaves
    85,508 distinct queries; the pack cannot tell how the published total arose.
    Unlike workrb 0.6.0, the altLabel/preferredLabel comparison is on stripped text: workrb compares with
    the raw preferredLabel, so on this pack it keeps 2 altLabels ("supervise coffee roasting", "weld
    mining machinery") that equal a preferredLabel carrying a trailing space (13,502 / 72,008 there).
    """

    name = "SkillNorm"
    group = "SkillNorm"
    description = "ESCO altLabel -> its ESCO v1.2.0 skill"
    esco_version = "v1.2.0"

    def build(self, split: str, data_dir: str | Path | None) -> TaskSplit:
        skills = load_skills(data_dir, "v1.2.0")
        targets, index = target_index(skills["label"])
        alt_to_skills = skillnorm_alt_to_skills(skills, index)
        val, test = class_uniform_split(alt_to_skills)
        queries, labels = val if split == "val" else test
        n_alt_entries = int(skills["alt_labels"].map(len).sum())
        notes = [
            "The class-uniform split walks skills in file order; this pack's skills file is sorted by "
            "URI, not ESCO's original order, which moves altLabels between val and test (README: "
            "zero-shot MAP moves by about 0.3).",
            f"Queries are distinct altLabel strings: {len(alt_to_skills):,} in val + test, from "
            f"{n_alt_entries:,} non-empty altLabel entries after dropping altLabels equal to their "
            "preferredLabel and merging identical strings of several skills (README, workrb). The "
            "paper's 13,222 + 73,311 = 86,533 equals the raw entry count of the pack's v1.2.0 file.",
            "AltLabel == preferredLabel is tested on stripped text (workrb 0.6.0 compares with the raw "
            "label and keeps 2 such altLabels on this pack: 72,008 test queries there).",
        ]
        meta = {"sources": [SKILL_FILES["v1.2.0"]], "n_alt_label_entries": n_alt_entries,
                "n_distinct_alt_labels": len(alt_to_skills),
                "n_multi_skill_queries": sum(len(row) > 1 for row in labels)}
        return TaskSplit(queries, targets, labels, notes, meta=meta)
