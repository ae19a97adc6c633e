"""ESCO loaders and checked CSV reading, on the hand-written mini pack (tests/fixtures/uwe-data-mini)."""

from __future__ import annotations

from pathlib import Path

import pytest

from uwe_lightning.esco import (
    clear_cache,
    load_occupation_skill_relations,
    load_occupations,
    load_skills,
    split_alt_labels,
)
from uwe_lightning.io import DataError, read_csv_checked, read_parquet_checked

MINI = Path(__file__).parent / "fixtures" / "uwe-data-mini"
SKILL = "http://data.europa.eu/esco/skill/"
OCC = "http://data.europa.eu/esco/occupation/"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_load_skills_file_order_stripped_and_split():
    skills = load_skills(MINI)
    assert list(skills.columns) == ["uri", "label", "alt_labels", "description"]
    assert skills["uri"].tolist() == [f"{SKILL}s{i:02d}" for i in range(1, 13)]  # file order, not sorted
    by_uri = skills.set_index("uri")
    assert by_uri.loc[SKILL + "s06", "label"] == "drive trucks"  # trailing space stripped
    # blank altLabel line dropped, spaces stripped; the loader keeps an altLabel equal to the label
    assert by_uri.loc[SKILL + "s04", "alt_labels"] == ["prepare food", "prepare dishes"]
    assert by_uri.loc[SKILL + "s01", "alt_labels"] == ["supervise staff", "lead staff", "manage staff"]
    assert by_uri.loc[SKILL + "s03", "alt_labels"] == []
    assert by_uri.loc[SKILL + "s04", "description"] == "Cook meals for guests."


def test_load_skills_v110_official_layout():
    skills = load_skills(MINI, "v1.1.0")
    assert skills["label"].tolist() == [
        "JavaScript",
        "Python (computer programming)",
        "PostgreSQL",
        "manage staff",
        "show determination",
        "solve problems",
        "web programming",
    ]
    assert skills["alt_labels"].iloc[0] == ["JS", "JavaScript"]


@pytest.mark.parametrize(
    ("version", "labels"),
    [
        ("v1.2.0", ["chef", "software developer", "nurse", "truck driver", "teacher", "sales assistant"]),
        ("v1.0.x", ["chef", "nurse", "truck driver", "teacher", "wind energy engineer"]),
    ],
)
def test_load_occupations(version, labels):
    occupations = load_occupations(MINI, version)
    assert list(occupations.columns) == ["uri", "label", "alt_labels", "description"]
    assert occupations["label"].tolist() == labels
    assert occupations["alt_labels"].iloc[0] == (
        ["head cook", "cook"] if version == "v1.2.0" else ["head cook"]
    )


def test_load_relations_keeps_all_rows_in_order():
    relations = load_occupation_skill_relations(MINI)
    assert list(relations.columns) == ["occupation_uri", "skill_uri", "relation_type"]
    assert len(relations) == 14
    assert relations.iloc[0].tolist() == [OCC + "o1", SKILL + "s04", "essential"]
    assert relations["relation_type"].value_counts().to_dict() == {"essential": 8, "optional": 6}
    # a pair that is both essential and optional stays twice
    pair = relations[(relations.occupation_uri == OCC + "o2") & (relations.skill_uri == SKILL + "s02")]
    assert pair["relation_type"].tolist() == ["essential", "optional"]


def test_unknown_version():
    with pytest.raises(ValueError, match="v9"):
        load_skills(MINI, "v9")
    with pytest.raises(ValueError, match="v1.0.x"):
        load_skills(MINI, "v1.0.x")  # v1.0.x has occupations only


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"esco/v1\.2\.0/skills_en\.csv"):
        load_skills(tmp_path)
    with pytest.raises(DataError, match="nope.csv"):
        read_csv_checked(tmp_path / "nope.csv", ["a"])


def test_cached_frames_are_copies():
    first = load_skills(MINI)
    first.loc[0, "label"] = "changed"
    first.drop(index=1, inplace=True)
    again = load_skills(MINI)
    assert again.loc[0, "label"] == "manage staff"
    assert len(again) == 12


def test_read_csv_checked_missing_column(tmp_path):
    path = _write(tmp_path / "x.csv", "a,b\n1,2\n")
    with pytest.raises(DataError) as err:
        read_csv_checked(path, ["a", "label"])
    assert "x.csv" in str(err.value) and "'label'" in str(err.value)


def test_read_csv_checked_malformed_row(tmp_path):
    path = _write(tmp_path / "bad.csv", "a,b\n1,2\n3,4,5,6\n")
    with pytest.raises(DataError, match=r"bad\.csv.*line 3"):
        read_csv_checked(path, ["a", "b"])


def test_read_csv_checked_empty_required_field(tmp_path):
    path = _write(tmp_path / "gap.csv", "uri,label\nu1,first\nu2,  \nu3,\n")
    with pytest.raises(DataError) as err:
        read_csv_checked(path, ["uri"], non_empty=["label"])
    message = str(err.value)
    assert "gap.csv" in message and "row 2" in message and "'label'" in message and "2 empty" in message
    # a short row (missing trailing field) is caught the same way
    short = _write(tmp_path / "short.csv", "uri,label\nu1,first\nu2\n")
    with pytest.raises(DataError, match=r"short\.csv: row 2"):
        read_csv_checked(short, ["uri"], non_empty=["label"])


def test_read_csv_checked_keeps_na_strings(tmp_path):
    path = _write(tmp_path / "na.csv", "title,uri\nNA,u1\nnull,u2\n,u3\n")
    frame = read_csv_checked(path, ["title", "uri"])
    assert frame["title"].tolist() == ["NA", "null", ""]


def test_read_parquet_checked(tmp_path):
    parquet = MINI / "workbench" / "job2skill_val" / "job_skill_val.parquet"
    assert len(read_parquet_checked(parquet, ["title", "skill_name"])) == 5
    with pytest.raises(DataError, match=r"job_skill_val\.parquet.*'vacancy'"):
        read_parquet_checked(parquet, ["vacancy"])
    garbage = _write(tmp_path / "garbage.parquet", "not parquet")
    with pytest.raises(DataError, match="garbage.parquet"):
        read_parquet_checked(garbage, ["title"])


def test_concept_file_errors(tmp_path):
    (tmp_path / "uwe-manifest.json").write_text('{"files": []}')  # a pack of one's own: the parsers are tested
    base = tmp_path / "esco" / "v1.2.0"
    header = "conceptUri,preferredLabel,altLabels,description\n"
    _write(base / "skills_en.csv", header + "u1,ok,,d\nu2,,,d\n")
    with pytest.raises(DataError, match=r"skills_en\.csv: row 2 .*'preferredLabel'"):
        load_skills(tmp_path)
    clear_cache()
    _write(base / "occupations_en.csv", header + "u1,a,,d\nu1,b,,d\n")
    with pytest.raises(DataError, match=r"occupations_en\.csv: row 2 .*u1 appears twice"):
        load_occupations(tmp_path)
    _write(
        base / "occupationSkillRelations_en.csv",
        "occupationUri,relationType,skillUri\no,essential,s\no,core,s\n",
    )
    with pytest.raises(DataError, match=r"row 2 .*'core'"):
        load_occupation_skill_relations(tmp_path)


def test_split_alt_labels():
    assert split_alt_labels(" a \n\n b\r\n") == ["a", "b"]
    assert split_alt_labels("") == []
