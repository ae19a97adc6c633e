"""The measured engine comparison behind issue 35's choice (docs/how-to/serve.md, "Large target spaces"):
LanceDB vs Qdrant (qdrant-client local mode) vs Milvus Lite (pymilvus), each embedded, on the same vectors.

Vectors (``prepare``): real MiniLM mean vectors (unit length) from ``--real`` files: a target cache of pooled
MiniLM rows (``*.safetensors``, e.g. the 13,939 ESCO skills a WorkBench evaluation cached) and / or token-level
chunks of :mod:`experiments.bench.real_vectors` (the mean of each text's token embeddings). Exact duplicates
(cosine > 0.9999) are kept once. Above the real count the space is **augmented by combination**: target ``i``
is ``normalize((r_a + r_b) / 2 + e)`` for a seeded random pair ``a != b`` of real vectors and Gaussian noise
``e`` of norm ~``--noise`` (0.1: each dimension ``N(0, noise^2 / 384)``), so no augmented vector copies a
real one and the neighbourhoods stay those of real embeddings (mixtures of two real texts, like the
``"<title> - <skill>"`` texts of ``scale_texts.py``). Queries: 200 JobNorm test titles embedded on the query
side (``real_vectors.py`` writes them), mean-pooled and normalised. Truth: exact fp32 top 10 by dot product.

Per engine, in its own process (``child``), so each one's memory is its own: build (insert in batches +
its index) seconds and peak RSS; then a *second* fresh process reopens the persisted index from disk and
measures what serving costs: RSS after the searches, p50 / p95 of one top-10 search (single query),
recall@10 of the engine's own top 10, and recall@10 after exact re-scoring of its top ``--candidates``
(what :class:`~uwe_lightning.ranking.engine.LanceIndex` does), and the index's bytes on disk.

``python experiments/bench/engine_choice.py --n 100000 --real outputs/scale_vectors`` (see
experiments/results/scale/README.md for the runs and their load).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
ENGINES = ("exact_numpy", "lance_flat", "lance_hnsw", "lance_pq", "qdrant_local", "milvus_lite")
BATCH = 10_000


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def report_head(title: str, run: dict) -> list[str]:
    """The first lines of a benchmark's markdown report: title, the command, ``uptime`` at start and at end."""
    return [f"# {title}", "", f"Command: `{run['command']}`", "", f"`uptime` at start: `{run['uptime_start']}`",
            f"`uptime` at end: `{run.get('uptime_end', '(running)')}`", ""]


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mib() -> float:
    return _status_mib("VmRSS")


def peak_mib() -> float:
    """This process's RSS high-water mark (VmHWM starts anew at exec; ru_maxrss keeps the forking parent's)."""
    return _status_mib("VmHWM")


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)).astype(np.float32)


# -- vectors -------------------------------------------------------------------------------------------------

def real_vectors(sources: list[str]) -> tuple[np.ndarray, dict]:
    """Unit mean vectors from target caches (pooled rows) and real_vectors.py chunks, duplicates once."""
    parts, counts = [], {}
    for source in sources:
        path = Path(source)
        files = sorted(path.glob("chunks/c*.npz")) if path.is_dir() else [path]
        for file in files:
            if file.suffix == ".safetensors":
                from safetensors.numpy import load_file

                rows = load_file(str(file))["tokens"].astype(np.float32)
            else:
                data = np.load(file)
                tokens, lengths = data["tokens"].astype(np.float32), data["lengths"]
                owner = np.repeat(np.arange(len(lengths)), lengths)
                rows = np.zeros((len(lengths), tokens.shape[1]), np.float32)
                np.add.at(rows, owner, tokens)
            parts.append(unit(rows))
            counts[str(file)] = len(rows)
    vectors = np.concatenate(parts)
    keep = np.ones(len(vectors), bool)
    for start in range(0, len(vectors), 4096):  # drop rows equal to an earlier row
        sims = vectors[start : start + 4096] @ vectors[: start + 4096].T
        for i in range(sims.shape[0]):
            row = start + i
            if keep[row] and (sims[i, :row] > 0.9999).any():
                keep[row] = False
    return vectors[keep], {"files": counts, "distinct": int(keep.sum()), "duplicates": int((~keep).sum())}


def augment(real: np.ndarray, n: int, noise: float, seed: int = 0) -> np.ndarray:
    """``real`` then ``n - len(real)`` combinations (module docstring); all unit length."""
    if n <= len(real):
        return real[:n]
    rng = np.random.default_rng(seed)
    dim = real.shape[1]
    out = np.empty((n, dim), np.float32)
    out[: len(real)] = real
    for start in range(len(real), n, 100_000):
        m = min(100_000, n - start)
        a = rng.integers(0, len(real), m)
        b = (a + rng.integers(1, len(real), m)) % len(real)  # never the same vector twice
        mix = (real[a] + real[b]) / 2 + rng.normal(0, noise / np.sqrt(dim), (m, dim)).astype(np.float32)
        out[start : start + m] = unit(mix)
    return out


def query_vectors(real_dir: str) -> np.ndarray:
    data = np.load(Path(real_dir) / "queries.npz")
    tokens, lengths = data["tokens"].astype(np.float32), data["lengths"]
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return unit(np.stack([tokens[a:b].mean(0) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]))


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    scores = np.concatenate([queries @ vectors[s : s + 200_000].T for s in range(0, len(vectors), 200_000)], 1)
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable")
    return np.take_along_axis(top, order, 1)


def prepare(args) -> dict:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    real, info = real_vectors(args.real)
    vectors = augment(real, args.n, args.noise)
    queries = query_vectors(args.queries_from or args.real[-1])[: args.queries]
    np.save(work / f"space_{args.n}.npy", vectors)
    np.save(work / f"queries_{args.n}.npy", queries)
    np.save(work / f"truth_{args.n}.npy", exact_top(vectors, queries, 10))
    info.update(n=args.n, real_used=int(min(len(real), args.n)), augmented=int(max(0, args.n - len(real))),
                noise=args.noise, queries=len(queries))
    return info


# -- engines (each: build(vectors, root) -> None; open(root) -> search(q, k) -> ids) ---------------------------

def lance_build(vectors, root: Path, index_type: str | None) -> None:
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
    if index_type:  # the partitioning LanceIndex.refresh_ann uses
        from uwe_lightning.ranking.engine import ann_partitions

        table.create_index(metric="dot", index_type=index_type, num_partitions=ann_partitions(n))


def lance_open(root: Path, index_type: str | None, nprobes: int, ef: int):
    import lancedb

    table = lancedb.connect(str(root)).open_table("v")

    def search(q, k):
        query = table.search(q).distance_type("dot").limit(k).select(["key"])
        if index_type == "IVF_PQ":
            query = query.nprobes(nprobes).refine_factor(10)
        elif index_type:
            query = query.nprobes(nprobes).ef(max(ef, k))
        return query.to_arrow().column("key").to_numpy()

    return search


def qdrant_build(vectors, root: Path) -> None:
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(root))
    client.create_collection("v", vectors_config=models.VectorParams(size=vectors.shape[1],
                                                                     distance=models.Distance.DOT))
    for s in range(0, len(vectors), BATCH):
        part = vectors[s : s + BATCH]
        client.upsert("v", points=models.Batch(ids=list(range(s, s + len(part))), vectors=part.tolist()))
    client.close()


def qdrant_open(root: Path):
    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(root))

    def search(q, k):
        return np.array([p.id for p in client.query_points("v", query=q.tolist(), limit=k).points])

    return search


def milvus_build(vectors, root: Path) -> None:
    from pymilvus import MilvusClient

    client = MilvusClient(str(root / "milvus.db"))
    client.create_collection("v", dimension=vectors.shape[1], metric_type="IP", auto_id=False)
    for s in range(0, len(vectors), BATCH):
        part = vectors[s : s + BATCH]
        client.insert("v", [{"id": s + i, "vector": v} for i, v in enumerate(part.tolist())])
    client.flush("v")
    client.close()


def milvus_open(root: Path):
    from pymilvus import MilvusClient

    client = MilvusClient(str(root / "milvus.db"))
    client.load_collection("v")

    def search(q, k):
        return np.array([h["id"] for h in client.search("v", data=[q.tolist()], limit=k, output_fields=[])[0]])

    return search


def exact_open(space: Path):
    vectors = np.load(space)  # the in-memory floor: the fp32 matrix

    def search(q, k):
        scores = vectors @ q
        top = np.argpartition(-scores, k)[:k]
        return top[np.argsort(-scores[top], kind="stable")]

    return search


def build(name: str, vectors, root: Path) -> None:
    {"exact_numpy": lambda: None,
     "lance_flat": lambda: lance_build(vectors, root, None),
     "lance_hnsw": lambda: lance_build(vectors, root, "IVF_HNSW_SQ"),
     "lance_pq": lambda: lance_build(vectors, root, "IVF_PQ"),
     "qdrant_local": lambda: qdrant_build(vectors, root),
     "milvus_lite": lambda: milvus_build(vectors, root)}[name]()


def open_engine(name: str, root: Path, space: Path, nprobes: int, ef: int):
    return {"exact_numpy": lambda: exact_open(space),
            "lance_flat": lambda: lance_open(root, None, nprobes, ef),
            "lance_hnsw": lambda: lance_open(root, "IVF_HNSW_SQ", nprobes, ef),
            "lance_pq": lambda: lance_open(root, "IVF_PQ", nprobes, ef),
            "qdrant_local": lambda: qdrant_open(root),
            "milvus_lite": lambda: milvus_open(root)}[name]()


def child(args) -> dict:
    """One engine, one phase (``build`` or ``query``), measured in this process."""
    work, name = Path(args.work), args.child
    root = work / f"{name}_{args.n}"
    space = work / f"space_{args.n}.npy"
    if args.phase == "build":
        vectors = np.load(space)
        base = rss_mib()
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        start = time.perf_counter()
        build(name, vectors, root)
        seconds = time.perf_counter() - start
        return {"build_s": round(seconds, 1),
                "inserts_per_s": None if name == "exact_numpy" else round(len(vectors) / max(seconds, 1e-9)),
                "build_peak_rss_mib": round(peak_mib()), "vectors_rss_mib": round(base)}
    queries = np.load(work / f"queries_{args.n}.npy")
    truth = np.load(work / f"truth_{args.n}.npy")
    vectors = np.load(space, mmap_mode="r")  # re-scoring reads only the candidates' rows
    start = time.perf_counter()
    search = open_engine(name, root, space, args.nprobes, args.ef)
    for q in queries[:5]:  # warm-up: the first searches page the index in
        search(q, 10)
    open_s = time.perf_counter() - start
    seconds, recall, rescored = [], [], []
    for q, t in zip(queries, truth, strict=True):
        t0 = time.perf_counter()
        found = search(q, 10)
        seconds.append(time.perf_counter() - t0)
        recall.append(len(set(found.tolist()) & set(t.tolist())) / 10)
    cand_seconds = []
    for q, t in zip(queries, truth, strict=True):
        t0 = time.perf_counter()
        found = search(q, args.candidates)
        cand_seconds.append(time.perf_counter() - t0)
        rows = np.sort(found)
        best = rows[np.argsort(-(np.asarray(vectors[rows]) @ q), kind="stable")[:10]]
        rescored.append(len(set(best.tolist()) & set(t.tolist())) / 10)
    disk = (space.stat().st_size if name == "exact_numpy"
            else sum(p.stat().st_size for p in root.rglob("*") if p.is_file()))
    return {"open_s": round(open_s, 2), "p50_ms": round(float(np.percentile(seconds, 50)) * 1000, 3),
            "p95_ms": round(float(np.percentile(seconds, 95)) * 1000, 3), "recall10": round(float(np.mean(recall)), 4),
            f"p50_ms_top{args.candidates}": round(float(np.percentile(cand_seconds, 50)) * 1000, 3),
            f"recall10_rescored_top{args.candidates}": round(float(np.mean(rescored)), 4),
            "serve_rss_mib": round(rss_mib()), "serve_peak_rss_mib": round(peak_mib()),
            "disk_mib": round(disk / 2**20, 1)}


# -- multi-vector probe -----------------------------------------------------------------------------------------

def probe_multivector(work: Path) -> dict:
    """Does the engine's embedded mode rank 4 multi-vector documents by MaxSim natively (checked against
    MaxSim computed here)?"""
    rng = np.random.default_rng(0)
    docs = [unit(rng.normal(size=(n, 8))) for n in (3, 5, 2, 4)]
    q = unit(rng.normal(size=(2, 8)))
    truth = np.argsort([-(q @ d.T).max(1).sum() for d in docs], kind="stable").tolist()
    root = work / "probe"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    out = {}
    try:
        import lancedb
        import pyarrow as pa

        table = lancedb.connect(str(root / "l")).create_table("m", pa.table({
            "id": list(range(4)), "mv": pa.array([d.tolist() for d in docs], type=pa.list_(pa.list_(pa.float32(), 8)))}))
        got = table.search(q.tolist(), vector_column_name="mv").distance_type("cosine").limit(4).to_arrow()
        out["lancedb"] = "MaxSim (cosine), matches" if got.column("id").to_pylist() == truth else "MaxSim: wrong order"
    except Exception as err:  # a capability that is missing is a result
        out["lancedb"] = f"no: {type(err).__name__}: {str(err)[:100]}"
    try:
        from qdrant_client import QdrantClient, models

        client = QdrantClient(path=str(root / "q"))
        client.create_collection("m", vectors_config=models.VectorParams(
            size=8, distance=models.Distance.DOT,
            multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM)))
        client.upsert("m", points=[models.PointStruct(id=i, vector=d.tolist()) for i, d in enumerate(docs)])
        got = [p.id for p in client.query_points("m", query=q.tolist(), limit=4).points]
        out["qdrant_local"] = "MAX_SIM, matches" if got == truth else "MAX_SIM: wrong order"
        client.close()
    except Exception as err:
        out["qdrant_local"] = f"no: {type(err).__name__}: {str(err)[:100]}"
    try:
        from pymilvus import DataType, MilvusClient

        client = MilvusClient(str(root / "m.db"))
        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("v", DataType.FLOAT_VECTOR, dim=8)
        struct = MilvusClient.create_struct_field_schema()
        struct.add_field("emb", DataType.FLOAT_VECTOR, dim=8)
        schema.add_field("toks", datatype=DataType.ARRAY, element_type=DataType.STRUCT, struct_schema=struct,
                         max_capacity=16)
        params = client.prepare_index_params()
        params.add_index(field_name="v", index_type="FLAT", metric_type="IP")
        params.add_index(field_name="toks[emb]", index_type="HNSW", metric_type="MAX_SIM_IP")
        client.create_collection("m", schema=schema, index_params=params)
        out["milvus_lite"] = "struct-array MAX_SIM accepted (search not checked)"
    except Exception as err:
        out["milvus_lite"] = f"no: {type(err).__name__}: {str(err).strip()[:100]}"
    return out


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("lancedb", "pylance", "qdrant-client", "pymilvus", "milvus-lite", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--real", nargs="+", default=["outputs/scale_vectors"],
                        help="target caches (.safetensors, pooled) and / or real_vectors.py directories")
    parser.add_argument("--queries-from", default=None, help="directory with queries.npz (default: last --real)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--nprobes", type=int, default=20)
    parser.add_argument("--ef", type=int, default=200)
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--work", default="outputs/scale_vectors/work")
    parser.add_argument("--out", default="experiments/results/scale/engine_choice")
    parser.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=("build", "query"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("LANCE_LOG", "error")
    if args.child:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return
    command = "python experiments/bench/engine_choice.py " + " ".join(argv if argv is not None else sys.argv[1:])
    run = {"command": command, "uptime_start": uptime(), "versions": versions()}
    t0 = time.perf_counter()
    run["vectors"] = prepare(args)
    run["prepare_s"] = round(time.perf_counter() - t0, 1)
    run["multivector"] = probe_multivector(Path(args.work))
    print(json.dumps(run, indent=1), flush=True)
    rows = {}
    for name in args.engines:
        row = {"load_before": uptime().split("load average:")[-1].strip()}
        for phase in ("build", "query"):
            proc = subprocess.run([sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]),
                                   "--child", name, "--phase", phase], capture_output=True, text=True)
            result = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode or not result:
                row[f"{phase}_error"] = (proc.stderr.strip().splitlines() or ["?"])[-1][:200]
                break
            row.update(json.loads(result[-1][7:]))
        row["load_after"] = uptime().split("load average:")[-1].strip()
        rows[name] = row
        print(name, json.dumps(row), flush=True)
        run["engines"] = rows
        write(run, args)
    run["uptime_end"] = uptime()
    write(run, args)


def write(run: dict, args) -> None:
    out = Path(f"{args.out}_{args.n}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(run, indent=1) + "\n")
    c = args.candidates
    lines = [*report_head(f"Engine comparison at {args.n:,} targets (embedded modes, one machine)", run),
             f"Vectors: {json.dumps(run['vectors'])}", "", f"Versions: {json.dumps(run['versions'])}", "",
             f"Multi-vector probe: {json.dumps(run['multivector'])}", "",
             f"| engine | build s | inserts/s | build peak RSS MiB | p50 ms top-10 | p95 ms top-10 | recall@10 | "
             f"p50 ms top-{c} | recall@10 after exact re-score of top {c} | serving RSS MiB | disk MiB | load avg "
             "before -> after |", "|---|" + "---|" * 11]
    for name, r in run.get("engines", {}).items():
        if any(k.endswith("_error") for k in r):
            err = r.get("build_error") or r.get("query_error")
            lines.append(f"| {name} | failed: {err} |" + " |" * 10)
            continue
        lines.append(f"| {name} | {r.get('build_s', 0):,} | {r.get('inserts_per_s') or '-'} | "
                     f"{r.get('build_peak_rss_mib', '')} | {r['p50_ms']} | {r['p95_ms']} | {r['recall10']} | "
                     f"{r[f'p50_ms_top{c}']} | {r[f'recall10_rescored_top{c}']} | {r['serve_rss_mib']} | "
                     f"{r['disk_mib']} | {r['load_before']} -> {r['load_after']} |")
    lines += ["", "build peak RSS includes the fp32 vectors the benchmark holds to insert (`vectors_rss_mib` in the "
              "json); serving RSS is a fresh process that opened the index from disk and ran all searches "
              "(for exact_numpy: the fp32 matrix in memory, the floor). exact_numpy's 'disk' is its .npy file.", ""]
    out.with_suffix(".md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
