"""SkillSim: SkillMatch-1K skill -> its related skill, and the readers of SkillMatch-1K (not in the pack)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from uwe_lightning.io import DataError, hub_allowed, read_csv_checked, read_parquet_checked
from uwe_lightning.paths import resolve_data_dir
from uwe_lightning.workbench.dataset import TaskUnavailable
from uwe_lightning.workbench.registry import register_task
from uwe_lightning.workbench.tasks.base import RankingTask, TaskSplit
from uwe_lightning.workbench.tasks.builders import shuffle_split, target_index

SKILLMATCH_HUB_DATASET = "TechWolf/SkillMatch-1K"
#: Local copy of SkillMatch-1K: one of these files (hub split "test") under ``<data_dir>/``.
SKILLMATCH_LOCAL_DIR = "workbench/skillsim"
SKILLMATCH_LOCAL_FILES = ("test.parquet", "test.csv")
SKILLMATCH_COLUMNS = ("skill_a", "skill_b", "related")


def _related_flags(values: pd.Series, source: str) -> list[bool]:
    """SkillMatch ``related`` column (0/1, bool or their strings) as booleans."""
    flags = []
    for row, value in enumerate(values, start=1):
        text = str(value).strip().lower()
        if text in ("1", "1.0", "true"):
            flags.append(True)
        elif text in ("0", "0.0", "false"):
            flags.append(False)
        else:
            raise DataError(f"{source}: row {row} (1-based): field 'related' must be 0/1, got {value!r}")
    return flags


def read_skillmatch_local(data_dir: str | os.PathLike | None) -> tuple[pd.DataFrame, str] | None:
    """The local SkillMatch-1K copy (``<data_dir>/workbench/skillsim/test.parquet`` or ``test.csv``,
    columns skill_a, skill_b, related) and its path, or None when there is none."""
    directory = resolve_data_dir(data_dir) / SKILLMATCH_LOCAL_DIR
    for name in SKILLMATCH_LOCAL_FILES:
        path = directory / name
        if path.is_file():
            if path.suffix == ".parquet":
                return read_parquet_checked(path, SKILLMATCH_COLUMNS), str(path)
            return read_csv_checked(path, SKILLMATCH_COLUMNS, non_empty=SKILLMATCH_COLUMNS), str(path)
    return None


def read_skillmatch_hub(dataset: str = SKILLMATCH_HUB_DATASET, cache_dir: str | None = None) -> pd.DataFrame:
    """Split "test" of SkillMatch-1K through ``datasets.load_dataset`` (a hub name or a local folder in
    the hub layout); failures become :class:`TaskUnavailable`."""
    try:
        from datasets import load_dataset

        frame = load_dataset(dataset, split="test", cache_dir=cache_dir).to_pandas()
    except Exception as err:  # network, auth, missing dataset: all mean "not available here"
        raise TaskUnavailable(
            f"SkillSim: could not load '{dataset}' with datasets.load_dataset: {err}"
        ) from err
    missing = [c for c in SKILLMATCH_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{dataset}: missing column(s) {missing}; it has {list(frame.columns)}")
    return frame


@register_task
class SkillSim(RankingTask):
    """SkillMatch-1K skill -> its related skill (one positive per related pair).

    Target space: all distinct skills of all pairs, related or not (2,648); the query itself is
    excluded from its own ranking through ``RankingDataset.exclude`` (paper; workrb 0.6.0 does not
    exclude it). The related pairs are split 10/90 into val/test with workrb's seeded split (scikit-learn
    ``train_test_split``, seed 42), reproduced by :func:`~.builders.shuffle_split`: 100 / 900 queries. Each related
    pair is its own query, also when a skill has several partners (the paper's counts are pair counts).

    The data is not in the pack. Sources, in order: ``<data_dir>/workbench/skillsim/test.parquet`` or
    ``test.csv`` (columns ``skill_a, skill_b, related``: the hub dataset's "test" split); else, only when
    allowed (``allow_hub=True`` or env ``UWE_ALLOW_HUB=1``), ``datasets.load_dataset(hub_dataset)``;
    else :class:`TaskUnavailable`.
    """

    name = "SkillSim"
    group = "SkillSim"
    description = "skill -> related skills (SkillMatch-1K)"

    def __init__(
        self,
        allow_hub: bool | None = None,
        hub_dataset: str = SKILLMATCH_HUB_DATASET,
        hub_cache_dir: str | None = None,
        seed: int = 42,
        test_fraction: float = 0.9,
    ) -> None:
        self.allow_hub = hub_allowed() if allow_hub is None else allow_hub
        self.hub_dataset = hub_dataset
        self.hub_cache_dir = hub_cache_dir
        self.seed = seed
        self.test_fraction = test_fraction

    def read_pairs(self, data_dir: str | Path | None) -> tuple[pd.DataFrame, str]:
        """The SkillMatch-1K rows and where they came from."""
        local = read_skillmatch_local(data_dir)
        if local is not None:
            return local
        if self.allow_hub:
            return read_skillmatch_hub(self.hub_dataset, self.hub_cache_dir), f"datasets:{self.hub_dataset}"
        where = resolve_data_dir(data_dir) / SKILLMATCH_LOCAL_DIR
        raise TaskUnavailable(
            f"SkillSim needs SkillMatch-1K, which is not in the data pack: put "
            f"{' or '.join(SKILLMATCH_LOCAL_FILES)} (columns {', '.join(SKILLMATCH_COLUMNS)}; "
            "the 'test' split "
            f"of hub dataset {SKILLMATCH_HUB_DATASET}) into {where}, or set UWE_ALLOW_HUB=1 to load it "
            "with datasets.load_dataset."
        )

    def build(self, split: str, data_dir: str | Path | None) -> TaskSplit:
        frame, source = self.read_pairs(data_dir)
        skill_a = frame["skill_a"].astype(str).str.strip().tolist()
        skill_b = frame["skill_b"].astype(str).str.strip().tolist()
        targets, index = target_index(skill_a + skill_b)
        related = _related_flags(frame["related"], source)
        pairs = [(a, b) for a, b, r in zip(skill_a, skill_b, related, strict=True) if r]
        val_rows, test_rows = shuffle_split(len(pairs), self.test_fraction, self.seed)
        rows = val_rows if split == "val" else test_rows
        queries = [pairs[i][0] for i in rows]
        labels = [[index[pairs[i][1]]] for i in rows]
        # Paper over workrb: workrb does not exclude the query from its own ranking; the paper does.
        exclude = [[index[q]] for q in queries]
        notes = ["SkillMatch-1K is not in the pack; sizes match the paper only with the original data."]
        meta = {"source": source, "n_pairs": len(frame), "n_related_pairs": len(pairs), "seed": self.seed}
        return TaskSplit(queries, targets, labels, notes, exclude=exclude, meta=meta)
