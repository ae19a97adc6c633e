"""ONET-JobNorm: O*NET alternate job title -> its O*NET 29.2 occupation (zero-shot suite ``onet``)."""

from __future__ import annotations

from uwe_lightning.data.graphs import normalize_text
from uwe_lightning.workbench.registry import register_task
from uwe_lightning.workbench.tasks.onet_base import TextToOccupationTask


@register_task
class OnetJobNorm(TextToOccupationTask):
    """Alternate title (``Alternate Titles.txt``) -> its O*NET occupation title, among all 1,016 occupations.

    An alternate title equal (strip + case-fold) to its own occupation's title is dropped (the trivial match, as
    SkillNorm drops an altLabel equal to its preferredLabel); identical titles of several occupations form one
    multi-label query. Split (documented rule): the SHA-256 unit value of ``"uwe-onet/JobNorm\\0" +
    strip+casefold(title)`` puts a title in val below ``val_fraction`` (0.05), in test below ``val_fraction +
    test_fraction`` (0.25); the other 75 % are left unused so that the test split is CPU-sized (``test_fraction
    =0.95`` uses every title). Case variants of one title always land on the same side.
    """

    name = "ONET-JobNorm"
    group = "ONET-JobNorm"
    description = "O*NET alternate job title -> O*NET 29.2 occupation (zero-shot)"
    salt = "uwe-onet/JobNorm"
    source, column, key_name = "alternate_titles", "Alternate Title", "title"
    default_val_fraction, default_test_fraction = 0.05, 0.2
    dropped_count_key = "n_dropped_equal_to_own_title"

    def keep(self, pairs: list[tuple[str, str]], titles: dict[str, str]) -> list[tuple[str, str]]:
        """Drop an alternate title equal to its own occupation's title (the trivial match)."""
        return [(code, alt) for code, alt in pairs if normalize_text(alt) != normalize_text(titles[code])]
