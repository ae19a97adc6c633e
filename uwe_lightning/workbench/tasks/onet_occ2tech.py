"""ONET-Occ2Tech: O*NET 29.2 occupation -> the technology skills it uses (zero-shot suite ``onet``)."""

from __future__ import annotations

from pathlib import Path

from uwe_lightning.workbench.registry import register_task
from uwe_lightning.workbench.tasks.base import TaskSplit
from uwe_lightning.workbench.tasks.builders import group_in_order, label_rows, target_index
from uwe_lightning.workbench.tasks.onet_base import OnetTask
from uwe_lightning.workbench.tasks.onet_sources import code_rows, occupation_titles, split_grouped


@register_task
class OnetOcc2Tech(OnetTask):
    """Occupation title -> its technology skills (``Technology Skills.txt`` ``Example``: "Microsoft Excel",
    "Python", ...), ranked against all 8,768 distinct examples (multi-label; O*NET's Job2Skill analogue).

    Queries: the occupations with at least one technology skill (923 of 1,016). Split (documented rule): the
    SHA-256 unit value of ``"uwe-onet/Occ2Tech\\0" + O*NET-SOC code`` below ``val_fraction`` (0.2) -> val, the
    rest (``test_fraction`` 0.8) -> test. Both splits rank against the full example space.
    """

    name = "ONET-Occ2Tech"
    group = "ONET-Occ2Tech"
    description = "O*NET 29.2 occupation -> its technology skills (zero-shot)"
    salt = "uwe-onet/Occ2Tech"

    def build(self, split: str, data_dir: str | Path | None) -> TaskSplit:
        titles = occupation_titles(data_dir)
        pairs = code_rows(data_dir, "technology_skills", "Example", titles)
        targets, index = target_index(example for _, example in pairs)
        by_code = group_in_order(pairs)
        chosen = split_grouped(by_code, split, self.salt, self.val_fraction, self.test_fraction, key=lambda code: code)
        counts = {"n_rows": len(pairs), "n_occupations_with_technology": len(by_code)}
        return self.onet_split([titles[code] for code in chosen], targets, label_rows(chosen.values(), index),
                               "technology_skills", "O*NET-SOC code", counts)
