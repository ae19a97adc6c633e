"""The bench's peers rank the same vectors as the Ranker: sentence-transformers' semantic_search and FAISS's
IndexFlatIP give our mean top-10, PyLate's padded-einsum MaxSim gives our maxsim top-10; the bench's helpers
(timing with CPU time, RSS probes, synthetic spaces); a slow smoke run of experiments/bench/bench_peers.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.tolerance import assert_close_to_scale
from tests.test_fast import token_list
from uwe_lightning.efficiency import peers
from uwe_lightning.efficiency.synthetic import synthetic_name, write_synthetic
from uwe_lightning.model.scoring import get_scorer
from uwe_lightning.ranking import fast
from uwe_lightning.ranking.packed import EncodedTexts


def _ours(name: str, targets: EncodedTexts, queries: EncodedTexts) -> torch.Tensor:
    spec = get_scorer(name)
    scores = fast.score(fast.PreparedTargets.from_encoded(targets, "fp32"), fast.query_groups(queries), len(queries),
                        name, spec.tau)
    return fast.topk_stable(scores, 10)[1]


def test_semantic_search_and_faiss_rank_like_our_mean():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("faiss")
    gen = torch.Generator().manual_seed(0)
    targets = EncodedTexts.from_token_list([torch.randn(1, 24, generator=gen) for _ in range(500)], pooled=True,
                                           dtype=torch.float32)
    queries = EncodedTexts.from_token_list([torch.randn(1, 24, generator=gen) for _ in range(12)], pooled=True,
                                           dtype=torch.float32)
    want = _ours("mean", targets, queries)
    vectors = peers.pooled_vectors(targets)
    for peer in (peers.SemanticSearch(vectors), peers.FaissFlatIP(vectors)):
        scores, index = peer.search(queries.tokens, 10)
        assert peers.top_k_agreement(index, want) == 1.0, peer.name
        assert peer.memory_bytes() == 500 * 24 * 4
    with pytest.raises(ValueError, match="pooled space"):
        peers.pooled_vectors(EncodedTexts.from_token_list([torch.randn(2, 4)]))


def test_padded_einsum_maxsim_ranks_like_our_maxsim():
    """Equal up to the factor query length wherever a document's best real cosine is >= 0 (here: every token
    shares a common direction); PyLate's padded positions score 0, which only wins over negative cosines."""
    gen = torch.Generator().manual_seed(1)
    lengths = torch.randint(1, 9, (300,), generator=gen).tolist()
    shift = torch.full((24,), 2.0)
    targets = EncodedTexts.from_token_list([t + shift for t in token_list(lengths, hidden=24, seed=2, centers=6)],
                                           dtype=torch.float32)
    query_tokens = [t + shift for t in token_list([3, 5, 2, 7], hidden=24, seed=3, centers=6)]
    want = _ours("maxsim", targets, EncodedTexts.from_token_list(query_tokens, dtype=torch.float32))
    peer = peers.PaddedMaxSim(targets, batch=64)
    for row, tokens in enumerate(query_tokens):
        unit = torch.nn.functional.normalize(tokens, dim=-1)
        ours = fast.score(fast.PreparedTargets.from_encoded(targets, "fp32"),
                          fast.query_groups(EncodedTexts.from_token_list([tokens], dtype=torch.float32)), 1, "maxsim")
        # PyLate sums over query tokens where we average: the same ranking, scores x query length.
        assert_close_to_scale(peer.scores(unit), ours[0] * len(tokens))
        assert peers.top_k_agreement(peer.search(unit, 10)[1], want[row]) >= 0.9  # float near-ties aside
    assert peer.memory_bytes() > targets.tokens.numel() * 4  # padded
    # The padding rule: a query token opposite to every real token of a padded document scores 0, not -1.
    docs = EncodedTexts.from_token_list([torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])],
                                        dtype=torch.float32)
    assert peers.PaddedMaxSim(docs).scores(torch.tensor([[-1.0, 0.0]])).tolist() == [0.0, 0.0]


def test_timing_and_memory_helpers():
    wall, cpu = peers.timed_call(lambda: sum(range(100_000)))
    assert wall > 0 and cpu >= 0
    calls = []
    rate = peers.batch_rate(lambda: calls.append(sum(range(10_000))), n_queries=64, repeats=3)
    assert len(calls) == 4 and rate["repeats"] == 3 and rate["queries"] == 64 and rate["queries_per_s"] == 64_000 / rate["wall_ms"]
    stats = peers.time_each(lambda x: sum(range(x)), [1000] * 5, warmup=2)
    assert stats["n"] == 5 and stats["p50"] <= stats["p95"] and "cpu_p50" in stats
    if peers.rss_bytes() is not None:
        assert peers.rss_bytes() > 0
        if peers.reset_peak_rss():
            assert peers.peak_rss_bytes() >= peers.rss_bytes() * 0.9


def test_other_cpu_subtracts_this_process(monkeypatch):
    """Busy time of the machine minus our own, per wall second (clocks faked: 3 s busy, 2 s ours, over 2 s)."""
    from uwe_lightning.efficiency import measure

    busy, own, wall = iter([100.0, 103.0]), iter([10.0, 12.0]), iter([0.0, 2.0])
    monkeypatch.setattr(measure, "cpu_busy_seconds", lambda: next(busy))
    monkeypatch.setattr(measure, "own_cpu_seconds", lambda: next(own))
    monkeypatch.setattr(measure.time, "perf_counter", lambda: next(wall))
    with measure.OtherCpu() as others:
        pass
    assert others.cpus == 0.5


def test_other_cpu_sees_another_process_spinning():
    from uwe_lightning.efficiency.measure import OtherCpu, cpu_busy_seconds

    if cpu_busy_seconds() is None:
        pytest.skip("no /proc/stat")
    import subprocess
    import time

    spinner = subprocess.Popen([sys.executable, "-c", "import time\ns = time.time()\nwhile time.time() - s < 1.5: pass"])
    try:
        with OtherCpu() as others:
            time.sleep(1.0)  # the spinner's CPU is not ours (it is not waited for inside the block)
    finally:
        spinner.wait()
    assert others.cpus >= 0.3


def test_synthetic_space_is_a_mapped_file_made_from_its_base(tmp_path):
    base = EncodedTexts.from_token_list(token_list([3, 1, 4, 1, 5, 9, 2, 6], hidden=16, seed=4))
    name = synthetic_name("digest", 50, 0, 0.3, 0.1)
    assert name != synthetic_name("digest", 50, 1, 0.3, 0.1) and name.endswith(".safetensors")
    mapped = fast.open_prepared(write_synthetic(tmp_path / name, base, 50, seed=0, tile_tokens=20))
    try:
        assert len(mapped) == 50 and mapped.hidden_size == 16 and not mapped.pooled
        assert torch.equal(mapped.order, torch.arange(50))  # texts are numbered in length order
        lengths = mapped._lengths_sorted
        assert bool((lengths[1:] >= lengths[:-1]).all()) and set(lengths.tolist()) <= {3, 1, 4, 5, 9, 2, 6}
        assert mapped.pooled_vectors.shape == (50, 16)
        q = fast.query_groups(EncodedTexts.from_token_list([torch.randn(3, 16)]))
        assert torch.isfinite(fast.score(mapped, q, 1, "softmax", 0.1)).all()
    finally:
        mapped.close()


@pytest.mark.slow
@pytest.mark.data
def test_bench_peers_smoke(tiny_model_dir, real_data_dir, tmp_path, monkeypatch):
    """The whole bench on the tiny model: every section runs, and the exact methods agree on every top-10."""
    pytest.importorskip("faiss")
    pytest.importorskip("sentence_transformers")
    monkeypatch.setenv("UWE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(peers.Path(__file__).resolve().parents[1] / "experiments" / "bench"))
    import bench_peers

    out = tmp_path / "bench_peers.md"
    argv = ["--model", str(tiny_model_dir), "--sizes", "500", "2000", "--queries", "4", "--slow-queries", "2",
            "--batch", "8", "--tasks", "JobNorm", "--e2e-queries", "3", "--backends", "torch", "torch_int8",
            "--synthetic", "3000", "--synthetic-queries", "3", "--candidates", "200", "--scratch",
            str(tmp_path / "scratch")]
    prepared = bench_peers.main([*argv, "--prepare"])["prepare"]  # builds, times nothing, writes no report
    assert [Path(p).is_file() for p in prepared["synthetic"]] == [True] and not out.exists()
    result = bench_peers.main([*argv, "--out", str(out)])
    assert out.is_file() and out.with_suffix(".json").is_file()
    assert (tmp_path / "bench_peers_latency_vs_targets.png").is_file()
    saved = json.loads(out.with_suffix(".json").read_text())
    assert set(saved["sections"]) == {"scoring", "e2e", "scale"}
    for size in ("500", "2000"):
        mean = result["scoring"]["points"]["mean"][size]
        for method in ("reference path (before)", "sentence-transformers semantic_search", "FAISS IndexFlatIP"):
            assert mean[method]["top10_agreement"] == 1.0, method
        assert result["scoring"]["points"]["softmax"][size]["reference path (before)"]["top10_agreement"] == 1.0
    scale = result["scale"]["sizes"]["3000"]
    assert 0.0 <= scale["scorers"]["maxsim"]["recall@10"] <= 1.0 and scale["file_bytes"] > 0
    assert "torch_int8" in result["e2e"]["summary"]["mean"]
    assert sys.modules["bench_peers"].markdown(saved).startswith("# Ranking side by side")


def test_where_the_time_goes_trusts_other_processes_cpu_over_the_load_average():
    """Our own threads raise the load average (1.9 after the previous step); what competed with the timings is
    the other processes' CPU. A run that did not measure it falls back to its load average."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "experiments" / "fast" / "where_the_time_goes.py"
    spec = importlib.util.spec_from_file_location("where_the_time_goes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run = {"load_start": [1.9], "others_cpus": 0.03, "sections": {"scoring": {"others_cpus": 0.05}}}
    assert module.quiet(run, max_load=1.0)
    run["sections"]["e2e"] = {"others_cpus": 0.6}  # one busy section is enough to withhold the timings
    assert not module.quiet(run, max_load=1.0)
    assert not module.quiet({"load_start": [1.9]}, max_load=1.0)
    assert module.quiet({"load_start": [0.3]}, max_load=1.0)
    assert not module.quiet(None, max_load=1.0)
