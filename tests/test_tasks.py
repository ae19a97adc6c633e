"""Every WorkBench task builder on the mini pack, against queries/targets/labels derived by hand.

The mini pack (tests/fixtures/uwe-data-mini) is described in its README; the comments below say which
rule each expected value exercises.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers.paths import writable_pack
from uwe_lightning.esco import clear_cache
from uwe_lightning.io import DataError
from uwe_lightning.workbench.dataset import TaskUnavailable
from uwe_lightning.workbench.registry import TASKS, get_task, list_tasks, task_names
from uwe_lightning.workbench.tasks import JobNorm, SkillSim
from uwe_lightning.workbench.tasks.builders import class_uniform_split, shuffle_split
from uwe_lightning.workbench.tasks.sources import read_vacancy_titles

FIXTURES = Path(__file__).parent / "fixtures"
MINI = FIXTURES / "uwe-data-mini"
SKILLMATCH = FIXTURES / "skillmatch"

# Sorted stripped ESCO v1.2.0 preferredLabels of the mini pack ("drive trucks " loses its space).
V120_SKILLS = [
    "analyse data",
    "cook meals",
    "drive trucks",
    "maintain machines",
    "manage staff",
    "plan projects",
    "prepare food products",
    "provide patient care",
    "sell products",
    "teach pupils",
    "use python",
    "write reports",
]
S = {label: i for i, label in enumerate(V120_SKILLS)}
V120_OCCUPATIONS = ["chef", "nurse", "sales assistant", "software developer", "teacher", "truck driver"]
J = {label: i for i, label in enumerate(V120_OCCUPATIONS)}
# Python sorts upper case first.
V110_SKILLS = [
    "JavaScript",
    "PostgreSQL",
    "Python (computer programming)",
    "manage staff",
    "show determination",
    "solve problems",
    "web programming",
]


@pytest.fixture
def pack(tmp_path: Path) -> Path:
    """A writable copy of the mini pack, for bad-input tests."""
    clear_cache()
    return writable_pack(tmp_path / "pack")


BUILTIN_TASKS = ("Job2Skill", "Skill2Job", "SkillNorm", "SkillExtr-H", "SkillExtr-T", "SkillSim", "JobNorm")


def test_registry_names_and_groups():
    assert set(task_names()) >= set(BUILTIN_TASKS)
    groups = {name: TASKS[name].group for name in task_names()}
    assert groups["SkillExtr-H"] == groups["SkillExtr-T"] == "SkillExtract"
    assert {groups[n] for n in ("Job2Skill", "Skill2Job", "SkillNorm", "SkillSim", "JobNorm")} == {
        "Job2Skill",
        "Skill2Job",
        "SkillNorm",
        "SkillSim",
        "JobNorm",
    }


def test_list_tasks_describes_every_builtin_task():
    descriptions = list_tasks()
    for name in BUILTIN_TASKS:
        text = descriptions[name]
        assert text.strip() and "\n" not in text, name


def test_get_task_passes_options_through():
    task = get_task("JobNorm", drop_retired_uris=True)
    assert isinstance(task, JobNorm) and task.drop_retired_uris
    assert get_task("JobNorm").drop_retired_uris is False
    assert get_task("JobNorm", drop_retired_uris=True).load("val", MINI).meta["n_dropped_retired"] == 1
    with pytest.raises(TypeError, match="drop_retired_uris"):
        get_task("JobNorm", drop_retired=True)


def test_unknown_split():
    with pytest.raises(ValueError, match="train"):
        get_task("Job2Skill").load("train", MINI)


def test_job2skill_test():
    ds = get_task("Job2Skill").load("test", MINI)
    assert ds.targets == V120_SKILLS
    # Occupations in relation-file order; essential + optional; "teacher " stripped; unknown skill s99
    # dropped; use python is both essential and optional for software developer -> counted once.
    assert ds.queries == ["chef", "software developer", "nurse", "truck driver", "teacher"]
    assert ds.labels == [
        sorted([S["cook meals"], S["prepare food products"], S["manage staff"]]),
        sorted([S["use python"], S["analyse data"], S["plan projects"]]),
        sorted([S["provide patient care"], S["write reports"]]),
        sorted([S["drive trucks"], S["maintain machines"]]),
        sorted([S["teach pupils"], S["write reports"]]),
    ]
    assert ds.meta["n_relations_without_label"] == 1
    assert ds.meta["paper_n_queries"] == 3039 and ds.exclude is None


def test_job2skill_val():
    ds = get_task("Job2Skill").load("val", MINI)
    assert ds.targets == V120_SKILLS
    # " Python Developer " and "Python Developer" merge; "analyse data " matches after stripping;
    # "unknown skill xyz" is dropped; "Sales Intern" stays without positives.
    assert ds.queries == ["Head Chef", "Python Developer", "Truck Driver", "Sales Intern"]
    assert ds.labels == [
        [S["cook meals"], S["manage staff"]],
        sorted([S["use python"], S["analyse data"], S["plan projects"]]),
        [S["drive trucks"]],
        [],
    ]
    assert ds.meta["n_skill_mentions_outside_targets"] == 1
    assert ds.meta["n_merged_duplicate_queries"] == 1
    assert ds.meta["n_queries_without_positives"] == 1


def test_skill2job_test():
    ds = get_task("Skill2Job").load("test", MINI)
    assert ds.targets == V120_OCCUPATIONS  # "sales assistant" has no relation but is a target
    # skills in relation-file order; "sell products" has no relation -> no query
    assert ds.queries == [
        "cook meals",
        "prepare food products",
        "manage staff",
        "use python",
        "analyse data",
        "plan projects",
        "provide patient care",
        "write reports",
        "drive trucks",
        "maintain machines",
        "teach pupils",
    ]
    assert ds.labels == [
        [J["chef"]],
        [J["chef"]],
        [J["chef"]],
        [J["software developer"]],
        [J["software developer"]],
        [J["software developer"]],
        [J["nurse"]],
        sorted([J["nurse"], J["teacher"]]),
        [J["truck driver"]],
        [J["truck driver"]],
        [J["teacher"]],
    ]


def test_skill2job_val():
    ds = get_task("Skill2Job").load("val", MINI)
    # targets: all distinct stripped titles, also the one without skills
    assert ds.targets == ["Head Chef", "Python Developer", "Sales Intern", "Truck Driver"]
    assert ds.queries == [
        "cook meals",
        "manage staff",
        "use python",
        "analyse data",
        "drive trucks",
        "plan projects",
    ]
    assert ds.labels == [[0], [0], [1], [1], [3], [1]]


def test_skillnorm_val_and_test():
    task = get_task("SkillNorm")
    val, test = task.load("val", MINI), task.load("test", MINI)
    assert val.targets == test.targets == V120_SKILLS
    # Walk in skill file order. Dropped: "manage staff" and "drive trucks" (== own label once stripped),
    # "S" (one character), the blank line of cook meals, the repeated "data analysis".
    # "prepare food" (cook meals + prepare food products) and "lead staff" (manage staff + write reports)
    # are multi-label queries. "lead staff" goes to val because write reports has no val altLabel yet,
    # which then sends write reports' own first altLabel "report writing" to test.
    assert val.queries == [
        "supervise staff",
        "lead staff",
        "python programming",
        "prepare food",
        "drive lorries",
        "data analysis",
        "care for patients",
        "project planning",
        "sales",
        "machine maintenance",
    ]
    assert val.labels == [
        [S["manage staff"]],
        sorted([S["manage staff"], S["write reports"]]),
        [S["use python"]],
        sorted([S["cook meals"], S["prepare food products"]]),
        [S["drive trucks"]],
        [S["analyse data"]],
        [S["provide patient care"]],
        [S["plan projects"]],
        [S["sell products"]],
        [S["maintain machines"]],
    ]
    assert test.queries == [
        "code in python",
        "prepare dishes",
        "analyse data sets",
        "plan a project",
        "report writing",
    ]
    assert test.labels == [
        [S["use python"]],
        [S["cook meals"]],
        [S["analyse data"]],
        [S["plan projects"]],
        [S["write reports"]],
    ]
    assert val.meta["n_alt_label_entries"] == 21 and val.meta["n_distinct_alt_labels"] == 15
    assert val.meta["n_multi_skill_queries"] == 2 and test.meta["n_multi_skill_queries"] == 0
    assert any("file order" in note for note in val.meta["notes"])


def test_skillnorm_split_depends_on_file_order(pack):
    """Moving write reports before manage staff gives "lead staff" to val via manage staff instead."""
    path = pack / "esco" / "v1.2.0" / "skills_en.csv"
    header, *rows = path.read_text().split("KnowledgeSkillCompetence,")
    s11 = next(r for r in rows if "/s11," in r)
    rows.remove(s11)
    path.write_text("KnowledgeSkillCompetence,".join([header, s11, *rows]))
    val = get_task("SkillNorm").load("val", pack)
    assert val.queries[:2] == ["report writing", "lead staff"]
    test = get_task("SkillNorm").load("test", pack)
    assert "report writing" not in test.queries


def test_class_uniform_split_rules():
    (val_q, val_l), (test_q, test_l) = class_uniform_split({"x": [1], "y": [1, 2], "z": [2], "w": []})
    assert (val_q, val_l, test_q, test_l) == (["x", "y"], [[1], [1, 2]], ["z"], [[2]])


@pytest.mark.parametrize(
    ("name", "split", "queries", "labels"),
    [
        # LABEL NOT PRESENT / UNDERSPECIFIED and unknown "COBOL programming" dropped; the sentence with
        # a trailing space merges with its stripped twin; repeated JavaScript counted once.
        ("SkillExtr-T", "val", ["javascript python sql", "You will solve hard problems ."], [[0, 2], [5, 6]]),
        ("SkillExtr-T", "test", ["postgresql redis"], [[1]]),  # label "PostgreSQL" vs target "PostgreSQL "
        ("SkillExtr-H", "val", ["Show determination and lead the team ."], [[3, 4]]),
        ("SkillExtr-H", "test", ["Solve problems daily .", "Code websites, fast ."], [[5], [6]]),
    ],
)
def test_skill_extraction(name, split, queries, labels):
    ds = get_task(name).load(split, MINI)
    assert ds.targets == V110_SKILLS
    assert ds.queries == queries
    assert ds.labels == labels


def test_skill_extraction_counts_dropped_labels():
    meta = get_task("SkillExtr-T").load("val", MINI).meta
    assert (meta["n_sentences"], meta["n_sentinel_label_rows"], meta["n_label_rows_outside_targets"]) == (
        4,
        2,
        1,
    )


def test_jobnorm_keeps_every_row():
    task = get_task("JobNorm")
    val = task.load("val", MINI)
    assert val.targets == ["chef", "nurse", "teacher", "truck driver", "wind energy engineer"]
    # "Staff Nurse " and "Staff Nurse" stay two queries (README: not merged)
    assert val.queries == ["Head Chef", "Staff Nurse", "Staff Nurse", "Lorry Driver", "Wind Engineer"]
    assert val.labels == [[0], [1], [1], [3], [4]]
    assert val.meta["n_duplicate_titles"] == 1 and val.meta["n_dropped_retired"] == 0
    test = task.load("test", MINI)
    assert test.queries == ["Sous Chef", "NA"]  # a title "NA" stays text
    assert test.labels == [[0], [2]]


def test_jobnorm_drop_retired_uris():
    val = JobNorm(drop_retired_uris=True).load("val", MINI)  # o7 is not in the v1.2.0 occupations
    assert val.queries == ["Head Chef", "Staff Nurse", "Staff Nurse", "Lorry Driver"]
    assert val.n_targets == 5 and val.meta["n_dropped_retired"] == 1


# ------------------------------------------------------------------------------------------- SkillSim

# Sorted distinct skills of all 12 fixture pairs (related or not; " lead teams " stripped).
SIM_TARGETS = [
    "analyse data",
    "bake bread",
    "coach employees",
    "cook meals",
    "data mining",
    "drive trucks",
    "grade exams",
    "lead teams",
    "manage budgets",
    "manage staff",
    "negotiate prices",
    "nurse patients",
    "operate forklift",
    "plan projects",
    "proofread texts",
    "sell products",
    "teach pupils",
    "use python",
    "write python code",
    "write reports",
]
T = {s: i for i, s in enumerate(SIM_TARGETS)}
# Related pairs in file order; the seed-42 10/90 split puts pair 6 in val and pairs 8,1,5,0,7,2,9,4,3 in test.
SIM_PAIRS = [
    ("use python", "write python code"),
    ("analyse data", "data mining"),
    ("cook meals", "bake bread"),
    ("drive trucks", "operate forklift"),
    ("manage staff", "lead teams"),
    ("manage staff", "coach employees"),
    ("teach pupils", "grade exams"),
    ("sell products", "negotiate prices"),
    ("plan projects", "manage budgets"),
    ("write reports", "proofread texts"),
]


def _check_skillsim(val, test):
    assert val.targets == test.targets == SIM_TARGETS
    assert val.queries == ["teach pupils"] and val.labels == [[T["grade exams"]]]
    assert val.exclude == [[T["teach pupils"]]]
    order = [8, 1, 5, 0, 7, 2, 9, 4, 3]
    assert test.queries == [SIM_PAIRS[i][0] for i in order]  # "manage staff" twice: not merged
    assert test.labels == [[T[SIM_PAIRS[i][1]]] for i in order]
    assert test.exclude == [[T[SIM_PAIRS[i][0]]] for i in order]


def test_shuffle_split_matches_sklearn():
    model_selection = pytest.importorskip("sklearn.model_selection")
    for n in (10, 11, 1000):
        expected = model_selection.train_test_split(list(range(n)), test_size=0.9, random_state=42)
        assert list(shuffle_split(n, 0.9, 42)) == expected
    assert shuffle_split(10, 0.9, 42) == ([6], [8, 1, 5, 0, 7, 2, 9, 4, 3])


def test_skillsim_local_file(pack):
    (pack / "workbench" / "skillsim").mkdir()
    shutil.copy(SKILLMATCH / "test.csv", pack / "workbench" / "skillsim" / "test.csv")
    task = SkillSim(allow_hub=False)
    val, test = task.load("val", pack), task.load("test", pack)
    _check_skillsim(val, test)
    assert val.meta["source"].endswith("workbench/skillsim/test.csv")
    assert (val.meta["n_pairs"], val.meta["n_related_pairs"]) == (12, 10)


def test_skillsim_hub_layout_offline(tmp_path):
    """The hub code path, pointed at a local folder in the hub layout (no network)."""
    pytest.importorskip("datasets")
    task = SkillSim(allow_hub=True, hub_dataset=str(SKILLMATCH), hub_cache_dir=str(tmp_path / "hf"))
    val, test = task.load("val", MINI), task.load("test", MINI)
    _check_skillsim(val, test)
    assert val.meta["source"] == f"datasets:{SKILLMATCH}"


def test_skillsim_unavailable(monkeypatch):
    monkeypatch.delenv("UWE_ALLOW_HUB", raising=False)
    with pytest.raises(TaskUnavailable) as err:
        get_task("SkillSim").load("test", MINI)
    message = str(err.value)
    assert "workbench/skillsim" in message and "test.csv" in message and "UWE_ALLOW_HUB=1" in message


def test_skillsim_env_enables_hub(monkeypatch, tmp_path):
    monkeypatch.setenv("UWE_ALLOW_HUB", "1")
    empty = tmp_path / "empty-dataset"  # a local folder without data files: fails fast, offline
    empty.mkdir()
    task = SkillSim(hub_dataset=str(empty), hub_cache_dir=str(tmp_path / "hf"))
    assert task.allow_hub
    with pytest.raises(TaskUnavailable, match="empty-dataset"):
        task.load("val", MINI)


def test_skillsim_bad_related_value(pack):
    (pack / "workbench" / "skillsim").mkdir()
    (pack / "workbench" / "skillsim" / "test.csv").write_text("skill_a,skill_b,related\na,b,1\nc,d,maybe\n")
    with pytest.raises(DataError, match=r"test\.csv: row 2 .*'maybe'"):
        SkillSim(allow_hub=False).load("val", pack)


# ------------------------------------------------------------------------------------------ bad input


def test_missing_file_is_named(pack):
    (pack / "workbench" / "jobnorm" / "titles.test.csv").unlink()
    with pytest.raises(DataError, match=r"titles\.test\.csv.*JobNorm test"):
        get_task("JobNorm").load("test", pack)
    (pack / "workbench" / "job2skill_val" / "job_skill_val.parquet").unlink()
    with pytest.raises(DataError, match=r"job_skill_val\.parquet"):
        get_task("Skill2Job").load("val", pack)


def test_vacancy_titles_reader_rules(pack):
    """One reader for job_skill_val.parquet (tasks and the open protocol): its validity rules."""
    assert read_vacancy_titles(MINI)[:2] == [
        ("Head Chef", ["cook meals", "manage staff", "unknown skill xyz"]),
        ("Python Developer", ["use python", "analyse data"]),
    ]
    path = pack / "workbench" / "job2skill_val" / "job_skill_val.parquet"
    pd.DataFrame({"title": [" Cook ", "Baker"], "skill_name": [["cook meals "], None]}).to_parquet(path)
    assert read_vacancy_titles(pack) == [("Cook", ["cook meals"]), ("Baker", [])]  # no list: no skills
    pd.DataFrame({"title": ["Cook"], "skill_name": ["cook meals"]}).to_parquet(path)
    with pytest.raises(DataError, match=r"job_skill_val\.parquet: row 1 .*'skill_name'"):
        read_vacancy_titles(pack)
    pd.DataFrame({"title": ["Cook", "  "], "skill_name": [["cook meals"], []]}).to_parquet(path)
    with pytest.raises(DataError, match=r"job_skill_val\.parquet: row 2 .*'title'"):
        read_vacancy_titles(pack)


def test_missing_column_is_named(pack):
    path = pack / "workbench" / "skill_extraction" / "house_test_annotations.csv"
    path.write_text(path.read_text().replace("sentence,span,sub_span,label", "text,span,sub_span,label"))
    with pytest.raises(DataError, match=r"house_test_annotations\.csv: missing column\(s\) \['sentence'\]"):
        get_task("SkillExtr-H").load("test", pack)


def test_malformed_row_is_named(pack):
    path = pack / "workbench" / "jobnorm" / "titles.csv"
    path.write_text(path.read_text() + "5,Cook,http://x,extra,fields\n")
    with pytest.raises(DataError, match=r"titles\.csv: malformed CSV row.*line 7"):
        get_task("JobNorm").load("val", pack)


def test_empty_required_field_is_named(pack):
    path = pack / "workbench" / "skill_extraction" / "tech_test_annotations.csv"
    path.write_text(path.read_text() + "Know Rust .,Rust,,\n")
    with pytest.raises(DataError, match=r"tech_test_annotations\.csv: row 4 .*'label'"):
        get_task("SkillExtr-T").load("test", pack)


def test_jobnorm_unknown_uri(pack):
    path = pack / "workbench" / "jobnorm" / "titles.csv"
    path.write_text(path.read_text() + "5,Cook,http://data.europa.eu/esco/occupation/o404\n")
    with pytest.raises(DataError, match=r"titles\.csv: row 6 .*o404"):
        get_task("JobNorm").load("val", pack)


def test_empty_target_space(pack):
    path = pack / "esco" / "v1.1.0" / "skills_en.csv"
    path.write_text(path.read_text().splitlines()[0] + "\n")
    with pytest.raises(DataError, match="SkillExtr-H/val: empty target space"):
        get_task("SkillExtr-H").load("val", pack)


# ------------------------------------------------------------------------------------------ real data

REAL_SIZES = {
    ("Job2Skill", "val"): (5_644, 13_939),
    ("Job2Skill", "test"): (3_039, 13_939),
    ("Skill2Job", "val"): (10_137, 5_644),
    ("Skill2Job", "test"): (13_492, 3_039),
    ("SkillNorm", "val"): (13_502, 13_939),
    ("SkillNorm", "test"): (72_006, 13_939),
    ("SkillExtr-T", "val"): (75, 13_891),
    ("SkillExtr-T", "test"): (338, 13_891),
    ("SkillExtr-H", "val"): (61, 13_891),
    ("SkillExtr-H", "test"): (262, 13_891),
    ("JobNorm", "val"): (15_463, 2_942),
    ("JobNorm", "test"): (15_463, 2_942),
}


@pytest.mark.data
def test_real_pack_sizes(real_data_dir):
    sizes = {}
    for task, split in REAL_SIZES:
        ds = get_task(task).load(split, real_data_dir)
        sizes[task, split] = (ds.n_queries, ds.n_targets)
        assert ds.meta["notes"], (task, split)
    assert sizes == REAL_SIZES
    paper_rows = JobNorm(drop_retired_uris=True)
    assert [paper_rows.load(s, real_data_dir).n_queries for s in ("val", "test")] == [15_462, 15_461]


# ------------------------------------------------------------------------------------------ the task base


def test_ranking_task_checks_the_split_before_building_and_wraps_what_it_builds():
    """A task file declares only ``build``; the base refuses an unknown split first and adds the shared meta."""
    from uwe_lightning.workbench.tasks.base import RankingTask, TaskSplit

    built = []

    class Tiny(RankingTask):  # not registered: the registry stays as the package defines it
        name, group, description, esco_version = "JobNorm", "JobNorm", "t", "v1.0.x"

        def build(self, split, data_dir):
            built.append(split)
            return TaskSplit(["q"], ["a", "b"], [[1]], ["why"], exclude=[[0]], meta={"n_rows": 1})

    with pytest.raises(ValueError, match="unknown split 'train'"):
        Tiny().load("train")
    assert built == []
    ds = Tiny().load("val")
    assert (ds.task, ds.split, ds.queries, ds.targets, ds.labels, ds.exclude) == ("JobNorm", "val", ["q"], ["a", "b"],
                                                                                   [[1]], [[0]])
    assert list(ds.meta) == ["paper_n_queries", "paper_n_targets", "esco_version", "n_rows", "notes"]
    assert ds.meta["paper_n_queries"] == 15_462 and ds.meta["esco_version"] == "v1.0.x"
    assert ds.meta["notes"][1:] == ["why"] and "paper Table 1: 15,462 x 2,942" in ds.meta["notes"][0]
