"""The zero-shot O*NET 29.2 tasks: hand-derived splits on the miniature pack, the documented split rule, bad
input, their own suite (never in the WorkBench macro average, never validated on, never read by a protocol)."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.helpers.paths import MINI_DATA, writable_pack
from uwe_lightning.data.graphs import normalize_text
from uwe_lightning.io import ConfigError, DataError
from uwe_lightning.model.lexical import TfidfRankingModel
from uwe_lightning.protocol import build, leakage
from uwe_lightning.training.config import check_validation_tasks
from uwe_lightning.workbench.registry import (
    WORKBENCH_SUITE,
    get_task,
    is_zero_shot_only,
    task_names,
    task_suite,
)
from uwe_lightning.workbench.report import results_markdown
from uwe_lightning.workbench.runner import evaluate
from uwe_lightning.workbench.tasks import onet_sources
from uwe_lightning.workbench.tasks.builders import hash_split_side

ONET_TASKS = ["ONET-JobNorm", "ONET-Occ2Tech", "ONET-Tech2Occ", "ONET-Task2Occ"]
TITLES = ["Chefs and Head Cooks", "Chief Executives", "Heavy and Tractor-Trailer Truck Drivers",
          "Managers, All Other", "Software Developers"]
EVERYTHING = {"val_fraction": 0.5, "test_fraction": 0.5}  # every query lands in val or test


def _as_text(dataset) -> dict[str, list[str]]:
    return {q: [dataset.targets[j] for j in row] for q, row in zip(dataset.queries, dataset.labels, strict=True)}


def _both_splits(name: str, data_dir=MINI_DATA, **options) -> tuple[dict, dict]:
    task = get_task(name, **options)
    return _as_text(task.load("val", data_dir)), _as_text(task.load("test", data_dir))


def _union(name: str) -> dict[str, list[str]]:
    val, test = _both_splits(name, **EVERYTHING)
    assert not set(val) & set(test)
    return {**val, **test}


def test_onet_tasks_are_their_own_suite():
    assert [n for n in task_names() if n.startswith("ONET-")] == ONET_TASKS
    assert all(task_suite(n) == "onet" and is_zero_shot_only(n) for n in ONET_TASKS)
    assert not set(ONET_TASKS) & set(task_names(WORKBENCH_SUITE))
    assert not is_zero_shot_only("JobNorm") and not is_zero_shot_only("Job2Skill@open")
    assert len({get_task(n).group for n in ONET_TASKS}) == 4


def test_onet_jobnorm_hand_derived():
    assert _union("ONET-JobNorm") == {
        "CEO": ["Chief Executives"],
        "Chief Executive": ["Chief Executives"],  # "chief executives" = its own title: dropped
        "Python Developer": ["Software Developers"],
        "Software Engineer": ["Software Developers"],
        "Head Chef": ["Chefs and Head Cooks"],
        "Kitchen Manager": ["Chefs and Head Cooks", "Managers, All Other"],  # two occupations: one query
        "Truck Driver": ["Heavy and Tractor-Trailer Truck Drivers"],
        "Long Haul Driver": ["Heavy and Tractor-Trailer Truck Drivers"],  # stripped
    }
    dataset = get_task("ONET-JobNorm", **EVERYTHING).load("test", MINI_DATA)
    assert dataset.targets == TITLES and dataset.meta["n_dropped_equal_to_own_title"] == 1
    assert dataset.meta["n_rows"] == 10 and dataset.meta["onet_version"] == "29.2"


def test_onet_occ2tech_and_its_inverse_hand_derived():
    assert _union("ONET-Occ2Tech") == {
        "Chief Executives": ["Microsoft Excel", "Microsoft PowerPoint"],
        "Software Developers": ["Git", "Microsoft Excel", "Python"],
        "Chefs and Head Cooks": ["Point of sale POS software"],
        "Heavy and Tractor-Trailer Truck Drivers": ["Route navigation software"],
    }  # "Managers, All Other" has no technology skill: no query
    assert get_task("ONET-Occ2Tech").load("test", MINI_DATA).n_targets == 6
    assert _union("ONET-Tech2Occ") == {
        "Microsoft Excel": ["Chief Executives", "Software Developers"],
        "Microsoft PowerPoint": ["Chief Executives"],
        "Python": ["Software Developers"],
        "Git": ["Software Developers"],
        "Point of sale POS software": ["Chefs and Head Cooks"],
        "Route navigation software": ["Heavy and Tractor-Trailer Truck Drivers"],
    }
    assert get_task("ONET-Tech2Occ").load("val", MINI_DATA).targets == TITLES


def test_onet_task2occ_hand_derived():
    assert _union("ONET-Task2Occ") == {
        "Direct financial activities.": ["Chief Executives"],
        "Supervise staff.": ["Chefs and Head Cooks", "Chief Executives"],
        "Write and test program code.": ["Software Developers"],
        "Plan menus and order food.": ["Chefs and Head Cooks"],
        'Check "load" limits before driving.': ["Heavy and Tractor-Trailer Truck Drivers"],  # unquoted TSV
    }


@pytest.mark.parametrize(("name", "salt", "key"), [
    ("ONET-JobNorm", "uwe-onet/JobNorm", normalize_text),
    ("ONET-Tech2Occ", "uwe-onet/Tech2Occ", normalize_text),
    ("ONET-Task2Occ", "uwe-onet/Task2Occ", normalize_text),
])
def test_split_follows_the_documented_hash_rule(name, salt, key):
    task = get_task(name)
    for split in ("val", "test"):
        for query in task.load(split, MINI_DATA).queries:
            assert hash_split_side(key(query), salt, task.val_fraction, task.test_fraction) == split
    # a query's side does not depend on case or surrounding spaces
    assert hash_split_side(normalize_text(" Truck DRIVER "), salt, 0.3, 0.3) == hash_split_side(
        normalize_text("truck driver"), salt, 0.3, 0.3)


def test_occ2tech_split_is_by_code():
    task = get_task("ONET-Occ2Tech", val_fraction=0.5, test_fraction=0.5)
    titles = onet_sources.occupation_titles(MINI_DATA)
    code_of = {title: code for code, title in titles.items()}
    for split in ("val", "test"):
        for query in task.load(split, MINI_DATA).queries:
            assert hash_split_side(code_of[query], "uwe-onet/Occ2Tech", 0.5, 0.5) == split


def test_unknown_code_and_bad_fractions_are_named(tmp_path):
    pack = tmp_path / "pack"
    writable_pack(pack)
    path = pack / onet_sources.ONET_FILES["alternate_titles"]
    path.write_bytes(path.read_bytes() + b"99-9999.00\tGhost Title\tn/a\t08\r\n")
    with pytest.raises(DataError, match=r"Alternate Titles\.txt: row 11 .*99-9999\.00 is not in"):
        get_task("ONET-JobNorm").load("test", pack)
    (pack / onet_sources.ONET_FILES["task_statements"]).unlink()
    with pytest.raises(DataError, match=r"missing data file .*Task Statements\.txt"):
        get_task("ONET-Task2Occ").load("test", pack)
    with pytest.raises(ValueError, match="sum <= 1"):
        get_task("ONET-JobNorm", val_fraction=0.6, test_fraction=0.6)


def test_onet_stays_out_of_the_workbench_macro_average():
    tasks = ["JobNorm", *ONET_TASKS]
    results = evaluate(TfidfRankingModel(), tasks, "test", MINI_DATA, task_options=dict.fromkeys(ONET_TASKS, EVERYTHING))
    only_jobnorm = evaluate(TfidfRankingModel(), ["JobNorm"], "test", MINI_DATA)
    assert results["macro"]["covers"] == ["JobNorm"]
    assert results["macro"]["map"] == only_jobnorm["macro"]["map"]
    onet = results["suites"]["onet"]
    assert onet["covers"] == ONET_TASKS and onet["map"] == pytest.approx(
        sum(results["tasks"][n]["map"] for n in ONET_TASKS) / 4)
    markdown = results_markdown(results, "t")
    workbench_table, onet_table = markdown.split("#### O*NET 29.2")
    assert "ONET-" not in workbench_table and "| JobNorm |" not in onet_table
    assert "not in the WorkBench macro average" in onet_table and "**onet average**" in onet_table
    alone = evaluate(TfidfRankingModel(), ONET_TASKS, "test", MINI_DATA)
    assert alone["macro"]["map"] is None and alone["macro"]["covers"] == []
    assert "macro average" not in results_markdown(alone, "t").split("#### O*NET")[0]


def test_no_training_run_validates_on_onet(tmp_path):
    from hydra import compose, initialize_config_dir

    from tests.helpers.configs import base_overrides
    from uwe_lightning.paths import CONF_DIR
    from uwe_lightning.training.config import check_values

    check_validation_tasks(["JobNorm", "Job2Skill@open"])
    for data in ("edges", "open"):  # every training protocol goes through the same check
        # composing is enough: no model is loaded, so the backbone path need not exist
        overrides = [o for o in base_overrides(tmp_path, tmp_path / "no-model") if not o.startswith("validation.tasks")]
        if data == "open":
            overrides = [o for o in overrides if not o.startswith("data")] + ["data=open"]
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=[*overrides, "validation.tasks=[JobNorm,ONET-Tech2Occ]"])
        with pytest.raises(ConfigError, match=r"validation.tasks: \['ONET-Tech2Occ'\] are zero-shot tasks"):
            check_values(cfg)


def test_open_protocol_never_reads_onet(tmp_path, monkeypatch):
    without = tmp_path / "without-onet"
    writable_pack(without)
    shutil.rmtree(without / onet_sources.ONET_DIR)
    build.clear_cache()
    plain = build.build_open_protocol(without)

    def refuse(*args, **kwargs):
        raise AssertionError("the open protocol read an O*NET file")

    monkeypatch.setattr(onet_sources, "read_onet", refuse)
    with_onet = build.build_open_protocol(MINI_DATA)
    build.clear_cache()
    for name, graph in plain.graphs.items():
        assert graph.texts == with_onet.graphs[name].texts
        assert (graph.skill_index == with_onet.graphs[name].skill_index).all()
    assert not set(ONET_TASKS) & set(with_onet.meta["validation_tasks"])
    assert not any(key.startswith("ONET-") for key in with_onet.meta["leakage"]["test_queries_seen_as_training_text"])


def test_zero_shot_overlap_counts_training_texts():
    build.clear_cache()
    protocol = build.build_open_protocol(MINI_DATA)
    texts = {normalize_text(t) for graph in protocol.graphs.values() for t in graph.texts}
    assert "head chef" in texts  # a vacancy title of graph J, and an O*NET alternate title
    report = leakage.zero_shot_overlap(protocol, MINI_DATA, "test", task_options=dict.fromkeys(ONET_TASKS, EVERYTHING))
    assert set(report) == set(ONET_TASKS)
    queries = {normalize_text(q) for q in get_task("ONET-JobNorm", **EVERYTHING).load("test", MINI_DATA).queries}
    assert report["ONET-JobNorm"]["queries_seen_as_training_text"] == len(queries & texts) >= 1
    assert report["ONET-JobNorm"]["n_queries"] == len(queries)
    assert all(row["leaked_pairs"] == 0 for row in report.values())
    every = leakage.zero_shot_overlap(protocol, MINI_DATA, "val", tasks=["JobNorm", "ONET-JobNorm"])
    assert list(every) == ["ONET-JobNorm"]


def test_published_onet_table_is_what_its_results_give():
    """experiments/results/onet/table.md is regenerated from the results.json files next to it, not edited."""
    import importlib.util

    from uwe_lightning.paths import REPO_DIR

    spec = importlib.util.spec_from_file_location("onet_table", REPO_DIR / "experiments" / "studies" / "onet_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = REPO_DIR / "experiments" / "results" / "onet"
    assert module.main(results) == (results / "table.md").read_text()
    for name in ("tfidf", "minilm", "mpnet"):
        run = json.loads((results / name / "results.json").read_text())
        assert set(run["tasks"]) == set(ONET_TASKS) and run["macro"]["covers"] == []
        assert run["suites"]["onet"]["covers"] == ONET_TASKS and run["max_queries"] is None
