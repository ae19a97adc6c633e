"""ONET-Tech2Occ: technology skill -> the O*NET 29.2 occupations using it (zero-shot suite ``onet``)."""

from __future__ import annotations

from uwe_lightning.workbench.registry import register_task
from uwe_lightning.workbench.tasks.onet_base import TextToOccupationTask


@register_task
class OnetTech2Occ(TextToOccupationTask):
    """Technology skill (``Technology Skills.txt`` ``Example``) -> the occupations using it, among all 1,016
    O*NET occupation titles (ONET-Occ2Tech inverted; O*NET's Skill2Job analogue; multi-label).

    Split (documented rule): the SHA-256 unit value of ``"uwe-onet/Tech2Occ\\0" + strip+casefold(example)`` below
    ``val_fraction`` (0.2) -> val, the rest (``test_fraction`` 0.8) -> test.
    """

    name = "ONET-Tech2Occ"
    group = "ONET-Tech2Occ"
    description = "technology skill -> O*NET 29.2 occupations using it (zero-shot)"
    salt = "uwe-onet/Tech2Occ"
    source, column, key_name = "technology_skills", "Example", "example"
    default_val_fraction, default_test_fraction = 0.2, 0.8
