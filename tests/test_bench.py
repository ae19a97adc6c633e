"""``make bench`` on a tiny model and tiny fixture tasks: every section of the table/JSON is filled; FLOPs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from uwe_lightning import bench
from uwe_lightning.paths import CONF_DIR
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
    result = bench.run(cfg, tmp_path / "run", datasets=tiny_datasets(), growth_texts=SKILLS + JOBS)
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
    again = bench.run(cfg, tmp_path / "run2", datasets=tiny_datasets(), growth_texts=SKILLS + JOBS)
    assert all(v["hit"] for e in again["encoding"] for v in e["cache"].values())


def test_unavailable_tasks_are_named(tiny_model_dir, tmp_path):
    datasets, unavailable = bench.load_datasets(["NoSuchTask", "SkillSim"], "test", tmp_path / "no-data-pack")
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
        flops[scorer] = bench.flops_per_query(ranker, [query], ranker.index(SKILLS), k=3)[0]
    q_tokens = len(base.embed([query])[0])
    t_tokens = sum(len(t) for t in base.embed(SKILLS))
    h, n = 32, len(SKILLS)
    assert flops["maxsim"] - flops["mean"] == 2 * q_tokens * h * t_tokens - 2 * h * n
    assert flops["softmax"] >= flops["maxsim"] > flops["softmax_ymean"] > flops["mean"]


def test_mean_se_and_formatting():
    stats = bench.mean_se([1.0, 2.0, 3.0])
    assert stats["mean"] == 2.0 and math.isclose(stats["se"], 1 / math.sqrt(3)) and stats["n"] == 3
    assert math.isnan(bench.mean_se([5.0])["se"])
    assert bench.fmt_flops({"mean": 3.01e9, "se": 0.94e9, "n": 7}) == "3.01 ± 0.94B"
    assert bench.fmt_pm({"mean": 15.94, "se": 0.61, "n": 7}) == "15.9 ± 0.6"
    assert bench.sample_queries(["a", "b"], 5, seed=0)[:2] != [] and len(bench.sample_queries(["a", "b"], 5, 0)) == 5
    with pytest.raises(ValueError):
        bench.sample_queries([], 1, 0)
