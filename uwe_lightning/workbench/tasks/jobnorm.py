"""JobNorm: vacancy title -> its ESCO v1.0.x occupation (JobBERT evaluation data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from uwe_lightning.esco import load_occupations
from uwe_lightning.io import DataError, read_csv_checked
from uwe_lightning.paths import data_file
from uwe_lightning.workbench.registry import register_task
from uwe_lightning.workbench.tasks.base import RankingTask, TaskSplit
from uwe_lightning.workbench.tasks.builders import target_index

JOBNORM_FILES = {"val": "workbench/jobnorm/titles.csv", "test": "workbench/jobnorm/titles.test.csv"}


@register_task
class JobNorm(RankingTask):
    """Vacancy title -> its ESCO occupation, among the 2,942 ESCO v1.0.x occupations (single label).

    JobBERT evaluation dataset: ``titles.csv`` (val) and ``titles.test.csv`` (test), 15,463 rows each;
    every row is its own query (README: duplicate titles are NOT merged, unlike workrb 0.6.0, which
    merges them by default; the paper-era workrb kept them). The paper reports 15,462 / 15,461: exactly
    1 val row and 2 test rows point at occupations that no longer exist in ESCO v1.2.0 (val row 15322
    "Radiation Therapy Technologist #MAT" -> therapeutic radiographer; test rows 15460 "meat & Vegetables
    Executives" -> fruit and vegetable preserver and 15462 "Engineer Officer (Landing Craft)" -> wind
    energy engineer), so the published copy most likely dropped retired occupations. ``drop_retired_uris``
    reproduces that; by default all rows are kept (README).
    """

    name = "JobNorm"
    group = "JobNorm"
    description = "vacancy title -> ESCO v1.0.x occupation"
    esco_version = "v1.0.x"

    def __init__(self, drop_retired_uris: bool = False) -> None:
        self.drop_retired_uris = drop_retired_uris

    def build(self, split: str, data_dir: str | Path | None) -> TaskSplit:
        occupations = load_occupations(data_dir, "v1.0.x")
        targets, index = target_index(occupations["label"])
        uri_to_target = {
            uri: index[label] for uri, label in zip(occupations["uri"], occupations["label"], strict=True)
        }
        path = data_file(data_dir, JOBNORM_FILES[split])
        rows = read_csv_checked(
            path, ["vacancyTitle", "conceptUri"], non_empty=["vacancyTitle", "conceptUri"]
        )
        uris = rows["conceptUri"].str.strip()
        unknown = ~uris.isin(uri_to_target)
        if unknown.any():
            row = int(unknown.to_numpy().argmax()) + 1
            raise DataError(
                f"{path}: row {row} (1-based): conceptUri {uris.iloc[row - 1]} is not an occupation of "
                f"{data_file(data_dir, 'esco/v1.0.x/occupations_en.csv')}"
            )
        # README over workrb 0.6.0 (whose RankingDataset merges duplicate queries by default): every row
        # is its own query, as in the paper-era workrb.
        keep = np.ones(len(rows), dtype=bool)
        if self.drop_retired_uris:
            keep = uris.isin(set(load_occupations(data_dir, "v1.2.0")["uri"])).to_numpy()
        queries = rows["vacancyTitle"].str.strip()[keep].tolist()
        labels = [[uri_to_target[u]] for u in uris[keep]]
        notes = ["Every row is its own query (duplicate titles not merged, README).",
                 "Paper 15,462 / 15,461: 1 val and 2 test rows point at occupations absent from ESCO v1.2.0; "
                 "JobNorm(drop_retired_uris=True) drops them and reproduces the paper's counts."]
        meta = {"sources": [JOBNORM_FILES[split]], "n_rows": len(rows), "n_dropped_retired": int((~keep).sum()),
                "n_duplicate_titles": len(queries) - len(set(queries))}
        return TaskSplit(queries, targets, labels, notes, meta=meta)
