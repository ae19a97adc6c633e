"""Edge sources through ``datasets`` (:mod:`uwe_lightning.data.edges`): a ``Dataset`` / ``DatasetDict``, a
``save_to_disk`` directory and ``hf:`` specs give the graph the file reader gives; a hub id is fetched only with
``UWE_ALLOW_HUB=1`` (and never here: ``load_dataset`` is replaced for the hub cases)."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest

from uwe_lightning.data.edges import EdgeFileSource, load_edges
from uwe_lightning.data.graphs import load_vocabulary
from uwe_lightning.io import DataError, read_table

EDGES = Path(__file__).parent / "fixtures" / "edges"


@pytest.fixture(scope="module")
def vocab():
    return load_vocabulary(EDGES / "vocab.csv")


@pytest.fixture(autouse=True)
def private_datasets_cache(tmp_path, monkeypatch):
    """``load_dataset("csv", ...)`` caches its Arrow conversion: keep it out of the user's ~/.cache."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def graph_key(graph):
    """Everything a graph is: its texts in order and its (skill, text) edges."""
    return graph.texts, sorted(zip(graph.skill_index.tolist(), graph.text_index.tolist(), strict=True))


def fixture_dataset(name: str = "J.csv") -> datasets.Dataset:
    return datasets.Dataset.from_pandas(read_table(EDGES / name), preserve_index=False)


def test_a_dataset_gives_the_graph_of_its_file(vocab):
    from_file = load_edges(EDGES / "J.csv", vocab, "J")
    from_dataset = load_edges(fixture_dataset(), vocab, "J")
    assert graph_key(from_dataset) == graph_key(from_file)
    assert from_dataset.meta["rows"] == from_file.meta["rows"] == 17
    assert from_dataset.meta["source"] == "edge dataset"


def test_save_to_disk_directories_memory_mapped(vocab, tmp_path):
    want = graph_key(load_edges(EDGES / "J.csv", vocab, "J"))
    fixture_dataset().save_to_disk(tmp_path / "J")
    graph = load_edges(tmp_path / "J", vocab)
    assert graph_key(graph) == want and graph.name == "J"
    datasets.DatasetDict({"train": fixture_dataset(), "test": fixture_dataset("A.tsv")}).save_to_disk(tmp_path / "dd")
    assert graph_key(load_edges(tmp_path / "dd", vocab)) == want  # a DatasetDict: its train split
    two = datasets.DatasetDict({"a": fixture_dataset(), "b": fixture_dataset()})
    with pytest.raises(DataError, match=r"splits \['a', 'b'\] and no 'train'"):
        load_edges(two, vocab)
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="not one written by Dataset.save_to_disk"):
        load_edges(tmp_path / "plain", vocab)


@pytest.mark.parametrize("builder, name", [("csv", "J.csv"), ("json", "V.jsonl")])
def test_hf_builder_specs_read_local_files(vocab, builder, name):
    want = graph_key(load_edges(EDGES / name, vocab))
    graph = load_edges(f"hf:{builder}:{EDGES / name}", vocab)
    assert graph_key(graph) == want and graph.name == name.split(".")[0]


def test_hf_parquet_shards_and_na_text(vocab, tmp_path):
    frame = read_table(EDGES / "J.csv")
    frame.iloc[:9].to_parquet(tmp_path / "part-0.parquet")
    frame.iloc[9:].to_parquet(tmp_path / "part-1.parquet")
    sharded = load_edges(f"hf:parquet:{tmp_path}/part-*.parquet", vocab, "J")
    assert graph_key(sharded) == graph_key(load_edges(EDGES / "J.csv", vocab, "J"))
    (tmp_path / "na.csv").write_text("skill,text\npython,NA\n")
    assert load_edges(f"hf:csv:{tmp_path / 'na.csv'}", vocab).texts == ["NA"]  # a text, as the file reader
    with pytest.raises(DataError, match=r"hf:csv:.*nope\.csv.*load_dataset failed"):
        load_edges(f"hf:csv:{tmp_path / 'nope.csv'}", vocab)


def test_bad_datasets_name_the_source_the_row_and_the_field(vocab):
    with pytest.raises(DataError, match=r"edge dataset: missing column\(s\) \['text'\]"):
        load_edges(datasets.Dataset.from_dict({"skill": ["python"], "sentence": ["x"]}), vocab)
    with pytest.raises(DataError, match=r"edge dataset: row 2: empty field 'text'"):
        load_edges(datasets.Dataset.from_dict({"skill": ["python", "sql"], "text": ["ok", None]}), vocab)
    with pytest.raises(TypeError, match="edge source is a path"):
        load_edges(read_table(EDGES / "J.csv"), vocab)


def test_a_hub_id_needs_the_user_to_allow_the_hub(vocab, monkeypatch):
    calls = []

    def fake_load_dataset(path, split=None, **kwargs):  # stands in for the hub: nothing leaves the machine
        calls.append((path, split))
        return fixture_dataset()

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.delenv("UWE_ALLOW_HUB", raising=False)
    with pytest.raises(DataError, match=r"'hf:someone/job-edges' is a hub dataset: set UWE_ALLOW_HUB=1"):
        load_edges("hf:someone/job-edges", vocab)
    assert calls == []
    monkeypatch.setenv("UWE_ALLOW_HUB", "1")
    graph = load_edges("hf:someone/job-edges:validation", vocab)
    assert calls == [("someone/job-edges", "validation")] and graph.name == "job-edges"
    assert graph_key(graph) == graph_key(load_edges(EDGES / "J.csv", vocab, "J"))


def test_the_edges_config_trains_from_a_saved_dataset(tmp_path):
    fixture_dataset().save_to_disk(tmp_path / "J")
    source = EdgeFileSource({"J": str(tmp_path / "J")}, skill_vocab=str(EDGES / "vocab.csv"),
                            holdout={"val": 0.2, "seed": 0})
    _, graphs = source.load(["J"])
    plain = EdgeFileSource({"J": str(EDGES / "J.csv")}, skill_vocab=str(EDGES / "vocab.csv"),
                           holdout={"val": 0.2, "seed": 0})
    _, want = plain.load(["J"])
    assert graph_key(graphs["J"]) == graph_key(want["J"])
    assert graph_key(source.heldout["val"]) == graph_key(plain.heldout["val"])
