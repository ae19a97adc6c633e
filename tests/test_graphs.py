"""Skill vocabulary, bipartite graphs and the generic edge format (fixtures in tests/fixtures/edges/)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from uwe_lightning.data.edges import load_edges, save_edges
from uwe_lightning.data.graphs import BipartiteGraph, SkillVocabulary, UnknownSkillError, load_vocabulary
from uwe_lightning.io import DataError

EDGES = Path(__file__).parent / "fixtures" / "edges"


@pytest.fixture(scope="module")
def vocab() -> SkillVocabulary:
    return load_vocabulary(EDGES / "vocab.csv")


def edge_set(graph: BipartiteGraph, vocab: SkillVocabulary) -> set[tuple[str, str]]:
    return {(vocab.labels[s], graph.texts[t]) for s, t in zip(graph.skill_index, graph.text_index, strict=True)}


def test_vocabulary_lookup_by_uri_and_label(vocab):
    assert len(vocab) == 10
    assert vocab.index("urn:skill:manage-team") == 2
    assert vocab.index("  Manage A Team ") == 2
    assert vocab.index("SQL") == 1
    assert vocab.get("manage team") is None
    assert "python" in vocab and "cobol" not in vocab
    np.testing.assert_array_equal(vocab.indices(["teach", "urn:skill:python"]), [9, 0])
    with pytest.raises(UnknownSkillError, match="unknown skill 'cobol'"):
        vocab.index("cobol")


def test_vocabulary_rejects_duplicate_labels():
    with pytest.raises(DataError, match="label 'python' of skill 1 duplicates skill 0"):
        SkillVocabulary(["u:1", "u:2"], ["Python", "python "])


def test_graph_csr_both_directions():
    # skills 0..3; text "x" linked to skills 0 and 2; skill 3 has no neighbour
    graph = BipartiteGraph.from_pairs("G", [0, 2, 0, 1, 0], ["x", "x", "y", "z", "Y "], n_skills=4)
    assert graph.texts == ["x", "y", "z"]
    assert graph.n_edges == 4  # (0, y) given twice, once as "Y "
    assert graph.neighbors(0).tolist() == [0, 1]
    assert graph.neighbors(1).tolist() == [2]
    assert graph.neighbors(3).tolist() == []
    assert graph.skills_of(0).tolist() == [0, 2]
    assert graph.skills_of(2).tolist() == [1]
    assert graph.skill_degree.tolist() == [2, 1, 1, 0]
    assert graph.summary() == {"texts": 3, "edges": 4, "skills_covered": 3}


def test_has_edge_broadcasts_and_matches_brute_force():
    rng = np.random.default_rng(0)
    skills = rng.integers(0, 30, size=200)
    texts = [f"t{i}" for i in rng.integers(0, 50, size=200)]
    graph = BipartiteGraph.from_pairs("G", skills, texts, n_skills=30)
    truth = {(int(s), graph.texts.index(t)) for s, t in zip(skills, texts, strict=True)}
    s_query = np.arange(30)
    t_query = np.arange(graph.n_texts)
    mask = graph.has_edge(s_query[:, None], t_query[None, :])
    assert mask.shape == (30, graph.n_texts)
    brute = np.array([[(s, t) in truth for t in t_query] for s in s_query])
    np.testing.assert_array_equal(mask, brute)
    assert graph.has_edge(np.array([]), np.array([])).shape == (0,)


def test_graph_rejects_out_of_range_edges():
    with pytest.raises(ValueError, match="skill index outside"):
        BipartiteGraph("G", ["a"], np.array([5]), np.array([0]), n_skills=3)
    with pytest.raises(ValueError, match="text index outside"):
        BipartiteGraph("G", ["a"], np.array([0]), np.array([1]), n_skills=3)


def test_load_fixture_edge_files(vocab):
    jobs = load_edges(EDGES / "J.csv", vocab, "J")
    assert jobs.name == "J"
    # "Data Engineer" merged into "data engineer"; "nurse" row duplicated; skill by URI and by label
    assert jobs.texts.count("data engineer") == 1 and "Data Engineer" not in jobs.texts
    assert {"python", "sql"} == {vocab.labels[s] for s in jobs.skills_of(jobs.texts.index("data engineer"))}
    assert jobs.summary() == {"texts": 8, "edges": 15, "skills_covered": 9}
    assert jobs.meta["rows"] == 17
    sentences = load_edges(EDGES / "V.jsonl", vocab)
    assert sentences.name == "V"
    assert ("sql", "You write sql to report data.") in edge_set(sentences, vocab)
    assert ("report data", "You write sql to report data.") in edge_set(sentences, vocab)
    alternatives = load_edges(EDGES / "A.tsv", vocab)
    assert sorted(vocab.labels[s] for s in alternatives.skills_of(alternatives.texts.index("lead a team"))) == [
        "manage a team",
        "sales",
    ]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".jsonl"])
def test_save_and_reload_round_trip(vocab, tmp_path, suffix):
    graph = load_edges(EDGES / "J.csv", vocab, "J")
    path = save_edges(graph, vocab, tmp_path / f"J{suffix}")
    again = load_edges(path, vocab, "J")
    assert edge_set(again, vocab) == edge_set(graph, vocab)


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_missing_column_names_file_and_column(vocab, tmp_path):
    path = write(tmp_path, "bad.csv", "skill,sentence\npython,x\n")
    with pytest.raises(DataError, match=r"bad\.csv: missing column\(s\) \['text'\]"):
        load_edges(path, vocab)


def test_empty_text_names_row_and_field(vocab, tmp_path):
    path = write(tmp_path, "bad.csv", "skill,text\npython,ok\nsql,   \n")
    with pytest.raises(DataError, match=r"bad\.csv: row 2: empty field 'text'"):
        load_edges(path, vocab)
    path = write(tmp_path, "bad.jsonl", json.dumps({"skill": "python", "text": None}) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl: row 1: empty field 'text'"):
        load_edges(path, vocab)


def test_empty_skill_names_row(vocab, tmp_path):
    path = write(tmp_path, "bad.tsv", "skill\ttext\n\tsome text\n")
    with pytest.raises(DataError, match=r"bad\.tsv: row 1: empty field 'skill'"):
        load_edges(path, vocab)


def test_unknown_skill_error_or_drop(vocab, tmp_path):
    frame = pd.DataFrame({"skill": ["python", "cobol", "sql", "cobol"], "text": ["a", "b", "c", "d"]})
    path = tmp_path / "edges.parquet"
    frame.to_parquet(path)
    with pytest.raises(DataError, match=r"edges\.parquet: row 2: field 'skill' = 'cobol'"):
        load_edges(path, vocab)
    graph = load_edges(path, vocab, on_unknown="drop")
    assert edge_set(graph, vocab) == {("python", "a"), ("sql", "c")}
    assert graph.meta["dropped_unknown_skill"] == 2
    assert graph.meta["unknown_skill_examples"] == ["cobol"]
    with pytest.raises(ValueError, match="on_unknown"):
        load_edges(path, vocab, on_unknown="ignore")


def test_bad_json_line_and_unsupported_type(vocab, tmp_path):
    path = write(tmp_path, "bad.jsonl", '{"skill": "python", "text": "a"}\n{not json}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl: line 2: invalid JSON"):
        load_edges(path, vocab)
    with pytest.raises(DataError, match="unsupported file type '.xlsx'"):
        load_edges(write(tmp_path, "x.xlsx", ""), vocab)
    with pytest.raises(DataError, match="does not exist"):
        load_edges(tmp_path / "nope.csv", vocab)


ROW_CASES = {  # file name: (content, what the error says after "<file>: ")
    "short.csv": ("skill,text\npython,a\nsql\nteach,c\n", r"row 2 \(line 3\): 1 field, but the header has 2"),
    "long.csv": ("skill,text\npython,a\nsql,b,extra\n", r"row 2 \(line 3\): 3 fields, but the header has 2"),
    # pandas made the long first row's extra field an index: skill 'a', text 'extra', silently
    "long_first.csv": ("skill,text\npython,a,extra\nsql,b\n", r"row 1 \(line 2\): 3 fields"),
    "comma.csv": ("skill,text\npython,Team Lead, Python\n", r"row 1 \(line 2\): 3 fields.*quote a field"),
    "short.tsv": ("skill\ttext\n\npython\ta\nsql\n", r"row 2 \(line 4\): 1 field.*the line cut"),
    "long.tsv": ("skill\ttext\npython\ta\tb\n", r"row 1 \(line 2\): 3 fields.*quote a field that holds a tab"),
    "keys.jsonl": ('{"skill": "python", "text": "a"}\n{"skill": "sql"}\n', r"line 2: .*missing \['text'\]"),
    "extra.jsonl": ('{"skill": "python", "text": "a"}\n{"skill": "sql", "text": "b", "txt": "c"}\n',
                    r"line 2: .*extra \['txt'\]"),
    "twice.csv": ("skill,text,text\npython,a,b\n", r"the header names column\(s\) \['text'\] more than once"),
}


@pytest.mark.parametrize("name", sorted(ROW_CASES))
def test_edge_rows_must_match_the_header(vocab, tmp_path, name):
    """User data has no manifest to catch a damaged file: a row with fewer or more fields than the header is an
    error naming the file and the row. Before: pandas padded a short row with empty fields (a wrong edge, or
    an 'empty field' error pointing at the wrong cause) and shifted a long first row into its index."""
    text, where = ROW_CASES[name]
    path = write(tmp_path, name, text)
    with pytest.raises(DataError, match=rf"{name.replace('.', r'[.]')}: {where}"):
        load_edges(path, vocab)


def test_quoted_fields_blank_lines_and_a_bom_are_fine(vocab, tmp_path):
    path = tmp_path / "ok.csv"
    path.write_bytes("\ufeffskill,text\n\npython,\"Team Lead, Python\"\nsql,\"two\nlines\"\n".encode())
    assert load_edges(path, vocab).texts == ["Team Lead, Python", "two\nlines"]


def test_text_na_is_kept_as_text(vocab, tmp_path):
    path = write(tmp_path, "na.csv", "skill,text\npython,NA\n")
    assert load_edges(path, vocab).texts == ["NA"]


@pytest.mark.data
def test_esco_vocabulary(real_data_dir):
    vocab = SkillVocabulary.from_esco(real_data_dir)
    assert len(vocab) == 13_939
    first = vocab.uris[0]
    assert vocab.index(first) == 0
    assert vocab.index(vocab.labels[5].upper()) == 5
