"""Target indexes (uwe_lightning/ranking/index.py, engine.py): the exact in-memory index and the LanceDB engine
behind one interface, on a tiny space with the tiny test model.

The engine's embedded mode is real here (LanceDB on a temporary directory): with as many candidates as targets
and no ANN index its candidates are the whole space, so its ranking must equal the exact ranker's (identical
top-k for every scorer); a half-built index resumes, a mismatched model / scorer / width is refused with one
line, an index on a read-only disk opens read-only, and ``rank`` / ``serve`` select the backend by config.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.helpers.configs import rank_cfg
from tests.helpers.models import build_tiny_model
from tests.helpers.paths import MINI_DATA
from tests.helpers.tolerance import assert_close_to_scale
from uwe_lightning.io import ConfigError, DataError
from uwe_lightning.ranking.index import (
    ENGINE_ABOVE_GIB,
    ExactIndex,
    IndexMismatchError,
    ReadOnlyIndexError,
    check_index_settings,
    choose_backend,
)
from uwe_lightning.ranking.ranker import Ranker

pytest.importorskip("lancedb")
from uwe_lightning.ranking import engine as engine_lib  # noqa: E402
from uwe_lightning.ranking.engine import LanceIndex  # noqa: E402

TEXTS = [f"{a} {b} {c}" for a in ("python", "java", "sql", "nurse", "care")
         for b in ("data", "team", "lead", "cook", "sales") for c in ("engineer", "manager", "driver", "teacher")]
IDS = [f"t{i}" for i in range(len(TEXTS))]
QUERIES = ["python engineer", "nurse care patient", "truck driver", "sales marketing team", "cook food chef"]


@pytest.fixture(scope="module")
def rankers(tiny_model_dir: Path) -> dict[str, Ranker]:
    return {s: Ranker.from_pretrained(str(tiny_model_dir), scorer=s, device="cpu") for s in ("mean", "maxsim", "softmax")}


@pytest.mark.parametrize("scorer", ["mean", "maxsim", "softmax"])
def test_engine_at_full_candidate_count_ranks_as_the_exact_index(rankers, tmp_path, scorer):
    ranker = rankers[scorer]
    exact_scores, exact_top = ExactIndex.from_texts(ranker, IDS, TEXTS).search(QUERIES, k=10)
    engine = LanceIndex(ranker, tmp_path / "db", candidates=len(TEXTS))
    assert engine.build(IDS, TEXTS) == {"encoded": 100, "kept": 0, "deleted": 0, "ann": None}
    scores, top = engine.search(QUERIES, k=10)
    assert torch.equal(top, exact_top)  # identical top-k: recall@10 = 1.0
    assert_close_to_scale(scores, exact_scores)
    assert torch.equal(ranker.rank(QUERIES, engine, k=10)[1], exact_top)  # Ranker.rank takes an index too


def test_fewer_candidates_still_rank_exactly_among_them(rankers, tmp_path):
    ranker = rankers["maxsim"]
    engine = LanceIndex(ranker, tmp_path / "db", candidates=30)
    engine.build(IDS, TEXTS)
    scores, top = engine.search(QUERIES[:1], k=5)
    found = engine.candidates_of(ranker.embed(QUERIES[:1], side="query")[0], 30)
    columns = torch.tensor([IDS.index(i) for i in found.column("id").to_pylist()])
    sub_scores, sub_top = ExactIndex(ranker, [IDS[c] for c in columns], [TEXTS[c] for c in columns],
                                     ranker.index([TEXTS[c] for c in columns])).search(QUERIES[:1], k=5)
    assert sorted(top[0].tolist()) == sorted(columns[sub_top[0]].tolist())
    assert_close_to_scale(scores, sub_scores)


def test_token_candidates_from_the_engine_are_the_exact_maxsim_top_k(rankers, tmp_path):
    """``candidates_from=tokens``: the engine's own multi-vector MaxSim (a flat scan below ANN_MIN_ROWS) orders
    the rows as our ``maxsim`` scorer does, so re-scoring only k candidates already gives the exact top k."""
    ranker = rankers["maxsim"]
    _, exact_top = ExactIndex.from_texts(ranker, IDS, TEXTS).search(QUERIES, k=5)
    engine = LanceIndex(ranker, tmp_path / "db", candidates=5)
    assert engine.candidates_from == "tokens" and engine.search_column == "tokens"
    engine.build(IDS, TEXTS)
    assert torch.equal(engine.search(QUERIES, k=5)[1], exact_top)
    by_mean = LanceIndex(ranker, tmp_path / "db", candidates=5, candidates_from="mean")
    by_mean.attach(IDS, TEXTS)
    assert by_mean.search_column == "vector" and by_mean.search(QUERIES, k=5)[1].shape == (len(QUERIES), 5)


def test_token_candidates_need_a_token_scorer(rankers, tmp_path):
    with pytest.raises(ConfigError, match="candidates_from=tokens needs a token scorer"):
        LanceIndex(rankers["mean"], tmp_path / "db", candidates_from="tokens")
    with pytest.raises(ConfigError, match="index.candidates_from must be one of auto, mean, tokens"):
        LanceIndex(rankers["maxsim"], tmp_path / "db", candidates_from="maxsim")


def test_upsert_and_delete_by_id_agree_across_backends(rankers, tmp_path):
    ranker = rankers["mean"]
    exact = ExactIndex.from_texts(ranker, IDS, TEXTS)
    engine = LanceIndex(ranker, tmp_path / "db", candidates=1000)
    engine.build(IDS, TEXTS)
    for index in (exact, engine):
        index.upsert(["new", "t5"], ["truck driver truck", "nurse patient care"])
        index.delete(["t0", "t1"])
    assert engine.count() == exact.count() == len(TEXTS) + 1 - 2
    for index in (exact, engine):
        _, top = index.search(["truck driver", "patient care nurse"], k=3)
        ids = [[index.ids[p] for p in row] for row in top.tolist()]
        assert ids[0][0] == "new" and "t5" in ids[1] and not {"t0", "t1"} & set(sum(ids, []))
    reopened = LanceIndex(ranker, tmp_path / "db")
    reopened.load_catalogue()
    assert reopened.count() == len(TEXTS) - 1 and "new" in reopened.ids and "t0" not in reopened.ids


def test_a_half_built_index_resumes_and_encodes_only_the_rest(rankers, tmp_path):
    ranker = rankers["maxsim"]
    encoded: list[int] = []

    def failing_after_two(texts):
        if len(encoded) == 2:
            raise KeyboardInterrupt("the build was interrupted")
        encoded.append(len(texts))
        return ranker.embed(texts)

    with pytest.raises(KeyboardInterrupt):
        LanceIndex(ranker, tmp_path / "db", build_batch=16, embed_fn=failing_after_two).build(IDS, TEXTS)
    assert encoded == [16, 16]
    resumed = LanceIndex(ranker, tmp_path / "db", build_batch=16, candidates=1000)
    assert resumed.count() == 32
    assert resumed.build(IDS, TEXTS)["encoded"] == len(TEXTS) - 32
    assert resumed.count() == len(TEXTS)
    _, top = resumed.search(QUERIES, k=10)
    assert torch.equal(top, ExactIndex.from_texts(ranker, IDS, TEXTS).search(QUERIES, k=10)[1])
    # A changed text is re-encoded, a dropped id deleted, the rest kept.
    texts = [*TEXTS[:-1], "java sql engineer"]
    assert resumed.build(IDS[1:], texts[1:]) == {"encoded": 1, "kept": len(TEXTS) - 2, "deleted": 1, "ann": None}


def test_a_mismatched_model_or_scorer_is_refused_in_one_line(rankers, tmp_path):
    LanceIndex(rankers["maxsim"], tmp_path / "db").build(IDS, TEXTS)
    other = Ranker.from_pretrained(str(build_tiny_model(tmp_path / "other", seed=1)), scorer="maxsim", device="cpu")
    wider = Ranker.from_pretrained(str(build_tiny_model(tmp_path / "wide", hidden=48)), scorer="maxsim", device="cpu")
    for ranker, field in ((other, "model"), (wider, "hidden_size 32 != 48"), (rankers["softmax"], "scorer 'maxsim'")):
        with pytest.raises(IndexMismatchError) as err:
            LanceIndex(ranker, tmp_path / "db")
        assert field in str(err.value) and "\n" not in str(err.value)
    ExactIndex.from_texts(rankers["mean"], IDS, TEXTS).save(tmp_path / "exact")
    with pytest.raises(IndexMismatchError, match="scorer 'mean' != 'maxsim'"):
        ExactIndex.open(rankers["maxsim"], tmp_path / "exact")
    assert ExactIndex.open(rankers["mean"], tmp_path / "exact").search(QUERIES, k=3)[1].shape == (5, 3)


def test_an_index_on_a_read_only_disk_opens_read_only(rankers, tmp_path, monkeypatch):
    ranker = rankers["mean"]
    LanceIndex(ranker, tmp_path / "db", candidates=1000).build(IDS, TEXTS)
    before = sorted((str(p), p.stat().st_mtime_ns) for p in (tmp_path / "db").rglob("*"))
    real_access = os.access
    monkeypatch.setattr(engine_lib.os, "access",  # root ignores permissions: the disk is made read-only here
                        lambda path, mode: False if mode == os.W_OK else real_access(path, mode))
    index = LanceIndex(ranker, tmp_path / "db")
    assert index.read_only
    index.attach(IDS, TEXTS)
    _, top = index.search(QUERIES, k=5)
    assert torch.equal(top, ExactIndex.from_texts(ranker, IDS, TEXTS).search(QUERIES, k=5)[1])
    assert index.build(IDS, TEXTS)["encoded"] == 0  # nothing to write: fine
    for write in (lambda: index.upsert(["x"], ["python"]), lambda: index.delete(["t0"]),
                  lambda: index.build(IDS[1:], TEXTS[1:])):
        with pytest.raises(ReadOnlyIndexError, match="open read-only"):
            write()
    assert sorted((str(p), p.stat().st_mtime_ns) for p in (tmp_path / "db").rglob("*")) == before
    with pytest.raises(ConfigError, match="does not exist"):
        LanceIndex(ranker, tmp_path / "db", table="never_built")


def test_duplicate_ids_are_refused(rankers, tmp_path):
    with pytest.raises(DataError, match="target id 't1' is listed twice"):
        LanceIndex(rankers["mean"], tmp_path / "db").build(["t0", "t1", "t1"], ["a", "b", "c"])


def test_backend_choice_and_settings():
    limit = int(ENGINE_ABOVE_GIB * 2**30)
    assert choose_backend("auto", 10**6, space_bytes=limit) == "exact"
    assert choose_backend("auto", 10, space_bytes=limit + 1) == "lancedb"  # memory decides, not the count
    assert choose_backend("auto", 300_000, engine_above=250_000, space_bytes=1) == "lancedb"  # a count, if given
    assert choose_backend("auto", 250_000, engine_above=250_000, space_bytes=limit * 9) == "exact"
    assert choose_backend("exact", 10**9, space_bytes=limit * 9) == "exact"
    with pytest.raises(ConfigError, match="index.engine_above_gib must be a number > 0"):
        check_index_settings({"backend": "auto", "engine_above_gib": 0})
    with pytest.raises(ConfigError, match="index.backend must be one of auto, exact, lancedb"):
        check_index_settings({"backend": "faiss"})
    with pytest.raises(ConfigError, match="index.candidates"):
        check_index_settings({"backend": "lancedb", "candidates": 0})
    check_index_settings({"backend": "lancedb", "nprobes": None, "probe_fraction": 0.4, "token_probe_fraction": 0.04,
                          "candidates_from": "tokens"})
    for key in ("probe_fraction", "token_probe_fraction"):
        for bad in (0, 1.5, "half", True):
            with pytest.raises(ConfigError, match=rf"index.{key} must be a number in \(0, 1\]"):
                check_index_settings({"backend": "lancedb", key: bad})
    with pytest.raises(ConfigError, match="index.candidates_from must be one of auto, mean, tokens"):
        check_index_settings({"backend": "lancedb", "candidates_from": "colbert"})
    with pytest.raises(ConfigError, match="index.nprobes"):
        check_index_settings({"backend": "lancedb", "nprobes": 0})


def test_an_unset_nprobes_probes_a_share_of_the_partitions():
    """A fixed probe count loses recall as the space grows (20 of 500 partitions found 0.78 of the exact top 10
    at 1M); left unset it follows the index's partition count."""
    from uwe_lightning.ranking.engine import PROBE_FRACTION, ann_partitions, probes_for

    assert [ann_partitions(n) for n in (50_000, 100_000, 1_000_000, 10_000_000)] == [111, 158, 500, 1581]
    assert probes_for(ann_partitions(1_000_000)) == 200 == PROBE_FRACTION * 500
    assert probes_for(1581, fraction=0.1) == 159 and probes_for(111, fraction=0.001) == 1
    assert probes_for(1581, nprobes=7) == 7


def test_rank_cli_on_the_engine_gives_the_exact_ranking(tiny_model_dir, tmp_path):
    from uwe_lightning.cli.rank import run

    args = (f"paths.data_dir={MINI_DATA}", "targets=esco_skills", "scorer=maxsim", "k=5",
            "queries=[software engineer,nurse]")
    exact = run(rank_cfg(tiny_model_dir, tmp_path / "a", *args), tmp_path / "a" / "out")
    engine = run(rank_cfg(tiny_model_dir, tmp_path / "b", *args, "index.backend=lancedb", "index.candidates=50"),
                 tmp_path / "b" / "out")
    assert engine["targets"]["index"]["backend"] == "lancedb" and exact["targets"]["index"]["backend"] == "exact"
    assert str(tmp_path / "b" / "cache") in engine["targets"]["index"]["uri"]
    assert [[t["id"] for t in r["top"]] for r in engine["results"]] == \
        [[t["id"] for t in r["top"]] for r in exact["results"]]
    with pytest.raises(ConfigError, match="index.backend must be one of"):
        run(rank_cfg(tiny_model_dir, tmp_path / "c", *args, "index.backend=milvus"), tmp_path / "c" / "out")


def test_serve_on_the_engine(tiny_model_dir, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tests.helpers.configs import tool_cfg
    from uwe_lightning.cli.serve import build_app

    cfg = tool_cfg("serve", tiny_model_dir, tmp_path, f"paths.data_dir={MINI_DATA}", "targets=[esco_skills]",
                   "scorer=maxsim", "index.backend=lancedb")
    app = build_app(cfg)
    space = app.state.spaces["esco_skills"]
    assert space.encoded.backend == "lancedb"
    with TestClient(app, base_url="http://localhost:8080") as client:
        answer = client.post("/rank", json={"queries": ["software engineer"], "k": 3}).json()
    exact = ExactIndex.from_texts(app.state.ranker, space.ids, space.labels)
    _, top = exact.search(["software engineer"], k=3)
    assert [row["id"] for row in answer["results"][0]["top"]] == [space.ids[p] for p in top[0].tolist()]


@pytest.mark.slow
def test_a_100k_space_builds_with_an_ann_index_and_keeps_recall(tiny_model_dir, tmp_path):
    """100k generated texts (combinations of the tiny vocabulary) through the engine: the ANN index is built
    and the re-scored top 10 stays close to exact (about 3 min on 2 cores)."""
    import itertools

    words = ["python", "java", "sql", "data", "team", "lead", "develop", "software", "engineer", "nurse", "care",
             "patient", "teacher", "sales", "marketing", "customer", "service", "report", "cook", "food", "chef",
             "truck", "driver", "build", "construction", "safety", "plan", "project", "manager", "skills"]
    texts = [" ".join(c) for c in itertools.islice(itertools.permutations(words, 4), 100_000)]
    ids = [f"g{i}" for i in range(len(texts))]
    ranker = Ranker.from_pretrained(str(tiny_model_dir), scorer="mean", device="cpu", batch_size=512)
    engine = LanceIndex(ranker, tmp_path / "db", candidates=200)
    assert engine.build(ids, texts)["ann"] == engine_lib.ANN_INDEX
    queries = ["python data engineer", "nurse patient care", "truck driver safety", "sales customer service"]
    _, top = engine.search(queries, k=10)
    _, exact = ExactIndex.from_texts(ranker, ids, texts).search(queries, k=10)
    recall = sum(len(set(a) & set(b)) for a, b in zip(top.tolist(), exact.tolist(), strict=True)) / exact.numel()
    assert recall >= 0.9, recall
    wide = engine.search(queries[:1], k=10, candidates=engine.ef + 100)[1]  # more candidates than the HNSW list
    assert wide.shape == (1, 10) and (wide >= 0).all()


def test_rank_cli_refuses_an_index_of_another_scorer_with_one_line_and_exit_2(tiny_model_dir, tmp_path, capsys):
    """The same index.uri / index.table opened by a ranker of another scorer: refused before any write."""
    from uwe_lightning.cli.errors import USER_ERROR_EXIT, run_reporting_user_errors
    from uwe_lightning.cli.rank import run

    args = (f"paths.data_dir={MINI_DATA}", "targets=esco_skills", "k=3", "queries=[software engineer]",
            "index.backend=lancedb", f"index.uri={tmp_path / 'shared'}", "index.table=skills")
    run(rank_cfg(tiny_model_dir, tmp_path / "a", *args, "scorer=maxsim"), tmp_path / "a" / "out")
    before = sorted((str(p), p.stat().st_mtime_ns) for p in (tmp_path / "shared").rglob("*"))
    cfg = rank_cfg(tiny_model_dir, tmp_path / "b", *args, "scorer=softmax")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        run_reporting_user_errors("rank", lambda: run(cfg, tmp_path / "b" / "out"))
    assert exit_.value.code == USER_ERROR_EXIT == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[rank] error")]
    assert len(err) == 1 and "scorer 'maxsim' != 'softmax'" in err[0] and "skills" in err[0], err
    assert sorted((str(p), p.stat().st_mtime_ns) for p in (tmp_path / "shared").rglob("*")) == before


def test_auto_estimates_the_exact_index_memory_before_encoding(tiny_model_dir):
    """A pooled space holds one vector per target, a token-level one a vector per token: the same texts weigh
    more for ``maxsim``, by the sampled token count; ``auto`` compares that with ``index.engine_above_gib``."""
    from uwe_lightning.ranking.backends import estimated_space_bytes

    texts = ["data engineer", "registered nurse in a surgical ward", "welder"] * 700
    mean = Ranker.from_pretrained(str(tiny_model_dir), scorer="mean")
    maxsim = Ranker.from_pretrained(str(tiny_model_dir), scorer="maxsim")
    hidden, per_value = mean._hidden_size(), 2 + (2 if mean.target_precision == "fp16" else 4)
    assert estimated_space_bytes(mean, texts) == len(texts) * hidden * per_value
    lengths = [len(maxsim.encoder.tokenizer(t)["input_ids"]) for t in texts[:3]]
    per_value = 2 + (2 if maxsim.target_precision == "fp16" else 4)  # packed fp16 + the prepared copy
    expected = len(texts) * (sum(lengths) / 3) * hidden * per_value
    assert estimated_space_bytes(maxsim, texts) == pytest.approx(expected, rel=0.01)
    assert estimated_space_bytes(maxsim, texts) > estimated_space_bytes(mean, texts)


def test_the_memory_estimate_needs_no_hugging_face_tokenizer(tiny_model_dir):
    """An encoder without a ``tokenizer`` (a wrapped sentence-transformers model, say) gets a word-count estimate
    instead of an AttributeError."""
    from types import SimpleNamespace

    from uwe_lightning.ranking.backends import estimated_space_bytes

    maxsim = Ranker.from_pretrained(str(tiny_model_dir), scorer="maxsim")
    hidden, per_value = maxsim._hidden_size(), 2 + (2 if maxsim.target_precision == "fp16" else 4)
    bare = SimpleNamespace(pooled=maxsim.pooled, target_precision=maxsim.target_precision, encoder=object(),
                           effective_max_length=maxsim.effective_max_length, _hidden_size=maxsim._hidden_size)
    texts = ["data engineer", "registered nurse"] * 10  # 2 words each: 1.3 * 2 + 2 = 4.6 tokens
    assert estimated_space_bytes(bare, texts) == pytest.approx(20 * 4.6 * hidden * per_value, abs=1)  # int() of a float
