"""``make bench`` on a tiny model and tiny fixture tasks: every section of the table/JSON is filled; FLOPs;
each distinct target text embedded once; where ``publish=true`` writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from uwe_lightning import efficiency
from uwe_lightning.efficiency import report
from uwe_lightning.efficiency.spaces import by_target_pooling, encode_task_spaces
from uwe_lightning.paths import CONF_DIR
from uwe_lightning.ranking import cache as cache_lib
from uwe_lightning.ranking.ranker import Ranker
from uwe_lightning.workbench.dataset import RankingDataset

SCORERS = ["mean", "maxsim", "softmax_ymean", "softmax"]
SKILLS = ["python", "java", "sql", "manage team", "develop software", "care for patient", "teach", "drive truck",
          "cook food", "customer service", "analyse data", "plan project", "marketing", "lead sales"]
JOBS = ["software engineer", "nurse", "truck driver", "chef", "sales manager", "teacher", "data engineer"]


def tiny_datasets() -> dict[str, RankingDataset]:
    return {
        "Job2Skill": RankingDataset("Job2Skill", "test", JOBS, SKILLS, [[0, 1], [5], [7], [8], [13], [6], [2]]),
        "Skill2Job": RankingDataset("Skill2Job", "test", SKILLS[:5], JOBS, [[0], [0], [6], [4], [0]]),
    }


def tiny_cfg(tiny_model_dir: Path, tmp_path: Path, *extra: str):
    overrides = [
        f"model.backbone={tiny_model_dir}", "model.name=tiny", f"paths.output_dir={tmp_path / 'run'}",
        f"paths.cache_dir={tmp_path / 'cache'}", f"paths.data_dir={tmp_path / 'no-data-pack'}", "device=cpu",
        "latency.warmup=1", "latency.queries=3", "latency.flop_queries=2", "throughput.batch=4",
        "encoding.sample=5", "train_step.skills=2", "train_step.warmup=0", "train_step.steps=1",
        "growth.sizes=[4,100]", "growth.warmup=1", "growth.queries=2", "naive.reencode_queries=1",
        "naive.loop_queries=1", "verbose=false", "threads=1", *extra,
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="bench", overrides=overrides)


def test_bench_smoke_fills_table_and_json(tiny_model_dir, tmp_path):
    cfg = tiny_cfg(tiny_model_dir, tmp_path, f"publish={tmp_path / 'published'}")
    result = efficiency.run(cfg, tmp_path / "run", datasets=tiny_datasets(), growth_texts=SKILLS + JOBS)
    run_dir = tmp_path / "run"
    saved = json.loads((run_dir / "bench.json").read_text())
    assert saved["model"]["params"] == sum(p.numel() for p in Ranker.from_pretrained(str(tiny_model_dir)).encoder.parameters())
    assert saved["model"]["hidden_size"] == 32
    assert saved["machine"]["torch"] == torch.__version__ and saved["machine"]["cpu_count"] >= 1
    assert "uwe_lightning.bench" in saved["command"]
    assert list(saved["scorers"]) == SCORERS
    for scorer, row in saved["scorers"].items():
        assert row["latency_ms"]["n"] == 2 and row["latency_ms"]["mean"] > 0  # two tasks
        assert row["flops"]["mean"] > 0 and row["throughput_qps"]["mean"] > 0
        assert row["train_step"]["ms"]["mean"] > 0 and row["train_step"]["texts"] == 8
        for task in ("Job2Skill", "Skill2Job"):
            per_task = row["per_task"][task]
            assert per_task["n_queries"] == 3 and per_task["latency_ms"]["n"] == 3
            assert per_task["throughput"]["batch"] == 4
        expected_tau = {"softmax": 0.1, "softmax_ymean": 0.5}.get(scorer)
        assert row["tau"] == expected_tau
    # Token scorers store tokens, pooled ones one row per text: two variants of each distinct space.
    assert [e["space"] for e in saved["encoding"]] == ["Job2Skill", "Skill2Job"]
    assert set(saved["encoding"][0]["cache"]) == {"pooled", "tokens"}
    growth = saved["growth"]
    assert growth["sizes"] == [4, len(SKILLS + JOBS)]  # capped at the available texts
    assert all(len(points) == 2 for key in ("latency_ms", "score_ms") for points in growth[key].values())
    assert growth["bytes"]["pooled"][0] < growth["bytes"]["tokens"][0]
    assert saved["naive"]["reencode"]["slowdown"] > 0
    assert set(saved["naive"]["python_loop"]) == set(SCORERS)
    md = (run_dir / "bench.md").read_text()
    assert "| Model | Scorer | Param. | h | Latency/query (ms) | FLOPs/query |" in md
    for scorer in SCORERS:
        assert f"| tiny | {scorer} |" in md
    assert (run_dir / "latency_vs_targets.png").read_bytes()[:4] == b"\x89PNG"
    published = sorted(p.name for p in (tmp_path / "published").iterdir())
    assert published == ["bench_tiny.json", "bench_tiny.md", "bench_tiny_latency_vs_targets.png"]
    assert result["wall_s"] > 0
    # A second run loads every target space from the cache.
    again = efficiency.run(cfg, tmp_path / "run2", datasets=tiny_datasets(), growth_texts=SKILLS + JOBS)
    assert all(v["hit"] for e in again["encoding"] for v in e["cache"].values())


def test_unavailable_tasks_are_named(tiny_model_dir, tmp_path):
    datasets, unavailable = efficiency.load_datasets(["NoSuchTask", "SkillSim"], "test", tmp_path / "no-data-pack")
    assert datasets == {}
    assert set(unavailable) == {"NoSuchTask", "SkillSim"} and "unknown task" in unavailable["NoSuchTask"]


def test_flops_count_encoder_plus_scoring(tiny_model_dir):
    """Hand check: every scorer encodes the same query; MaxSim adds 2*Lq*H*T for S = E_q E_y^T over the T target
    tokens (exact-length buckets: no padding counted), mean adds 2*H*N for one dot product per target."""
    base = Ranker.from_pretrained(str(tiny_model_dir), scorer="mean", device="cpu", bucket_max_padding=0.0,
                                  bucket_min_size=1)
    query = "software engineer"
    flops = {}
    for scorer in SCORERS:
        ranker = base.with_scorer(scorer)
        flops[scorer] = efficiency.flops_per_query(ranker, [query], ranker.index(SKILLS), k=3)[0]
    q_tokens = len(base.embed([query])[0])
    t_tokens = sum(len(t) for t in base.embed(SKILLS))
    h, n = 32, len(SKILLS)
    assert flops["maxsim"] - flops["mean"] == 2 * q_tokens * h * t_tokens - 2 * h * n
    assert flops["softmax"] >= flops["maxsim"] > flops["softmax_ymean"] > flops["mean"]


def test_mean_se_and_formatting():
    stats = efficiency.mean_se([1.0, 2.0, 3.0])
    assert stats["mean"] == 2.0 and math.isclose(stats["se"], 1 / math.sqrt(3)) and stats["n"] == 3
    assert math.isnan(efficiency.mean_se([5.0])["se"])
    assert efficiency.fmt_flops({"mean": 3.01e9, "se": 0.94e9, "n": 7}) == "3.01 ± 0.94B"
    assert efficiency.fmt_pm({"mean": 15.94, "se": 0.61, "n": 7}) == "15.9 ± 0.6"
    assert efficiency.sample_queries(["a", "b"], 5, seed=0)[:2] != [] and len(efficiency.sample_queries(["a", "b"], 5, 0)) == 5
    with pytest.raises(ValueError):
        efficiency.sample_queries([], 1, 0)


def test_each_distinct_target_text_is_embedded_once(tiny_model_dir, tmp_path, monkeypatch):
    """Spaces sharing texts, and the pooled and token variants of one, embed each distinct text once (through
    ``Ranker.index``, into the cache files ``uwe_lightning.rank`` uses); a warm cache embeds nothing."""
    embedded: list[str] = []
    original_embed = Ranker.embed

    def counting_embed(self, texts, show_progress=False):
        embedded.extend(texts)
        return original_embed(self, texts, show_progress=show_progress)

    monkeypatch.setattr(Ranker, "embed", counting_embed)
    base = Ranker.from_pretrained(str(tiny_model_dir), device="cpu")
    rankers = by_target_pooling({s: base.with_scorer(s) for s in SCORERS})
    assert set(rankers) == {True, False}  # mean/softmax_ymean pool the targets, maxsim/softmax keep tokens
    datasets = {
        **tiny_datasets(),
        "SkillNorm": RankingDataset("SkillNorm", "test", SKILLS[:2], SKILLS, [[0], [1]]),  # Job2Skill's space
        "JobNorm": RankingDataset("JobNorm", "test", ["nurse"], JOBS[:3] + SKILLS[:2], [[1]]),  # overlaps both
    }
    distinct = sorted({t for ds in datasets.values() for t in ds.targets})
    cache_dir = tmp_path / "cache"
    for where in (None, cache_dir):
        embedded.clear()
        spaces, task_space = encode_task_spaces(datasets, rankers, where)
        assert sorted(embedded) == distinct
        assert len(spaces) == 3 and task_space["SkillNorm"] == task_space["Job2Skill"]
        assert spaces[task_space["Job2Skill"]].tasks == ["Job2Skill", "SkillNorm"]
    for info in spaces.values():
        for pooled, ranker in rankers.items():
            cached = info.cache["pooled" if pooled else "tokens"]
            assert not cached["hit"]
            assert cached["path"] == str(cache_lib.cache_path(cache_dir, ranker.cache_key(info.texts, cache_dir)))
    # The memo keeps fp16 embeddings: token rows are stored exactly as without it, pooled rows within rounding.
    jobs = spaces[task_space["Skill2Job"]].encoded
    direct = {pooled: ranker.index(JOBS) for pooled, ranker in rankers.items()}
    assert torch.equal(jobs[False].tokens, direct[False].tokens) and torch.equal(jobs[False].offsets, direct[False].offsets)
    torch.testing.assert_close(jobs[True].tokens.float(), direct[True].tokens.float(), atol=2e-3, rtol=2e-3)
    # A second run, and the ranker users call, load those files without embedding anything.
    embedded.clear()
    again, _ = encode_task_spaces(datasets, rankers, cache_dir)
    rankers[False].index(JOBS, cache_dir=cache_dir)
    assert embedded == [] and rankers[False].last_index_hit
    assert all(v["hit"] for info in again.values() for v in info.cache.values())


def test_publish_default_dir(tmp_path, monkeypatch):
    """``publish=true``: the checkout's experiments/results; an installed package: the working directory's."""
    assert report.default_results_dir() == report.REPO_DIR / "experiments" / "results"
    installed, cwd = tmp_path / "site-packages", tmp_path / "work"
    installed.mkdir()
    cwd.mkdir()
    monkeypatch.setattr(report, "REPO_DIR", installed)
    monkeypatch.chdir(cwd)
    assert report.default_results_dir() == cwd / "experiments" / "results"


def test_bench_module_is_the_cli_main():
    """``python -m uwe_lightning.bench`` (``make bench``) runs the Hydra main of ``uwe_lightning.cli.bench``."""
    from uwe_lightning import bench
    from uwe_lightning.cli import bench as cli_bench

    assert bench.main is cli_bench.main
