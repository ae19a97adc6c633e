"""Your own graph, end to end (docs/how-to/own-graph.md): held-out splits that never reach training,
validation / test on them, the ``edges`` task from the CLI, the popularity baseline, ``rank`` with the user's ids,
a truthful model card, and one run through the real CLIs on ``tests/fixtures/own_graph`` (about 40 s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.paths import FIXTURES
from uwe_lightning.data.datamodule import UWEDataModule
from uwe_lightning.data.edges import EdgeFileSource, load_edges
from uwe_lightning.data.graphs import load_vocabulary, normalize_text
from uwe_lightning.data.sampling import choose_sampling
from uwe_lightning.io import ConfigError, DataError
from uwe_lightning.model.card import render_card
from uwe_lightning.ranking.targets import load_targets
from uwe_lightning.workbench.dataset import TaskUnavailable
from uwe_lightning.workbench.popularity import PopularityRankingModel
from uwe_lightning.workbench.registry import get_task, is_zero_shot_only, task_suite

OWN = FIXTURES / "own_graph"
JOBS, SKILLS = OWN / "jobs.csv", OWN / "skills.csv"
REPO_DIR = Path(__file__).resolve().parents[1]
HOLDOUT = {"val": 0.15, "test": 0.15, "seed": 0}


def _source(**kwargs) -> EdgeFileSource:
    return EdgeFileSource(edge_files={"J": str(JOBS)}, skill_vocab=str(SKILLS), **kwargs)


def test_no_heldout_text_reaches_training_and_the_task_rebuilds_the_split():
    source = _source(holdout=HOLDOUT, evaluate_on="own")
    vocab, graphs = source.load(["J"])
    trained = {normalize_text(t) for t in graphs["J"].texts}
    full = load_edges(JOBS, vocab, "J")
    assert set(source.heldout) == {"val", "test"}
    held = {split: {normalize_text(t) for t in g.texts} for split, g in source.heldout.items()}
    assert held["val"] and held["test"] and not held["val"] & held["test"]
    assert not trained & (held["val"] | held["test"])  # no held-out text's edge is trained on
    assert trained | held["val"] | held["test"] == {normalize_text(t) for t in full.texts}
    assert source.evaluation_tasks(["JobNorm"]) == ["edges"]
    options = source.task_options()["edges"]
    for split in ("val", "test"):
        ds = get_task("edges", **options).load(split)
        assert {normalize_text(q) for q in ds.queries} == held[split]
        assert ds.targets == list(vocab.labels)
        graph = source.heldout[split]
        assert ds.labels == [sorted(graph.skills_of(i).tolist()) for i in range(graph.n_texts)]
    again = _source(holdout=HOLDOUT)
    again.load(["J"])
    assert [g.texts for g in again.heldout.values()] == [g.texts for g in source.heldout.values()]  # seeded


def test_user_given_heldout_file_leaves_training(tmp_path):
    val = tmp_path / "val.csv"
    val.write_text("skill,text\nsk:010,Registered Nurse\nsk:011,registered nurse\n")
    source = _source(holdout={"val_file": str(val)})
    _, graphs = source.load(["J"])
    assert "registered nurse" not in {normalize_text(t) for t in graphs["J"].texts}
    assert source.heldout["val"].n_texts == 1 and "test" not in source.heldout
    assert _source(holdout=HOLDOUT, evaluate_on="workbench").evaluation_tasks(["JobNorm"]) == ["JobNorm"]


def test_edges_task_is_validated_on_but_never_in_the_workbench_macro():
    assert task_suite("edges") == "own" and not is_zero_shot_only("edges")
    with pytest.raises(TaskUnavailable, match="edges.file"):  # code walking every task passes over it
        get_task("edges").load("test")


def test_graphs_follow_the_files_and_errors_name_the_fix(tmp_path):
    module = UWEDataModule(_source(), graphs=None, skills_per_step=4)
    assert module.graph_names == ["J"]
    with pytest.raises(ConfigError, match=r"data.skills_per_step=24"):
        UWEDataModule(_source(), graphs=None, skills_per_step=512).setup()
    with pytest.raises(ConfigError, match="edge_files.J=jobs.csv"):
        EdgeFileSource(edge_files={"J": None}).available_graphs()
    with pytest.raises(DataError, match=r"row 1: .*data.source.skill_vocab=<csv"):
        load_edges(JOBS, load_vocabulary(FIXTURES / "edges" / "vocab.csv"))
    with pytest.raises(DataError, match="does not exist"):
        load_edges(tmp_path / "missing.csv", load_vocabulary(SKILLS))


def test_auto_sampling_picks_per_graph_coverage_for_a_sparse_vocabulary(tmp_path):
    vocab = load_vocabulary(SKILLS)
    graphs = {"J": load_edges(JOBS, vocab, "J")}
    assert choose_sampling(len(vocab), graphs) == "skill_uniform"
    big = tmp_path / "big.csv"
    rows = SKILLS.read_text().splitlines() + [f"x:{i},extra skill {i}" for i in range(100)]
    big.write_text("\n".join(rows) + "\n")
    big_vocab = load_vocabulary(big)
    assert choose_sampling(len(big_vocab), {"J": load_edges(JOBS, big_vocab, "J")}) == "per_graph"
    assert choose_sampling(len(big_vocab), {}, "skill_uniform") == "skill_uniform"


def test_popularity_ranks_by_training_frequency():
    model = PopularityRankingModel.from_edges([str(JOBS)], str(SKILLS))
    scores = next(model.score_blocks(["anything", "else"], ["team leadership", "welding", "unknown"], 8))[1]
    assert scores[0].tolist() == scores[1].tolist() and scores[0, 0] > scores[0, 1] > scores[0, 2] == 0
    with pytest.raises(ConfigError, match="model.edges"):
        PopularityRankingModel.from_edges([], str(SKILLS))


def test_rank_targets_table_keeps_ids_and_plain_lines_stay_lines(tmp_path):
    space = load_targets("file", targets_file=SKILLS)
    assert space.ids[:2] == ["sk:001", "sk:002"] and space.texts[:2] == ["Python", "SQL"] and len(space.texts) == 24
    tsv = tmp_path / "skills.tsv"
    tsv.write_text("key\tname\tnote\nk1\tdrive a truck\tx\n")
    named = load_targets("file", targets_file=tsv, columns=["key", "name"])
    assert (named.ids, named.texts) == (["k1"], ["drive a truck"])
    plain = tmp_path / "plain.csv"
    plain.write_text("manage a team, lead people\npython\n")
    lines = load_targets("file", targets_file=plain)
    assert lines.texts == ["manage a team, lead people", "python"] and lines.ids == ["line:1", "line:2"]
    with pytest.raises(DataError, match=r"no column\(s\) \['nope'\]"):
        load_targets("file", targets_file=tsv, columns=["key", "nope"])
    parquet = tmp_path / "skills.parquet"
    with pytest.raises(ConfigError, match="targets_columns"):
        load_targets("file", targets_file=parquet)


def test_card_claims_esco_only_when_esco_was_used():
    data = {"vocabulary": {"name": "skills", "skills": 24}, "esco": False,
            "graphs": {"J": {"texts": 33, "edges": 65}}, "heldout": {"test": {"texts": 2, "edges": 6}}}
    card = render_card({"scorer": "mean", "provenance": {"backbone": "tiny", "training_data": data}})
    from huggingface_hub import ModelCard

    assert "esco" not in ModelCard(card).data.tags and "ESCO skill vocabulary" not in card
    assert "`skills` (24 skills)" in card and "graph J: 33 texts, 65 edges" in card
    assert "esco" in ModelCard(render_card({"scorer": "mean", "provenance": {"backbone": "tiny"}})).data.tags


def test_popularity_of_the_open_protocol_for_workbench(tmp_path):
    """``model=popularity model.edges=open``: training graph J of the open protocol (mini pack), WorkBench tasks."""
    out = tmp_path / "eval"
    proc = cli("evaluate", "model=popularity", "model.edges=open", f"paths.data_dir={FIXTURES / 'uwe-data-mini'}",
               "tasks=[Job2Skill,SkillNorm]", f"hydra.run.dir={out}", "show_progress=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["model"] == "popularity" and set(results["tasks"]) == {"Job2Skill", "SkillNorm"}


# ---------------------------------------------------------------------------------------------------------
# End to end through the real CLIs
# ---------------------------------------------------------------------------------------------------------


def cli(tool: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", f"uwe_lightning.{tool}", *args], cwd=REPO_DIR, env=env,
                          capture_output=True, text=True, timeout=300)


def test_train_evaluate_rank_and_load_in_sentence_transformers(tmp_path, tiny_model_dir):
    run = tmp_path / "run"
    proc = cli("train", "+experiment=own_graph", f"data.source.edge_files.J={JOBS}",
               f"data.source.skill_vocab={SKILLS}", f"model.backbone={tiny_model_dir}", f"hydra.run.dir={run}",
               "data.skills_per_step=8", "data.num_workers=0", "trainer.max_steps=4", "validation.every_n_steps=2",
               "trainer.enable_progress_bar=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (run / "heldout").iterdir()) == ["test.csv", "train.csv", "val.csv"]
    history = [json.loads(line) for line in (run / "val_history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [0, 2, 4] and "val/edges/map" in history[0]
    results = json.loads((run / "results.json").read_text())
    assert set(results["tasks"]) == {"edges"} and results["suites"]["own"]["map"] is not None
    assert set(results["baselines"]) == {"popularity"} and "edges" in results["step0"]["tasks"]  # beside it
    assert "| popularity | edges |" in (run / "results.md").read_text()
    summary = json.loads((run / "run_info.json").read_text())["summary"]
    assert summary["test_macro"]["map"] == results["suites"]["own"]["map"]  # judged by its held-out edges
    card = (run / "best_model" / "README.md").read_text()
    assert "ESCO skill" not in card and "held out for test" in card and "`skills` (24 skills)" in card

    out = tmp_path / "eval"
    proc = cli("evaluate", "model=trained", f"model.backbone={run / 'best_model'}", "tasks=[edges]",
               f"edges.file={run / 'heldout' / 'test.csv'}", f"edges.skill_vocab={SKILLS}",
               "baselines=[popularity,tfidf]", f"popularity.edges={run / 'heldout' / 'train.csv'}",
               f"hydra.run.dir={out}", "device=cpu", "show_progress=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated = json.loads((out / "results.json").read_text())
    assert evaluated["tasks"]["edges"]["map"] == pytest.approx(results["tasks"]["edges"]["map"], abs=1e-4)  # percent
    assert set(evaluated["baselines"]) == {"popularity", "tfidf"} and "| popularity | edges |" in proc.stdout
    bad = cli("evaluate", "model=tfidf", "tasks=[edges]", f"edges.file={tmp_path / 'nope.csv'}",
              f"edges.skill_vocab={SKILLS}", f"hydra.run.dir={tmp_path / 'bad'}")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("[evaluate] error: edge file")

    ranked = tmp_path / "rank"
    proc = cli("rank", "model=trained", f"model.backbone={run / 'best_model'}", "queries=[data analyst]",
               "targets=file", f"targets_file={SKILLS}", "k=3", f"hydra.run.dir={ranked}", "cache=false",
               "device=cpu", "show_progress=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    top = json.loads((ranked / "rankings.json").read_text())["results"][0]["top"]
    assert all(row["id"].startswith("sk:") for row in top)

    import sentence_transformers

    model = sentence_transformers.SentenceTransformer(str(run / "best_model"), device="cpu")
    assert model.encode(["data analyst"]).shape[0] == 1
