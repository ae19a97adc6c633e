"""The WorkBench runner on the miniature data pack: block-wise scoring, macro average, results files, CLI."""

from __future__ import annotations

import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from tests.helpers.paths import FIXTURES
from tests.helpers.tolerance import assert_close_to_scale
from uwe_lightning.model.lexical import TfidfRankingModel
from uwe_lightning.paths import CONF_DIR
from uwe_lightning.workbench.report import write_results
from uwe_lightning.workbench.runner import evaluate, load_tasks, subsample

MINI = FIXTURES / "uwe-data-mini"
TASKS = ["Job2Skill", "Skill2Job", "JobNorm", "SkillNorm", "SkillSim", "SkillExtr-T", "SkillExtr-H"]


class OracleModel:
    """Scores a query's labelled targets 1 and everything else 0: every metric must be exactly 1."""

    name = "oracle"

    def __init__(self, datasets) -> None:
        self.positives: dict[str, set[str]] = {}
        for ds in datasets.values():
            for query, labels in zip(ds.queries, ds.labels, strict=False):
                self.positives.setdefault(query, set()).update(ds.targets[i] for i in labels)
        self.prepared = 0

    def prepare(self, texts, show_progress=False):
        self.prepared += 1

    def score_blocks(self, queries, targets, block_size):
        for start in range(0, len(queries), block_size):
            block = [[float(t in self.positives[q]) for t in targets] for q in queries[start : start + block_size]]
            yield start, torch.tensor(block)


def test_oracle_scores_one_everywhere_and_skillsim_is_reported_unavailable():
    datasets, _ = load_tasks(TASKS, "test", MINI)
    model = OracleModel(datasets)
    results = evaluate(model, TASKS, "test", MINI, block_size=2)
    assert model.prepared == 1  # every distinct text prepared once per run
    assert set(results["tasks"]) == set(TASKS) - {"SkillSim"}
    assert "SkillSim" in results["unavailable"]
    for name, r in results["tasks"].items():
        assert r["map"] == pytest.approx(1.0), name
        assert r["rp@10"] == pytest.approx(1.0), name
    assert results["macro"]["map"] == pytest.approx(1.0)
    assert "SkillSim" not in results["macro"]["covers"]


def test_block_size_does_not_change_metrics():
    small = evaluate(TfidfRankingModel(), TASKS, "test", MINI, block_size=1)
    large = evaluate(TfidfRankingModel(), TASKS, "test", MINI, block_size=4096)
    for name in small["tasks"]:
        assert small["tasks"][name]["map"] == pytest.approx(large["tasks"][name]["map"])
        assert small["tasks"][name]["rp@10"] == pytest.approx(large["tasks"][name]["rp@10"])
    assert 0.0 < small["macro"]["map"] < 1.0


def test_subsample_is_a_fixed_subset():
    datasets, _ = load_tasks(["SkillNorm"], "test", MINI)
    ds = datasets["SkillNorm"]
    n = ds.n_queries - 1
    assert n >= 2
    a, b = subsample(ds, n, seed=1), subsample(ds, n, seed=1)
    assert a.queries == b.queries and a.n_queries == n and a.meta["subsampled_from"] == ds.n_queries
    pairs = set(zip(ds.queries, map(tuple, ds.labels), strict=False))
    assert set(zip(a.queries, map(tuple, a.labels), strict=False)) <= pairs
    assert subsample(ds, None) is ds


def test_write_results_files(tmp_path):
    results = evaluate(TfidfRankingModel(), ["JobNorm", "SkillSim"], "val", MINI)
    json_path, md_path = write_results(results, tmp_path / "run", title="t")
    loaded = json.loads(json_path.read_text())
    assert loaded["tasks"]["JobNorm"]["n_targets"] == results["tasks"]["JobNorm"]["n_targets"]
    text = md_path.read_text()
    assert "| JobNorm |" in text and "macro average" in text and "SkillSim unavailable" in text
    assert not list((tmp_path / "run").glob(".*"))  # no temporary files left behind


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="evaluate", overrides=overrides)


def test_evaluate_cli_writes_results(tmp_path):
    from uwe_lightning.cli.evaluate import run

    cfg = _compose(["model=tfidf", "split=val", f"paths.data_dir={MINI}", f"paths.output_dir={tmp_path}",
                    "show_progress=false", f"publish={tmp_path / 'published'}"])
    results = run(cfg)
    assert (tmp_path / "results.json").is_file() and (tmp_path / "published" / "results.md").is_file()
    assert results["split"] == "val" and "Job2Skill" in results["tasks"]


def test_unknown_config_key_is_named():
    with pytest.raises(ConfigCompositionException, match="no_such_key"):
        _compose(["no_such_key=1"])


def test_missing_data_dir_is_named(tmp_path):
    from uwe_lightning.io import DataError

    with pytest.raises(DataError, match="does not exist"):
        evaluate(TfidfRankingModel(), ["JobNorm"], "test", tmp_path / "nowhere")


@pytest.mark.parametrize("scorer", ["mean", "maxsim", "softmax_ymean", "softmax"])
def test_encoder_model_scores_equal_the_rankers_own_path(scorer, tiny_model_dir):
    """Embedding each distinct text once (and sharing a side's packing when pooling agrees) changes no score."""
    from uwe_lightning.ranking.ranker import Ranker
    from uwe_lightning.workbench.runner import EncoderRankingModel

    queries = ["python developer", "nurse care", "truck driver job"]
    targets = ["python", "care for patient", "drive truck", "sql data"]
    ranker = Ranker.from_pretrained(str(tiny_model_dir), scorer=scorer)  # precision auto: fp16 storage
    exact = ranker.with_scorer(scorer, precision="fp32")

    def own_path(r: Ranker) -> torch.Tensor:
        return torch.cat([b for _, b in r.score_blocks(r.encode(queries, "query"), r.encode(targets, "target"))])

    for model, want in ((EncoderRankingModel(ranker), own_path(exact)),  # WorkBench scores the exact way
                        (EncoderRankingModel(ranker, exact=False), own_path(ranker))):
        model.prepare(queries + targets)
        got = torch.cat([block for _, block in model.score_blocks(queries, targets, 2)])
        assert_close_to_scale(got, want)
        assert (model._query_side is model._target_side) == (ranker.pooled("query") == ranker.pooled("target"))


@pytest.mark.parametrize(("cli_args", "line"), [
    (["tasks=[Foo]"], r"tasks: unknown task\(s\) \['Foo'\]; known tasks:"),
    (["split=train"], r"split='train': WorkBench has the splits \['val', 'test'\]"),
])
def test_evaluate_cli_names_an_unknown_task_or_split_in_one_line(cli_args, line, tmp_path):
    """Issue 31: both were 17-50-line tracebacks with exit 1."""
    import re
    import subprocess
    import sys

    from tests.helpers.paths import MINI_DATA
    from uwe_lightning.paths import REPO_DIR

    result = subprocess.run([sys.executable, "-m", "uwe_lightning.evaluate", "model=tfidf", *cli_args,
                             f"paths.data_dir={MINI_DATA}", f"hydra.run.dir={tmp_path / 'run'}"],
                            cwd=REPO_DIR, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and re.search(line, lines[0]), result.stderr
