"""The WorkRB bridge: WorkRB's numbers for a UWE model equal ours; ESCO linked from the pack; runner=workrb.

WorkRB reads ESCO from ``$XDG_CACHE_HOME/wteb``: every test points ``XDG_CACHE_HOME`` at a tmp directory, so
the user's real cache is never read or written. Skipped where workrb is not installed (a dev dependency).
"""

from __future__ import annotations

import json
import logging

import pytest

pytest.importorskip("workrb")

from hydra import compose, initialize_config_dir  # noqa: E402
from workrb.registry import ModelRegistry  # noqa: E402

from tests.helpers.paths import MINI_DATA  # noqa: E402
from uwe_lightning.integrations import workrb as bridge  # noqa: E402
from uwe_lightning.io import ConfigError, DataError  # noqa: E402
from uwe_lightning.paths import CONF_DIR  # noqa: E402
from uwe_lightning.ranking.ranker import Ranker  # noqa: E402
from uwe_lightning.workbench.runner import EncoderRankingModel, evaluate, load_tasks, subsample  # noqa: E402

TASKS = ["Job2Skill", "SkillNorm"]


@pytest.fixture
def wteb(tmp_path, monkeypatch):
    """A private WorkRB cache: ``XDG_CACHE_HOME`` in tmp, so WorkRB and :func:`link_esco` both use it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    logging.getLogger("workrb").setLevel(logging.WARNING)
    assert bridge.workrb_cache_dir() == tmp_path / "xdg" / "wteb"
    return bridge.workrb_cache_dir()


@pytest.fixture(scope="module")
def embedding_memo() -> dict:
    """Token embeddings of the tiny model by text, shared by this module's real-pack tests (the 14k skills are
    embedded once, not once per runner and scorer: the runners, data and metrics are under test here; the
    MiniLM measurement in experiments/results/workrb/parity.md has each runner encode on its own)."""
    return {}


def _memoized(ranker: Ranker, memo: dict) -> Ranker:
    real = ranker.model.embed

    def embed(texts, batch_size=128, show_progress=False, side="target"):  # a plain backbone: side-independent
        missing = [t for t in dict.fromkeys(texts) if t not in memo]
        if missing:
            memo.update(zip(missing, real(missing, batch_size=batch_size, side=side), strict=True))
        return [memo[t] for t in texts]

    ranker.model.embed = embed
    return ranker


def _parity(ranker: Ranker, data_dir, max_queries: int | None, out_dir) -> None:
    """Ours (WorkBench runner) and WorkRB's (``workrb.evaluate``) on the same queries: same data and numbers.

    WorkRB's query set is restricted to ours by text: on SkillNorm WorkRB keeps the altLabels equal to a
    preferredLabel that carries a trailing space (README), which ours drops, so the full sets differ by those.
    """
    datasets, _ = load_tasks(TASKS, "test", data_dir)
    datasets = {name: subsample(ds, max_queries, seed=0) for name, ds in datasets.items()}
    ours = evaluate(EncoderRankingModel(ranker), TASKS, "test", data_dir, max_queries=max_queries, seed=0)
    model = bridge.UWEWorkRBModel.from_ranker(ranker)
    tasks, unavailable, _ = bridge.build_tasks(TASKS, "test")
    assert not unavailable
    for name, task in tasks.items():
        ds = datasets[name]
        row = {q: i for i, q in enumerate(task.datasets["en"].query_texts)}
        assert set(ds.queries) <= set(row), name
        bridge.keep_queries(task, lambda texts, ds=ds: [texts.index(q) for q in ds.queries])
        theirs = task.datasets["en"]
        assert theirs.query_texts == ds.queries and set(theirs.target_space) == set(ds.targets), name
        for query, labels, their_labels in zip(ds.queries, ds.labels, theirs.target_indices, strict=True):
            assert {ds.targets[i] for i in labels} == {theirs.target_space[i] for i in their_labels}, query
    results = bridge.workrb_evaluate(model, list(tasks.values()), output_folder=str(out_dir),
                                     force_restart=True)
    for name, task in tasks.items():
        metrics = results.task_results[task.name].datasetid_results["en"].metrics_dict
        for metric in ("map", "rp@10"):
            assert metrics[metric] == pytest.approx(ours["tasks"][name][metric], abs=1e-6), (name, metric)


@pytest.mark.parametrize("scorer", ["mean", "softmax", "maxsim"])
def test_workrb_numbers_equal_ours_on_the_mini_pack(tiny_model_dir, wteb, tmp_path, scorer):
    bridge.link_esco(MINI_DATA, versions=["1.2.0"])
    _parity(Ranker.from_pretrained(str(tiny_model_dir), scorer=scorer), MINI_DATA, None, tmp_path / "out")


@pytest.mark.data
@pytest.mark.parametrize(("scorer", "max_queries"), [  # the token-level case (~20 s) runs with make test-slow
    ("mean", 60), pytest.param("softmax", 8, marks=pytest.mark.slow)])
def test_workrb_numbers_equal_ours_on_a_subset_of_the_real_pack(tiny_model_dir, real_data_dir, wteb, tmp_path,
                                                                 embedding_memo, scorer, max_queries):
    bridge.link_esco(real_data_dir, versions=["1.2.0"])
    ranker = _memoized(Ranker.from_pretrained(str(tiny_model_dir), scorer=scorer), embedding_memo)
    _parity(ranker, real_data_dir, max_queries, tmp_path / "out")


def test_link_esco_symlinks_the_pack_files_idempotently(wteb):
    links = bridge.link_esco(MINI_DATA, versions=["1.2.0"])
    layout = bridge.esco_cache_dir("1.2.0")
    names = ["occupationSkillRelations_en.csv", "occupations_en.csv", "skills_en.csv"]
    assert sorted(p.name for p in links) == names
    for link in links:
        assert link.parent == layout and link.is_symlink()
        assert link.resolve() == (MINI_DATA / "esco" / "v1.2.0" / link.name).resolve()
    assert bridge.link_esco(MINI_DATA, versions=["1.2.0"]) == links  # again: nothing changes
    links[0].unlink()
    links[0].symlink_to(MINI_DATA / "README.md")  # a stale link is replaced
    bridge.link_esco(MINI_DATA, versions=["1.2.0"])
    assert links[0].resolve() == (MINI_DATA / "esco" / "v1.2.0" / links[0].name).resolve()


def test_link_esco_names_a_missing_pack_file_and_never_overwrites_a_real_file(wteb, tmp_path):
    with pytest.raises(DataError, match=r"esco/v1\.1\.0/occupations_en\.csv"):
        bridge.link_esco(MINI_DATA)  # the mini pack has no v1.1.0 occupations
    assert not bridge.esco_cache_dir("1.2.0").exists()  # checked before anything was linked
    real = bridge.esco_cache_dir("1.2.0") / "skills_en.csv"
    real.parent.mkdir(parents=True)
    real.write_text("WorkRB's own download\n")
    with pytest.raises(DataError, match="is not a link to the pack"):
        bridge.link_esco(MINI_DATA, versions=["1.2.0"])
    assert real.read_text() == "WorkRB's own download\n"


def test_unknown_workrb_task_is_one_line_listing_the_known_ones():
    with pytest.raises(ConfigError) as err:
        bridge.resolve_task_names(["Job2Skill", "NoSuchTask"])
    message = str(err.value)
    assert "\n" not in message and "NoSuchTask" in message and "ESCOJob2SkillRanking" in message
    assert bridge.resolve_task_names(["Job2Skill", "ESCOSkillNormRanking"]) == {
        "Job2Skill": "ESCOJob2SkillRanking", "ESCOSkillNormRanking": "ESCOSkillNormRanking"}


def test_registered_in_workrb_model_registry(tiny_model_dir):
    model = ModelRegistry.create("UWEModel", model=str(tiny_model_dir), scorer="maxsim")
    scores = model.compute_rankings(["data engineer", "nurse"], ["python", "patient care", "sql"], None, None)
    assert tuple(scores.shape) == (2, 3)
    assert "maxsim" in model.name and "/" not in model.name


def test_evaluate_cli_runner_workrb_writes_results_like_ours(tiny_model_dir, wteb, tmp_path):
    from uwe_lightning.cli.evaluate import run

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[
            "runner=workrb", "model=trained", f"model.backbone={tiny_model_dir}", "scorer=softmax",
            "tasks=[Job2Skill,ESCOSkill2JobRanking]", f"paths.data_dir={MINI_DATA}",
            f"paths.output_dir={tmp_path}",
            "workrb.esco_versions=[1.2.0]", "show_progress=false"])  # the mini pack has no complete v1.1.0
    results = run(cfg)
    assert bridge.esco_cache_dir("1.2.0").joinpath("skills_en.csv").is_symlink()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["runner"] == "workrb" and set(saved["tasks"]) == {"Job2Skill", "ESCOSkill2JobRanking"}
    assert saved["tasks"]["Job2Skill"]["map"] == pytest.approx(results["tasks"]["Job2Skill"]["map"])
    assert "WorkRB test" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "workrb" / "results.json").is_file()  # WorkRB's own files, beside ours


def test_evaluate_cli_rejects_an_unknown_runner_and_task(tmp_path):
    from uwe_lightning.cli.evaluate import run

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=["runner=nope", f"paths.output_dir={tmp_path}"])
        with pytest.raises(ConfigError, match="runner must be one of"):
            run(cfg)
        cfg = compose(config_name="evaluate",
                      overrides=["runner=workrb", "tasks=[Nope]", f"paths.output_dir={tmp_path}"])
        with pytest.raises(ConfigError, match="unknown WorkRB task"):
            run(cfg)
