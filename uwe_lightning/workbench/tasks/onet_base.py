"""What the four O*NET tasks share: suite ``onet``, the val/test fractions of their hash split, what their meta
says, and for the three that rank a text of one O*NET file against the occupation titles
(:class:`TextToOccupationTask`) the whole build.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from uwe_lightning.workbench.tasks.base import RankingTask, TaskSplit
from uwe_lightning.workbench.tasks.builders import label_rows
from uwe_lightning.workbench.tasks.onet_sources import (
    ONET_FILES,
    VERSION_NOTE,
    check_fractions,
    code_rows,
    occupation_targets,
    split_grouped,
    text_to_codes,
)


class OnetTask(RankingTask):
    """An O*NET task: zero-shot suite ``onet``, split by :func:`~.onet_sources.split_grouped` with these fractions
    (a sum below 1 leaves the rest unused, keeping the test split CPU-sized)."""

    suite = "onet"
    salt: str = ""  # of the hash split
    default_val_fraction: float = 0.2
    default_test_fraction: float = 0.8

    def __init__(self, val_fraction: float | None = None, test_fraction: float | None = None) -> None:
        val = self.default_val_fraction if val_fraction is None else val_fraction
        test = self.default_test_fraction if test_fraction is None else test_fraction
        check_fractions(self.name, val, test)
        self.val_fraction, self.test_fraction = float(val), float(test)

    def split_note(self, key: str) -> str:
        """The documented split rule, for the dataset's notes."""
        rest = ", else unused." if self.val_fraction + self.test_fraction < 1.0 else "."
        return (f"Split: sha256('{self.salt}\\0' + {key}) unit < {self.val_fraction} -> val, "
                f"< {self.val_fraction + self.test_fraction} -> test{rest}")

    def onet_split(self, queries: list[str], targets: list[str], labels: list[list[int]], source: str, key: str,
                   counts: dict[str, Any]) -> TaskSplit:
        """The split with what every O*NET task says of itself: the release, the occupation file and ``source``
        (a key of :data:`~.onet_sources.ONET_FILES`), the split rule on ``key`` and its fractions, then ``counts``."""
        meta = {"onet_version": "29.2", "sources": [ONET_FILES["occupations"], ONET_FILES[source]],
                "val_fraction": self.val_fraction, "test_fraction": self.test_fraction, **counts}
        return TaskSplit(queries, targets, labels, [VERSION_NOTE, self.split_note(key)], meta=meta)


class TextToOccupationTask(OnetTask):
    """Column ``column`` of O*NET file ``source`` -> the occupation(s) listing that text, among all 1,016
    occupation titles. Identical texts (strip + case-fold) of several occupations are one multi-label query; the
    split key is that normalised text (``key_name`` says what it is in the notes and counts)."""

    source: str = ""
    column: str = ""
    key_name: str = "text"
    dropped_count_key: str | None = None  # the meta count of the rows :meth:`keep` drops, for a task that drops

    def keep(self, pairs: list[tuple[str, str]], titles: dict[str, str]) -> list[tuple[str, str]]:
        """The (code, text) rows that become queries (all of them unless a task drops trivial ones)."""
        return pairs

    def build(self, split: str, data_dir: str | Path | None) -> TaskSplit:
        titles, targets, index = occupation_targets(data_dir)
        pairs = code_rows(data_dir, self.source, self.column, titles)
        kept = self.keep(pairs, titles)
        grouped = text_to_codes(kept)
        chosen = split_grouped(grouped, split, self.salt, self.val_fraction, self.test_fraction)
        labels = label_rows(([titles[code] for code in codes] for codes in chosen.values()), index)
        counts: dict[str, Any] = {"n_rows": len(pairs)}
        if self.dropped_count_key:
            counts[self.dropped_count_key] = len(pairs) - len(kept)
        counts[f"n_distinct_{self.key_name}s"] = len(grouped)
        counts["n_multi_label_queries"] = sum(len(row) > 1 for row in labels)
        return self.onet_split(list(chosen), targets, labels, self.source, f"strip+casefold({self.key_name})", counts)
