"""WorkBench as ``datasets`` tables (:mod:`uwe_lightning.workbench.tables`, ``python -m uwe_lightning.publish``): published from the mini pack and read
back, every split is the same and ``evaluate`` on the published directory gives the pack's numbers."""

from __future__ import annotations

import json

import datasets
import pytest

from tests.helpers.paths import MINI_DATA
from uwe_lightning.cli.publish import main
from uwe_lightning.io import DataError
from uwe_lightning.model.lexical import TfidfRankingModel
from uwe_lightning.paths import PUBLISHED_INDEX_FILE
from uwe_lightning.workbench.dataset import RankingDataset, TaskUnavailable
from uwe_lightning.workbench.runner import WORKBENCH_TASKS, evaluate, load_tasks
from uwe_lightning.workbench.tables import from_dataset_dict, load_published_split, to_dataset_dict


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    out = tmp_path_factory.mktemp("pub") / "workbench"
    main([f"out={out}", f"paths.data_dir={MINI_DATA}"])
    return out


def same(a: RankingDataset, b: RankingDataset) -> bool:
    return (a.task, a.split, a.queries, a.targets, a.labels, a.exclude) == (
        b.task, b.split, b.queries, b.targets, b.labels, b.exclude)


@pytest.mark.parametrize("split", ["val", "test"])
def test_published_splits_equal_the_pack_and_score_the_same(published, split):
    from_pack, unavailable = load_tasks(list(WORKBENCH_TASKS), split, MINI_DATA)
    from_published, unavailable_there = load_tasks(list(WORKBENCH_TASKS), split, published)
    assert sorted(from_published) == sorted(from_pack) and len(from_pack) >= 5
    assert unavailable_there == unavailable  # an unavailable task stays unavailable, with its reason
    for name, dataset in from_pack.items():
        assert same(from_published[name], dataset), name
        assert from_published[name].meta["published_from"] == str(published)
    want = evaluate(TfidfRankingModel(), list(WORKBENCH_TASKS), split, MINI_DATA)
    got = evaluate(TfidfRankingModel(), list(WORKBENCH_TASKS), split, published)
    assert want["tasks"] and {
        name: (row["map"], row["rp@10"], row["n_queries"]) for name, row in got["tasks"].items()} == {
        name: (row["map"], row["rp@10"], row["n_queries"]) for name, row in want["tasks"].items()}
    assert got["macro"]["map"] == want["macro"]["map"]


def test_the_tables_are_plain_datasets(published):
    index = json.loads((published / PUBLISHED_INDEX_FILE).read_text())
    entry = index["splits"]["JobNorm/test"]
    tables = datasets.load_from_disk(str(published / "JobNorm" / "test"))
    assert set(tables) == {"queries", "targets"}
    assert tables["queries"].num_rows == entry["queries"] and tables["targets"].num_rows == entry["targets"]
    assert tables["queries"].column_names == ["query_id", "text", "positives", "excluded"]
    assert sum(len(p) for p in tables["queries"]["positives"]) == entry["positives"]


def test_exclusions_round_trip_and_none_stays_none():
    with_exclude = RankingDataset("SkillSim", "val", ["a", "b"], ["a", "b", "c"], [[1], [0, 2]], [[0], [1]])
    without = RankingDataset("JobNorm", "val", ["x"], ["y", "z"], [[1]])
    assert same(from_dataset_dict(to_dataset_dict(with_exclude), "SkillSim", "val"), with_exclude)
    assert same(from_dataset_dict(to_dataset_dict(without), "JobNorm", "val", has_exclude=False), without)
    shuffled = to_dataset_dict(with_exclude)
    shuffled["targets"] = shuffled["targets"].select([2, 1, 0])  # an indices mapping over the Arrow table
    with pytest.raises(DataError, match="target_id must be the row numbers"):
        from_dataset_dict(shuffled, "SkillSim", "val")


def test_refusals_name_what_to_do(published, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main([f"out={published}", f"paths.data_dir={MINI_DATA}"])
    assert stop.value.code == 2 and "exists; publish into a new directory" in capsys.readouterr().err
    with pytest.raises(TaskUnavailable, match="not published"):
        load_published_split(published, "edges", "val")
    with pytest.raises(DataError, match="was published with options"):
        load_published_split(published, "JobNorm", "val", {"drop_retired_uris": True})
    assert not [p for p in tmp_path.parent.iterdir() if p.name.startswith(".workbench.")]  # no stage left behind
