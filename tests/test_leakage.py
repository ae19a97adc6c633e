"""The open protocol: stable splits, leakage filtering, the protocol task variants, and (on the real pack)
that no reported test pair is a training edge."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.paths import MINI_DATA as MINI
from uwe_lightning.data.edges import load_edges
from uwe_lightning.data.graphs import BipartiteGraph, load_vocabulary, normalize_text
from uwe_lightning.protocol import build, leakage, sources, splits
from uwe_lightning.protocol import tasks as ptasks
from uwe_lightning.workbench.dataset import RankingDataset, TaskUnavailable
from uwe_lightning.workbench.registry import WORKBENCH_SUITE, get_task, task_names

EDGES = Path(__file__).parent / "fixtures" / "edges"


# ---------------------------------------------------------------------------------------------------------
# Fast unit tests (fixtures only)
# ---------------------------------------------------------------------------------------------------------


def test_stable_hash_is_fixed():
    # Hard-coded: a change of the hash, salt or key normalisation would silently move the J/A splits.
    assert splits.stable_unit("data engineer", splits.TITLE_SALT) == pytest.approx(0.23072072551425732, abs=1e-15)
    uri = "http://data.europa.eu/esco/skill/0005c151-5b5a-4a66-8aac-60e734beb1ab"
    assert splits.stable_unit(uri, splits.ALTLABEL_SALT) == pytest.approx(0.3439925163997182, abs=1e-15)
    assert splits.is_validation_title("  Engineer, APPLICATIONS ") and splits.is_validation_title("Engineer, Applications")
    assert not splits.is_validation_title("data engineer")
    assert splits.is_altlabel_training_skill(uri) and not splits.is_altlabel_training_skill(uri, 0.3)


def test_title_split_fraction_is_close_to_requested():
    titles = [f"title {i}" for i in range(20_000)]
    share = np.mean([splits.is_validation_title(t, 0.1) for t in titles])
    assert 0.09 < share < 0.11


@pytest.fixture(scope="module")
def fixture_protocol() -> build.OpenProtocol:
    vocab = load_vocabulary(EDGES / "vocab.csv")
    graphs = {
        "J": load_edges(EDGES / "J.csv", vocab, "J"),
        "V": load_edges(EDGES / "V.jsonl", vocab, "V"),
        "A": load_edges(EDGES / "A.tsv", vocab, "A"),
    }
    return build.OpenProtocol(graphs=graphs, vocab=vocab, meta={"data_dir": None})


class NoV110(leakage.SkillResolver):
    def __init__(self, vocab):
        self.vocab = vocab
        self._v110 = {}


def test_leaked_pairs_both_orientations(fixture_protocol):
    vocab = fixture_protocol.vocab
    resolve = NoV110(vocab)
    skills = sorted(vocab.labels)
    # text query -> skill target: (" Chef", cook food) is a J edge; (chef, python) is not
    job2skill = RankingDataset(
        "J2S", "test", [" Chef", "truck driver"], skills,
        [[skills.index("cook food"), skills.index("python")], [skills.index("sales")]],
    )
    assert leakage.leaked_pairs(fixture_protocol, job2skill, resolve) == [(" Chef", "cook food")]
    # skill query -> text target: (sql, DATA ANALYST) is a J edge
    skill2job = RankingDataset("S2J", "test", ["sql", "teach"], ["DATA ANALYST", "nurse"], [[0, 1], [1]])
    assert leakage.leaked_pairs(fixture_protocol, skill2job, resolve) == [("sql", "DATA ANALYST")]
    keys = leakage.dataset_pair_keys(skill2job, resolve)
    assert keys == {("data analyst", vocab.index("sql")), ("nurse", vocab.index("sql")), ("nurse", vocab.index("teach"))}


def test_filter_drops_protected_edges_but_keeps_the_contaminated_skillnorm_overlap():
    candidates = sources._Candidates()
    for skill, text in [(0, "Alt one"), (1, "alt two"), (2, "alt three"), (3, "a sentence."), (4, "clean")]:
        candidates.add(skill, text)
    protected = {
        "SkillNorm/test": {("alt one", 0), ("alt two", 1)},
        "SkillNorm@heldout/test": {("alt two", 1)},
        "Job2Skill/test": {("alt three", 2)},
    }
    kept, report = build._filter_candidates("A", candidates, protected, sentences={"a sentence."}, test_queries={})
    assert list(zip(kept.skills, kept.texts, strict=True)) == [(0, "Alt one"), (4, "clean")]
    assert report["dropped_by_split"] == {"Job2Skill/test": 1, "SkillNorm/test": 1, "SkillNorm@heldout/test": 1}
    assert report["dropped_text_equal_to_sentence_query"] == 1
    kept_j, _ = build._filter_candidates("J", candidates, protected, sentences=set(), test_queries={})
    assert list(zip(kept_j.skills, kept_j.texts, strict=True)) == [(3, "a sentence."), (4, "clean")]
    # A text that is a query of a reported test split is dropped whatever its skill.
    kept_q, report_q = build._filter_candidates("V", candidates, {}, sentences=set(),
                                                test_queries={"JobNorm": {"clean"}, "Job2Skill": {"alt one"}})
    assert [t for t in kept_q.texts] == ["alt two", "alt three", "a sentence."]
    assert report_q["dropped_text_equal_to_test_query"] == {"Job2Skill": 1, "JobNorm": 1}


def test_restrict_targets_remaps_labels():
    dataset = RankingDataset("T", "val", ["q1", "q2", "q3"], ["a", "b", "c", "d"], [[0, 3], [1], [2, 3]])
    out = ptasks._restrict_targets(dataset, [False, True, True, True], "T@x", "note")
    assert out.targets == ["b", "c", "d"]
    assert out.queries == ["q1", "q2", "q3"] and out.labels == [[2], [0], [1, 2]]
    out = ptasks._restrict_targets(dataset, [True, False, False, False], "T@x", "note")
    assert out.queries == ["q1"] and out.labels == [[0]] and out.meta["notes"][-1] == "note"


def test_protocol_tasks_registered_with_base_groups():
    names = task_names()
    for variant, base in [("Job2Skill@open", "Job2Skill"), ("Skill2Job@open", "Skill2Job"), ("SkillNorm@heldout", "SkillNorm")]:
        assert variant in names
        assert get_task(variant).group == get_task(base).group


# ---------------------------------------------------------------------------------------------------------
# Real data pack
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_protocol(real_data_dir) -> build.OpenProtocol:
    start = time.perf_counter()
    protocol = build.build_open_protocol(real_data_dir)
    print(f"\nopen protocol built in {time.perf_counter() - start:.2f}s: {protocol.summary()}")
    return protocol


@pytest.mark.data
def test_every_reported_test_split_is_clean(real_protocol, real_data_dir):
    report = leakage.leakage_report(real_protocol, real_data_dir)  # every registered task, split "test"
    print(f"\nleakage (test): {report}")
    assert {"Job2Skill@open", "Skill2Job@open", "SkillNorm@heldout", "Job2Skill", "Skill2Job", "JobNorm"} <= set(report)
    assert {"SkillExtr-H", "SkillExtr-T", "SkillNorm"} <= set(report)
    clean = {name: n for name, n in report.items() if name not in leakage.CONTAMINATED}
    assert clean == dict.fromkeys(clean, 0)
    assert report["SkillNorm"] > 0


@pytest.mark.data
def test_full_skillnorm_overlap_lies_in_the_training_half(real_protocol, real_data_dir):
    dataset = get_task("SkillNorm").load("test", real_data_dir)
    leaked = leakage.leaked_pairs(real_protocol, dataset, leakage.SkillResolver(real_protocol.vocab, real_data_dir))
    vocab = real_protocol.vocab
    print(f"\nfull SkillNorm test: {len(leaked)} of {sum(map(len, dataset.labels))} pairs are graph-A edges")
    assert len(leaked) > 30_000  # about half of the altLabels
    assert all(splits.is_altlabel_training_skill(vocab.uris[vocab.index(label)]) for _, label in leaked)
    a_graph = real_protocol.graphs["A"]
    assert all(splits.is_altlabel_training_skill(vocab.uris[s]) for s in np.unique(a_graph.skill_index))


@pytest.mark.data
def test_leakage_report_on_validation_splits(real_protocol, real_data_dir):
    names = [n for n in real_protocol.meta["validation_tasks"] if n != "SkillSim"]
    report = leakage.leakage_report(real_protocol, real_data_dir, names, split="val")
    print(f"\nleakage (val): {report}")
    assert report == dict.fromkeys(names, 0)


@pytest.mark.data
def test_job_title_split(real_protocol, real_data_dir):
    meta = real_protocol.graphs["J"].meta
    print(f"\nJ titles: {meta}")
    assert meta["titles"] == 5_644 and meta["train_titles"] + meta["val_titles"] == 5_644
    assert 0.08 < meta["val_titles"] / 5_644 < 0.12
    val = get_task("Job2Skill@open").load("val", real_data_dir)
    assert val.n_queries == meta["val_titles"]
    train_texts = {normalize_text(t) for t in real_protocol.graphs["J"].texts}
    assert not train_texts & {normalize_text(q) for q in val.queries}
    skill2job = get_task("Skill2Job@open").load("val", real_data_dir)
    assert sorted(skill2job.targets) == sorted(val.queries)
    assert all(row for row in skill2job.labels)


@pytest.mark.data
def test_skillnorm_heldout_queries(real_protocol, real_data_dir):
    vocab = real_protocol.vocab
    for split in ("val", "test"):
        dataset = get_task("SkillNorm@heldout").load(split, real_data_dir)
        uris = [vocab.uris[vocab.index(t)] for t in dataset.targets]
        assert dataset.n_queries > 1000
        assert not any(splits.is_altlabel_training_skill(uris[j]) for row in dataset.labels for j in row)


@pytest.mark.data
def test_graph_sizes_and_meta(real_protocol):
    counts = real_protocol.meta["counts"]
    print(f"\ncounts: {counts}\nleakage: {real_protocol.meta['leakage']}")
    assert counts["V"]["skills_covered"] == 13_939  # every skill has a description
    assert 6_000 < counts["A"]["skills_covered"] < 8_000  # about half of the skills
    assert counts["J"]["texts"] <= real_protocol.graphs["J"].meta["train_titles"]
    skillskape = real_protocol.graphs["V"].meta["skillskape"]
    assert skillskape["sentences"] == 6_353 and skillskape["sentences_unk"] == 394
    assert "SkillNorm" in real_protocol.meta["contaminated"]
    assert build.build_open_protocol(real_protocol.meta["data_dir"]) is real_protocol  # cached in-process


def test_graph_type_is_bipartite(fixture_protocol):
    assert all(isinstance(g, BipartiteGraph) for g in fixture_protocol.graphs.values())


def _val_titles_in_graph_j(protocol, task) -> set[str]:
    j_texts = {normalize_text(t) for t in protocol.graphs["J"].texts}
    return {q for q in task.load("val", protocol.meta["data_dir"]).queries if normalize_text(q) in j_texts}


@pytest.mark.parametrize("val_fraction", [0.05, 0.15, 0.2])
def test_protocol_tasks_follow_the_configured_fraction(val_fraction):
    """The @open validation tasks are built with the graphs' own fraction: no validation title is trained on."""
    protocol = build.build_open_protocol(MINI, val_fraction=val_fraction)
    source = build.OpenProtocolSource(data_dir=str(MINI), val_fraction=val_fraction)
    options = source.task_options()
    assert options == protocol.task_options()
    for name in ("Job2Skill@open", "Skill2Job@open"):
        assert options[name] == {"val_fraction": val_fraction}
    task = get_task("Job2Skill@open", **options["Job2Skill@open"])
    assert _val_titles_in_graph_j(protocol, task) == set()
    # Skill2Job@open/val needs a held-out title as target space (the miniature pack has none below 0.141).
    names = ["Job2Skill@open", "Skill2Job@open"] if val_fraction > 0.141 else ["Job2Skill@open"]
    assert leakage.leakage_report(protocol, MINI, tasks=names, split="val") == dict.fromkeys(names, 0)


def test_mismatched_fraction_would_leak():
    """The control: graphs built with 0.15 but the task with 0.2 validate on a title graph J trains on."""
    protocol = build.build_open_protocol(MINI, val_fraction=0.15)
    assert _val_titles_in_graph_j(protocol, get_task("Job2Skill@open", val_fraction=0.2))


def test_training_run_validates_with_the_source_fractions(tmp_path, tiny_model_dir):
    from hydra import compose, initialize_config_dir

    from tests.helpers.configs import base_overrides
    from uwe_lightning.paths import CONF_DIR
    from uwe_lightning.training.callbacks import WorkBenchValidation
    from uwe_lightning.training.run import build_callbacks, build_datamodule

    overrides = [o for o in base_overrides(tmp_path, tiny_model_dir) if not o.startswith("data=")
                 and not o.startswith("data.source.")]
    overrides += ["data=open", "data.source.val_fraction=0.05", "validation.tasks=[Job2Skill@open,SkillNorm@heldout]"]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    options = build_datamodule(cfg).source.task_options()
    callback = next(cb for cb in build_callbacks(cfg, tmp_path, options) if isinstance(cb, WorkBenchValidation))
    assert callback.task_options["Job2Skill@open"] == {"val_fraction": 0.05}
    assert callback.task_options["SkillNorm@heldout"] == {"altlabel_train_fraction": 0.5}


@pytest.mark.data
def test_no_test_query_is_a_training_text(real_protocol, real_data_dir):
    """Data README: no query of a reported test set is seen in training (texts compared after strip +
    case-fold), except the skill-label queries (Skill2Job, SkillSim: the skill anchors) and the full SkillNorm
    (contaminated by construction)."""
    training_texts = {normalize_text(t) for graph in real_protocol.graphs.values() for t in graph.texts}
    allowed = {"Skill2Job", "Skill2Job@open", "SkillSim", "SkillNorm"}
    assert set(leakage.QUERY_TEXTS_ALLOWED) == {"Skill2Job", "SkillSim", "SkillNorm"}
    seen = {}
    for name in task_names(WORKBENCH_SUITE):  # zero-shot suites: test_zero_shot_tasks_never_pair_a_training_label
        try:
            dataset = real_protocol.task(name).load("test", real_data_dir)
        except TaskUnavailable:
            continue
        seen[name] = len({normalize_text(q) for q in dataset.queries} & training_texts)
    print(f"\ntest queries seen as training texts: {seen}")
    assert {name: n for name, n in seen.items() if name not in allowed} == dict.fromkeys(
        [n for n in seen if n not in allowed], 0
    )
    dropped = {g: r["dropped_text_equal_to_test_query"] for g, r in real_protocol.meta["leakage"]["graphs"].items()}
    print(f"edges dropped because their text is a test query: {dropped}")
    assert dropped["J"]["Job2Skill"] > 0 and dropped["J"]["JobNorm"] > 0 and dropped["A"]["SkillNorm@heldout"] > 0


@pytest.mark.data
def test_zero_shot_tasks_never_pair_a_training_label(real_protocol, real_data_dir):
    """O*NET is outside every protocol: none of its (query, label) pairs is a training edge, on either split. Its
    texts may still be training texts (an alternate title that is also a vacancy title, a technology name that
    is an ESCO altLabel): measured and reported (experiments/results/onet), never with an O*NET label."""
    for split in ("val", "test"):
        report = leakage.zero_shot_overlap(real_protocol, real_data_dir, split)
        print(f"\nO*NET {split} overlap with training texts: {report}")
        assert set(report) == {"ONET-JobNorm", "ONET-Occ2Tech", "ONET-Tech2Occ", "ONET-Task2Occ"}
        assert all(row["leaked_pairs"] == 0 for row in report.values())
        # measured: at most 1.1 % (ONET-Occ2Tech val: 2 of 179 occupation titles are also vacancy titles)
        assert all(row["queries_seen_as_training_text"] <= 0.02 * row["n_queries"] for row in report.values())
    assert not any(name.startswith("ONET-") for name in real_protocol.meta["validation_tasks"])
