"""The re-check behind the engine choice of issue 35 (docs/how-to/serve.md): each candidate's embedded mode on
the same real MiniLM mean vectors (the cached scale space of experiments/bench/scale_texts.py).

Per engine: insert time (batches of 4,096), p50 of one top-``--candidates`` search, and recall@10 of the
candidates after exact re-scoring (cosine on the float32 vectors) against exact search of all ``--n`` vectors.
Engines: LanceDB (flat scan, IVF_HNSW_SQ, IVF_PQ), qdrant-client local mode, Milvus Lite (pymilvus). The issue's
own table has the 1M numbers; this only re-checks the embedded modes here, at ``--n``.

``python experiments/bench/engine_choice.py --n 100000 --out experiments/results/scale/engine_choice.md``
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from experiments.bench.scale_texts import query_titles, scale_texts  # noqa: E402

BATCH = 4096


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def lance(vectors, root: Path, index_type: str | None):
    import lancedb
    import pyarrow as pa

    db = lancedb.connect(str(root))
    n, dim = vectors.shape
    table = db.create_table("v", schema=pa.schema([pa.field("key", pa.int64()),
                                                   pa.field("vector", pa.list_(pa.float32(), dim))]))
    for s in range(0, n, BATCH):
        part = vectors[s : s + BATCH]
        table.add(pa.table({"key": np.arange(s, s + len(part)),
                            "vector": pa.FixedSizeListArray.from_arrays(pa.array(part.reshape(-1)), dim)}))
    if index_type:
        table.create_index(metric="dot", index_type=index_type, num_partitions=max(1, int(np.sqrt(n) / 2)))

    def search(q, c):
        query = table.search(q).distance_type("dot").limit(c).select(["key", "_distance"])
        if index_type:
            query = query.nprobes(20).refine_factor(1) if index_type == "IVF_PQ" else query.nprobes(20).ef(200)
        return query.to_arrow().column("key").to_numpy()

    return search


def qdrant(vectors, root: Path):
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(root))
    n, dim = vectors.shape
    client.create_collection("v", vectors_config=models.VectorParams(size=dim, distance=models.Distance.DOT))
    for s in range(0, n, BATCH):
        part = vectors[s : s + BATCH]
        client.upsert("v", points=models.Batch(ids=list(range(s, s + len(part))), vectors=part.tolist()))

    def search(q, c):
        return np.array([p.id for p in client.query_points("v", query=q.tolist(), limit=c).points])

    return search


def milvus(vectors, root: Path):
    from pymilvus import MilvusClient

    client = MilvusClient(str(root / "milvus.db"))
    n, dim = vectors.shape
    client.create_collection("v", dimension=dim, metric_type="IP", auto_id=False)
    for s in range(0, n, BATCH):
        part = vectors[s : s + BATCH]
        client.insert("v", [{"id": s + i, "vector": v.tolist()} for i, v in enumerate(part)])

    def search(q, c):
        hits = client.search("v", data=[q.tolist()], limit=c, output_fields=[])[0]
        return np.array([h["id"] for h in hits])

    return search


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--limit", type=int, default=None, help="only the first LIMIT vectors of the space")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--engines", nargs="+", default=["lance_flat", "lance_hnsw", "lance_pq", "qdrant_local",
                                                         "milvus_lite"])
    parser.add_argument("--cache", default="outputs/scale/cache")
    parser.add_argument("--work", default="outputs/scale/engine_choice")
    parser.add_argument("--out", default="experiments/results/scale/engine_choice.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    from uwe_lightning.ranking.ranker import Ranker

    queries = query_titles(n=args.queries)
    texts, _ = scale_texts(args.n, queries=queries)
    base = Ranker.from_pretrained("minilm", scorer="maxsim", batch_size=256)
    tokens = base.index(texts, cache_dir=args.cache)
    assert base.last_index_hit, "encode the space first: python experiments/bench/scale_texts.py --n N"
    offsets = tokens.offsets
    owner = torch.repeat_interleave(torch.arange(len(texts)), offsets.diff())
    sums = torch.zeros(len(texts), tokens.hidden_size).index_add_(0, owner, tokens.tokens.float())
    vectors = torch.nn.functional.normalize(sums, dim=-1).numpy().astype(np.float32)[: args.limit]
    qv = torch.nn.functional.normalize(torch.stack([t.mean(0) for t in base.embed(queries, side="query")]), dim=-1)
    qv = qv.numpy().astype(np.float32)
    truth = np.argsort(-(qv @ vectors.T), axis=1, kind="stable")[:, :10]
    rows = []
    for name in args.engines:
        root = Path(args.work) / name
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        load = uptime().split("load average:")[-1].strip()
        start = time.perf_counter()
        try:
            build = {"lance_flat": lambda r: lance(vectors, r, None),
                     "lance_hnsw": lambda r: lance(vectors, r, "IVF_HNSW_SQ"),
                     "lance_pq": lambda r: lance(vectors, r, "IVF_PQ"),
                     "qdrant_local": lambda r: qdrant(vectors, r),
                     "milvus_lite": lambda r: milvus(vectors, r)}[name]
            search = build(root)
        except Exception as err:  # an engine that cannot run here is a row of the table, not a crash
            rows.append(f"| {name} | failed: {type(err).__name__}: {str(err)[:120]} | | | | |")
            continue
        build = time.perf_counter() - start
        seconds, recall = [], []
        for q, t in zip(qv, truth, strict=True):
            t0 = time.perf_counter()
            found = search(q, args.candidates)
            seconds.append(time.perf_counter() - t0)
            rescored = found[np.argsort(-(vectors[found] @ q), kind="stable")[:10]]
            recall.append(len(set(rescored.tolist()) & set(t.tolist())) / 10)
        disk = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        rows.append(f"| {name} | {build:.1f} | {np.percentile(seconds, 50) * 1000:.2f} | {np.mean(recall):.4f} | "
                    f"{disk / 2**20:,.0f} MiB | `{load}` |")
        print(rows[-1], flush=True)
    text = "\n".join([
        f"# Engine re-check: {len(vectors):,} real MiniLM mean vectors, {len(queries)} JobNorm queries, "
        f"top {args.candidates} candidates re-scored exactly", "",
        f"Command: `python experiments/bench/engine_choice.py {' '.join(argv or sys.argv[1:])}`", "",
        "| engine (embedded mode) | insert + index s | p50 ms (one search) | recall@10 after re-score | disk | "
        "load average at start |", "|---|---|---|---|---|---|", *rows, "",
        f"`uptime` at end: `{uptime()}`", ""])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a", encoding="utf-8") as fh:  # one section per run (e.g. per --limit)
        fh.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
