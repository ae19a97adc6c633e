"""LanceDB's own multi-vector MaxSim as the candidate generator for the token scorers (issue 35), engine level.

On the token-level space of ``late_interaction.py`` (the real token-encoded labels + token-level combinations, the
same seeded space), one Lance table with the fp16 token embeddings as a multi-vector column, searched with each
query's token embeddings (cosine: Lance sums, over the query tokens, the best cosine among a row's tokens, which
orders rows as our ``maxsim`` scorer does). Per search setting and candidate count: the share of the exact MaxSim
top 10 (numpy over the whole space) among the engine's candidates (= recall@10 after exact re-scoring of them),
and the p50 of one search. ``--flat``: no index (an exact scan); else an ``IVF_HNSW_SQ`` index over all tokens
with ``--partitions`` partitions, searched with each ``--nprobes`` and ``ef = 10 x candidates`` (Lance 0.40
refuses a smaller ``ef`` on a multi-vector index).

    python experiments/bench/multivector_probe.py --real outputs/scale_vectors --work outputs/scale_vectors/mv --queries 10 --flat
    python experiments/bench/multivector_probe.py --real outputs/scale_vectors --work outputs/scale_vectors/mv --queries 10 \
        --partitions 552 --nprobes 20 60 220
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments.bench.late_interaction import load_real, space  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--candidates", type=int, nargs="+", default=[10, 50, 200, 1000])
    parser.add_argument("--flat", action="store_true")
    parser.add_argument("--partitions", type=int, default=552)
    parser.add_argument("--nprobes", type=int, nargs="+", default=[20])
    args = parser.parse_args(argv)
    os.environ.setdefault("LANCE_LOG", "error")
    import lancedb
    import pyarrow as pa
    from lancedb.index import IvfHnswSq

    texts, tokens, queries = load_real(Path(args.real))
    texts, tokens = space(texts, tokens, args.n)
    hidden = tokens[0].shape[1]
    db = lancedb.connect(str(Path(args.work) / "db"))
    if "mv" not in db.table_names():
        start = time.perf_counter()
        offsets = np.concatenate([[0], np.cumsum([len(t) for t in tokens])]).astype(np.int32)
        flat = np.concatenate([t.numpy().astype(np.float16) for t in tokens]).reshape(-1)
        column = pa.ListArray.from_arrays(pa.array(offsets), pa.FixedSizeListArray.from_arrays(pa.array(flat), hidden))
        db.create_table("mv", pa.table({"row": np.arange(len(tokens), dtype=np.int64), "mv": column}))
        print(f"table: {len(tokens)} rows, {len(flat) // hidden} tokens, {time.perf_counter() - start:.1f} s", flush=True)
    table = db.open_table("mv")
    if not args.flat and not table.list_indices():
        start = time.perf_counter()
        table.create_index("mv", config=IvfHnswSq(distance_type="cosine", num_partitions=args.partitions))
        print(f"index: {args.partitions} partitions, {time.perf_counter() - start:.1f} s, load {os.getloadavg()}",
              flush=True)
    unit = np.concatenate([t.numpy().astype(np.float32) for t in tokens])
    unit /= np.linalg.norm(unit, axis=1, keepdims=True) + 1e-8
    starts = np.concatenate([[0], np.cumsum([len(t) for t in tokens])[:-1]])
    probes = [q.numpy() / (np.linalg.norm(q.numpy(), axis=1, keepdims=True) + 1e-8) for q in queries[: args.queries]]
    truth = [set(np.argsort(-np.maximum.reduceat(unit @ q.T, starts, axis=0).sum(1))[:10].tolist()) for q in probes]
    for nprobes in [None] if args.flat else args.nprobes:
        for count in args.candidates:
            recall, seconds = [], []
            for q, exact in zip(probes, truth, strict=True):
                start = time.perf_counter()
                search = table.search(q, vector_column_name="mv").distance_type("cosine").limit(count).select(["row"])
                if nprobes is not None:
                    search = search.nprobes(nprobes).ef(max(200, 10 * count))
                rows = search.to_arrow().column("row").to_pylist()
                seconds.append(time.perf_counter() - start)
                recall.append(len(set(rows) & exact) / 10)
            print(json.dumps({"index": "flat" if nprobes is None else f"IVF_HNSW_SQ/{args.partitions}",
                              "nprobes": nprobes, "candidates": count, "recall10_of_candidates":
                              round(float(np.mean(recall)), 3), "p50_ms": round(float(np.median(seconds)) * 1000, 1),
                              "load": round(os.getloadavg()[0], 2)}), flush=True)


if __name__ == "__main__":
    main()
