"""Issue 29's controls on small synthetic graphs: shuffled alignment (degrees kept, alignment gone), the skill
holdout (stratified split, dropped edges, never sampled), the seen / unseen and overlap evaluation views, and
the label-overlap counts (Jaccard index against brute force)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.study_driver import calls, drive, driver_repo
from uwe_lightning.data.controls import (
    STRATUM_SIZE,
    drop_skills,
    edge_overlap,
    expected_random_overlap,
    hold_out_skills,
    holdout_split,
    shuffle_alignment,
    total_degree,
)
from uwe_lightning.data.datamodule import UWEDataModule, UWETrainDataset
from uwe_lightning.data.edges import EdgeFileSource
from uwe_lightning.data.graphs import BipartiteGraph, SkillVocabulary
from uwe_lightning.io import ConfigError
from uwe_lightning.studies import overlap
from uwe_lightning.workbench.dataset import RankingDataset
from uwe_lightning.workbench.holdout import holdout_views, restrict_positives
from uwe_lightning.workbench.metrics import ranking_metrics
from uwe_lightning.workbench.runner import score_view

EDGES = Path(__file__).parent / "fixtures" / "edges"


def random_graph(n_skills: int = 200, n_texts: int = 600, seed: int = 0, name: str = "J") -> BipartiteGraph:
    """A graph with a heavy-tailed skill degree (a few skills on many texts) and 1-8 skills per text."""
    rng = np.random.default_rng(seed)
    weight = 1.0 / np.arange(1, n_skills + 1) ** 0.8
    weight /= weight.sum()
    skills, texts = [], []
    for t in range(n_texts):
        k = int(rng.integers(1, 9))
        for s in rng.choice(n_skills, size=k, replace=False, p=weight):
            skills.append(int(s))
            texts.append(t)
    return BipartiteGraph(name, [f"text {t}" for t in range(n_texts)], np.array(skills), np.array(texts), n_skills)


def text_degree(graph: BipartiteGraph) -> np.ndarray:
    return np.diff(graph.text_indptr)


# -- shuffled alignment ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shuffle_keeps_every_degree_exactly(seed):
    graph = random_graph(seed=seed)
    shuffled = shuffle_alignment(graph, seed)
    assert shuffled.n_edges == graph.n_edges  # no edge merged away: the repeated pairs were swapped out
    np.testing.assert_array_equal(shuffled.skill_degree, graph.skill_degree)
    np.testing.assert_array_equal(text_degree(shuffled), text_degree(graph))
    assert shuffled.texts == graph.texts


def test_shuffle_destroys_alignment_to_the_random_expectation():
    graph = random_graph(n_skills=300, n_texts=2000)
    expected = expected_random_overlap(graph)
    overlaps = [edge_overlap(shuffle_alignment(graph, seed), graph) for seed in range(3)]
    assert edge_overlap(graph, graph) == 1.0
    assert expected < 0.2  # the synthetic graph is far from complete: alignment has something to lose
    for value in overlaps:  # near what a random graph of the same degrees shares with it, far from 1
        assert value < 2 * expected + 0.02, (value, expected)


def test_shuffle_is_seeded():
    graph = random_graph()
    a, b, c = (shuffle_alignment(graph, s) for s in (0, 0, 1))
    np.testing.assert_array_equal(a.skill_index, b.skill_index)
    np.testing.assert_array_equal(a.text_index, b.text_index)
    assert edge_overlap(a, c) < 0.5


def test_shuffle_of_a_graph_that_cannot_move_is_itself():
    # one text linked to every skill: the only graph with these degrees is the graph itself
    graph = BipartiteGraph("A", ["all"], np.arange(5), np.zeros(5, dtype=np.int64), 5)
    shuffled = shuffle_alignment(graph, 0)
    assert edge_overlap(shuffled, graph) == 1.0


# -- skill holdout -----------------------------------------------------------------------------------------


def test_holdout_split_is_half_stratified_by_degree_and_seeded():
    degree = np.random.default_rng(0).zipf(1.8, size=1001).clip(max=500)
    held = holdout_split(degree, 0.5, seed=0)
    assert held.size == round(0.5 * 1001)
    assert np.unique(held).size == held.size
    np.testing.assert_array_equal(held, holdout_split(degree, 0.5, seed=0))
    assert not np.array_equal(held, holdout_split(degree, 0.5, seed=1))
    kept = np.setdiff1d(np.arange(degree.size), held)
    # stratified: the sorted degrees of the two halves differ by at most one stratum's spread, position by position
    order = np.sort(degree)
    for half in (held, kept):
        quantiles = np.quantile(np.sort(degree[half]), [0.1, 0.25, 0.5, 0.75, 0.9])
        full = np.quantile(order, [0.1, 0.25, 0.5, 0.75, 0.9])
        np.testing.assert_allclose(quantiles, full, rtol=0.25, atol=1)
    assert abs(degree[held].sum() - degree[kept].sum()) <= degree.max() * 2 + STRATUM_SIZE


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_holdout_fraction_must_be_strictly_between_0_and_1(fraction):
    with pytest.raises(ValueError, match="fraction"):
        holdout_split(np.ones(10, dtype=np.int64), fraction, 0)


def test_drop_skills_removes_every_edge_of_a_held_out_skill_and_counts_the_cost():
    graph = random_graph()
    held = holdout_split(graph.skill_degree, 0.5, 0)
    kept, cost = drop_skills(graph, held)
    assert not np.isin(kept.skill_index, held).any()
    assert kept.n_edges == int((~np.isin(graph.skill_index, held)).sum())
    assert cost["edges"] == graph.n_edges - kept.n_edges
    assert cost["texts"] == graph.n_texts - kept.n_texts
    assert (text_degree(kept) > 0).all()  # texts left without an edge are gone
    # the kept edges are exactly the original ones between the same texts and skills
    original = {(int(s), graph.texts[t]) for s, t in zip(graph.skill_index, graph.text_index, strict=True)}
    after = {(int(s), kept.texts[t]) for s, t in zip(kept.skill_index, kept.text_index, strict=True)}
    assert after == {(s, t) for s, t in original if s not in set(held.tolist())}


def test_hold_out_skills_report_and_pool():
    graphs = {"J": random_graph(seed=0), "V": random_graph(seed=1, name="V")}
    held = holdout_split(total_degree(graphs, 200), 0.5, 0)
    kept, pool, report = hold_out_skills(graphs, held, 200)
    assert set(pool.tolist()) | set(held.tolist()) == set(range(200)) and not set(pool) & set(held)
    assert report["held_out_skills"] == 100 and report["training_skills"] == 100
    assert report["dropped"]["J"]["edges"] == graphs["J"].n_edges - kept["J"].n_edges


# -- the data module -------------------------------------------------------------------------------------


def fixture_source() -> EdgeFileSource:
    return EdgeFileSource({"J": str(EDGES / "J.csv"), "V": str(EDGES / "V.jsonl"), "A": str(EDGES / "A.tsv")},
                          skill_vocab=str(EDGES / "vocab.csv"), holdout={"val": 0, "test": 0})


def test_datamodule_holdout_never_samples_a_held_out_skill():
    dm = UWEDataModule(fixture_source(), skills_per_step=3, augment_p=0.0, skill_holdout=0.5, holdout_seed=0)
    dm.setup("fit")
    held = set(dm.held_out_skills.tolist())
    assert len(held) == round(0.5 * len(dm.vocab))
    for graph in dm.graphs.values():
        assert not held & set(graph.skill_index.tolist())
    for step in range(40):
        assert not held & set(dm.dataset.sample(step).skills.tolist())
    np.testing.assert_array_equal(dm.holdout_for(0.5), dm.held_out_skills)  # the views' split is the same
    assert dm.controls["skill_holdout"]["fraction"] == 0.5


def test_datamodule_shuffled_alignment_keeps_degrees_and_records_it():
    aligned = UWEDataModule(fixture_source(), skills_per_step=3, augment_p=0.0, seed=3)
    shuffled = UWEDataModule(fixture_source(), skills_per_step=3, augment_p=0.0, seed=3, alignment="shuffled")
    aligned.setup("fit")
    shuffled.setup("fit")
    for name, graph in aligned.graphs.items():
        np.testing.assert_array_equal(shuffled.graphs[name].skill_degree, graph.skill_degree)
        np.testing.assert_array_equal(text_degree(shuffled.graphs[name]), text_degree(graph))
    assert set(shuffled.controls["alignment"]["graphs"]) == set(aligned.graphs)
    assert shuffled.state_dict()["alignment"] == "shuffled"


@pytest.mark.parametrize("options, match", [({"alignment": "random"}, "data.alignment"),
                                            ({"skill_holdout": 1.0}, "data.skill_holdout"),
                                            ({"skill_holdout": "half"}, "data.skill_holdout")])
def test_datamodule_rejects_bad_control_values(options, match):
    with pytest.raises(ConfigError, match=match):
        UWEDataModule(fixture_source(), **options)


def test_pool_smaller_than_a_step_is_refused():
    vocab = SkillVocabulary([f"u{i}" for i in range(6)], [f"s{i}" for i in range(6)])
    graph = BipartiteGraph("J", ["t"], np.array([0]), np.array([0]), 6)
    with pytest.raises(ConfigError, match="skill_holdout"):
        UWETrainDataset(vocab, {"J": graph}, skills_per_step=4, skill_pool=np.array([0, 1, 2]))


# -- evaluation views ---------------------------------------------------------------------------------------


class TableModel:
    """Scores from a fixed (query text, target text) -> score table; everything else 0."""

    name = "table"

    def __init__(self, scores: dict[tuple[str, str], float]) -> None:
        self.scores = scores

    def prepare(self, texts, show_progress=False):
        pass

    def score_blocks(self, queries, targets, block_size):
        block = torch.tensor([[self.scores.get((q, t), 0.0) for t in targets] for q in queries])
        yield 0, block


def test_restrict_positives_counts_one_half_and_removes_the_other_from_the_ranking():
    ds = RankingDataset("Job2Skill", "test", ["q0", "q1"], ["a", "b", "c"], [[0, 1], [0]])
    unseen = restrict_positives(ds, np.array([False, True, False]))
    assert unseen.queries == ["q0"] and unseen.labels == [[1]] and unseen.exclude == [[0]]
    # q0 ranks a (seen) above b (unseen): with a removed, b is first -> AP 1
    scores = torch.tensor([[0.9, 0.5, 0.1]])
    assert ranking_metrics(scores, unseen.labels, exclude=unseen.exclude)["map"] == 1.0
    assert restrict_positives(ds, np.zeros(3, dtype=bool)) is None


def test_holdout_views_scored_on_the_same_split():
    # skills: 0 "alpha", 1 "beta" (held out), 2 "gamma"; Job2Skill ranks skills, Skill2Job ranks titles
    held = np.array([1])
    resolve = {"alpha": 0, "beta": 1, "gamma": 2}.get
    views = holdout_views(held, resolve)
    j2s = RankingDataset("Job2Skill", "test", ["nurse", "chef"], ["alpha", "beta", "gamma"], [[0, 1], [2]])
    s2j = RankingDataset("Skill2Job", "test", ["alpha", "beta"], ["nurse", "chef"], [[0], [1]])
    jobnorm = RankingDataset("JobNorm", "test", ["rn"], ["nurse"], [[0]])
    model = TableModel({("nurse", "alpha"): 0.9, ("nurse", "gamma"): 0.5, ("nurse", "beta"): 0.1,
                        ("chef", "gamma"): 0.9, ("alpha", "nurse"): 0.9, ("beta", "nurse"): 0.9})
    datasets = {"Job2Skill": j2s, "Skill2Job": s2j, "JobNorm": jobnorm}
    unseen = score_view(model, datasets, views["unseen"], 16)
    seen = score_view(model, datasets, views["seen"], 16)
    assert set(unseen["tasks"]) == {"Job2Skill", "Skill2Job"}  # JobNorm has no skill side
    # unseen Job2Skill: only "nurse" -> beta; alpha removed from its ranking, gamma above beta: rank 2
    assert unseen["tasks"]["Job2Skill"]["n_queries"] == 1
    assert unseen["tasks"]["Job2Skill"]["map"] == pytest.approx(0.5)
    # seen Job2Skill: nurse -> alpha (rank 1), chef -> gamma (rank 1)
    assert seen["tasks"]["Job2Skill"]["map"] == pytest.approx(1.0) and seen["tasks"]["Job2Skill"]["n_queries"] == 2
    # Skill2Job by query skill: "beta" is unseen (its positive chef ranks 2nd), "alpha" seen
    assert unseen["tasks"]["Skill2Job"]["map"] == pytest.approx(0.5)
    assert seen["tasks"]["Skill2Job"]["map"] == pytest.approx(1.0)
    assert unseen["macro"]["covers"] == ["Job2Skill", "Skill2Job"]


# -- label overlap ------------------------------------------------------------------------------------------


def test_jaccard_index_agrees_with_brute_force():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(12)]
    train = [" ".join(rng.choice(words, size=int(rng.integers(1, 7)))) for _ in range(150)]
    queries = [" ".join(rng.choice(words, size=int(rng.integers(1, 7)))) for _ in range(300)]
    for threshold in (0.5, 0.8, 1.0):
        index = overlap.JaccardIndex(train, threshold)
        sets = [overlap.tokens(t) for t in train]
        for q in queries:
            brute = any(overlap.jaccard(overlap.tokens(q), s) >= threshold for s in sets)
            assert index.has_match(q) == brute, (q, threshold)


def test_overlap_table_counts_and_views():
    def embed(texts):  # two directions: texts mentioning "cook" and all others
        v = np.array([[1.0, 0.0] if "cook" in t.casefold() else [0.0, 1.0] for t in texts], dtype=np.float32)
        return v

    ds = RankingDataset("JobNorm", "test", ["Cook ", "line cook assistant", "pilot"], ["cook", "pilot"],
                        [[0], [0], [1]])
    rows, flags = overlap.overlap_table({"J": ["cook"], "A": ["Airline Pilot"]}, {("JobNorm", "test"): ds}, embed)
    by = {(r["graph"], r["side"]): r for r in rows}
    assert by[("J", "query")]["verbatim"] == {"count": 1, "share": pytest.approx(1 / 3)}
    assert by[("J", "query")]["cosine"]["count"] == 2  # both cook queries
    assert by[("A", "query")]["jaccard"]["count"] == 0  # {pilot} vs {airline, pilot}: 0.5
    assert by[("J+A", "target")]["verbatim"]["count"] == 1
    views = overlap.overlap_views({"JobNorm": flags[("JobNorm", "test")]}, "verbatim")
    assert views["overlap:verbatim"]("JobNorm", ds).queries == ["Cook "]
    assert views["no_overlap:verbatim"]("JobNorm", ds).queries == ["line cook assistant", "pilot"]
    assert views["overlap:verbatim"]("Job2Skill", ds) is None
    text = overlap.overlap_markdown(rows, "cmd")
    assert "| JobNorm | test | query | 3 | J | 33.3 % (1) |" in text


def test_views_markdown_shows_the_gain_over_the_baseline_on_the_same_queries():
    def res(model, all_map, over, no_over, n_over=2):
        task = lambda m, n: {"map": m, "rp@10": m, "n_queries": n}  # noqa: E731
        return {"model": model, "split": "test", "max_queries": 5, "unit": "percent",
                "tasks": {"JobNorm": task(all_map, 5)},
                "views": {"overlap:jaccard": {"tasks": {"JobNorm": task(over, n_over)}},
                          "no_overlap:jaccard": {"tasks": {"JobNorm": task(no_over, 5 - n_over)}}}}

    trained, zero_shot = res("trained", 42.0, 60.0, 30.0), res("zero-shot", 40.0, 50.0, 29.5)
    line = overlap.views_markdown(trained, ["jaccard"], "cmd", baseline=zero_shot).splitlines()[-1]
    assert line == "| JobNorm | 42.00 [+2.00] (5) | 60.00 [+10.00] (2) | 30.00 [+0.50] (3) |"
    assert "minus zero-shot" in overlap.views_markdown(trained, ["jaccard"], "cmd", baseline=zero_shot)
    # other query subsets (a different count) get no difference; no baseline, no brackets
    other = overlap.views_markdown(trained, ["jaccard"], "cmd", baseline=res("z", 40.0, 50.0, 29.5, n_over=1))
    assert other.splitlines()[-1] == "| JobNorm | 42.00 [+2.00] (5) | 60.00 (2) | 30.00 (3) |"
    assert "[" not in overlap.views_markdown(trained, ["jaccard"], "cmd").splitlines()[-1]


def test_cached_embedder_reuses_the_file(tmp_path):
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return np.ones((len(texts), 3), dtype=np.float32)

    cached = overlap.CachedEmbedder(embed, tmp_path, "m")
    first = cached(["a", "b"])
    second = cached(["a", "b"])
    np.testing.assert_array_equal(first, second)
    assert calls == [["a", "b"]]
    assert list(itertools.chain(tmp_path.iterdir()))  # one file written


# -- the study driver ---------------------------------------------------------------------------------------

DRIVER = "experiments/studies/transfer_controls/run.sh"


def test_driver_runs_each_arm_with_its_overrides_once_and_resumes(tmp_path):
    repo, fake = driver_repo(tmp_path, DRIVER)
    runs = tmp_path / "runs"
    (runs / "holdout" / "holdout-seed0" / "checkpoints").mkdir(parents=True)
    (runs / "holdout" / "holdout-seed0" / "checkpoints" / "last.ckpt").write_text("")
    done = drive(repo, DRIVER, fake, runs, "all:0 shuffled:0 holdout:0 V:1")
    assert done.returncode == 0, done.stderr
    jobs = calls(fake)
    assert len(jobs) == 4
    assert jobs[0].startswith("+experiment=transfer_length data.graphs=[J,V,A] test.skill_views=0.5 scale=cpu")
    assert jobs[1].startswith("+experiment=transfer_shuffled scale=cpu") and "seed=0" in jobs[1]
    assert jobs[2].startswith("+experiment=transfer_holdout") and "resume=true" in jobs[2]
    assert jobs[3].startswith("+experiment=transfer_length data.graphs=[V] scale=cpu") and "seed=1" in jobs[3]
    assert f"hydra.run.dir={runs}/length/V-seed1" in jobs[3]
    again = drive(repo, DRIVER, fake, runs, "all:0 V:1")  # finished jobs are skipped
    assert again.returncode == 0 and "all:0: done" in again.stdout and "V:1: done" in again.stdout
    assert len(calls(fake)) == 4
    assert "unknown job" in drive(repo, DRIVER, fake, runs, "bogus:0").stderr


def test_driver_refuses_a_dirty_checkout(tmp_path):
    repo, fake = driver_repo(tmp_path, DRIVER)
    script = repo / "experiments/studies/transfer_controls/run.sh"
    script.write_text(script.read_text() + "\n# edited\n")
    result = drive(repo, DRIVER, fake, tmp_path / "runs")
    assert result.returncode == 2 and "refusing to start" in result.stderr
    assert not calls(fake)
