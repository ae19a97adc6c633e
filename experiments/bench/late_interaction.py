"""Late interaction on top of the engine (issue 35): LanceIndex candidates (from the mean vectors, or from the
engine's multi-vector MaxSim over the token embeddings: ``--candidates-from``), exact re-scoring with our scorer (``mean`` / ``maxsim`` / ``softmax``) from the token embeddings stored in the engine, vs exact
scoring of the whole space, as a function of the candidate count.

Space: the real texts encoded at token level by :mod:`experiments.bench.real_vectors` (MiniLM, ESCO labels in
a seeded random order), then, up to ``--n``, **token-level combinations**: target ``j`` is the text
``"<a> - <b>"`` of a seeded random pair of real texts, its token embeddings the real token embeddings of ``a``
followed by those of ``b`` (not re-encoded: MiniLM would contextualise the joined text; this keeps every token
embedding a real one and gives the pair's mixture as its mean vector). ``--n`` at or below the real count uses
real texts only. Queries: the 200 JobNorm test titles real_vectors.py embedded on the query side.

Per scorer: the engine table is built through :class:`~uwe_lightning.ranking.engine.LanceIndex` itself (its
``embed_fn`` reads the stored token embeddings instead of encoding), so the ANN index, the columns and the
re-scoring are the product's; truth is :meth:`Ranker.rank` on the whole packed space. ``maxsim`` and
``softmax`` read one token table (the bench swaps the ranker; the product keys a table by scorer).

``python experiments/bench/late_interaction.py --n 100000 --real outputs/scale_vectors``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments.bench.engine_choice import report_head, uptime  # noqa: E402


def load_real(real: Path) -> tuple[list[str], list[torch.Tensor], list[torch.Tensor]]:
    """Texts and fp16 token embeddings of every encoded chunk, and the query token embeddings."""
    meta = json.loads((real / "texts.json").read_text())
    texts, order = meta["texts"], meta["order"]
    out_texts, tokens = [], []
    for file in sorted((real / "chunks").glob("c*.npz")):
        chunk = int(file.stem[1:])
        data = np.load(file)
        parts = torch.from_numpy(data["tokens"]).split(data["lengths"].tolist())
        out_texts += [texts[i] for i in order[chunk * 2000 : chunk * 2000 + len(parts)]]
        tokens += list(parts)
    q = np.load(real / "queries.npz")
    queries = [t.float() for t in torch.from_numpy(q["tokens"]).split(q["lengths"].tolist())]
    return out_texts, tokens, queries


def space(texts, tokens, n: int, seed: int = 0):
    if n <= len(texts):
        return texts[:n], tokens[:n]
    rng = np.random.default_rng(seed)
    texts, tokens = list(texts), list(tokens)
    real = len(texts)
    seen = set(texts)
    while len(texts) < n:
        a, b = rng.integers(0, real, 2).tolist()
        text = f"{texts[a]} - {texts[b]}"
        if a != b and text not in seen:
            seen.add(text)
            texts.append(text)
            tokens.append(torch.cat([tokens[a], tokens[b]]))
    return texts, tokens


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--real", default="outputs/scale_vectors")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--candidates", type=int, nargs="+", default=[10, 25, 50, 100, 200, 500, 1000])
    parser.add_argument("--scorers", nargs="+", default=["mean", "maxsim", "softmax"])
    parser.add_argument("--work", default="outputs/scale_vectors/late")
    parser.add_argument("--candidates-from", default="auto", choices=["auto", "mean", "tokens"],
                        help="index.candidates_from: auto = tokens for maxsim / softmax, mean vectors for mean")
    parser.add_argument("--reuse", action="store_true",
                        help="keep a table an earlier run built (build then only checks ids and digests)")
    parser.add_argument("--out", default="experiments/results/scale/late_interaction")
    args = parser.parse_args(argv)
    os.environ.setdefault("LANCE_LOG", "error")
    torch.set_num_threads(2)
    from uwe_lightning.ranking.engine import LanceIndex
    from uwe_lightning.ranking.packed import EncodedTexts
    from uwe_lightning.ranking.ranker import Ranker

    run = {"command": "python experiments/bench/late_interaction.py " + " ".join(argv or sys.argv[1:]),
           "candidates_from": args.candidates_from,
           "uptime_start": uptime()}
    real_texts, real_tokens, queries = load_real(Path(args.real))
    texts, tokens = space(real_texts, real_tokens, args.n)
    queries = queries[: args.queries]
    ids = [f"t{i}" for i in range(len(texts))]
    memo = {t: tok for t, tok in zip(texts, tokens, strict=True)}
    run["space"] = {"n": len(texts), "real": min(len(real_texts), len(texts)),
                    "combined": max(0, len(texts) - len(real_texts)), "queries": len(queries),
                    "tokens": int(sum(len(t) for t in tokens))}
    rankers = {s: Ranker.from_pretrained("minilm", scorer=s, batch_size=256) for s in args.scorers}
    lengths = torch.tensor([len(t) for t in tokens])
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    run["scorers"] = {}
    engines: dict[str, LanceIndex] = {}
    for scorer in args.scorers:
        ranker = rankers[scorer]
        table = "pooled" if scorer == "mean" else "tokens"
        if table not in engines:
            root = Path(args.work) / f"{table}_{len(texts)}"
            if not args.reuse:
                shutil.rmtree(root, ignore_errors=True)
            start = time.perf_counter()
            engine = LanceIndex(ranker, root, build_batch=4096, candidates_from=args.candidates_from,
                                embed_fn=lambda batch: [memo[t].float() for t in batch])
            summary = engine.build(ids, texts)
            run[f"build_{table}"] = {"seconds": round(time.perf_counter() - start, 1), "ann": summary["ann"],
                                     "ann_on": engine.ann,
                                     "disk_mib": round(engine.disk_bytes() / 2**20, 1), "load": uptime()}
            engines[table] = engine
        engine = engines[table]
        engine.ranker = ranker  # one token table for maxsim and softmax (module docstring)
        if ranker.pooled("target"):
            full = ranker.pack(tokens, "target")
        else:
            full = EncodedTexts(torch.cat(tokens), offsets, pooled=False, model_id=ranker._identity())
        truth, exact_s = [], []
        for q in queries:
            packed = ranker.pack([q], "query")
            t0 = time.perf_counter()
            top = ranker.rank(packed, full, k=10)[1][0]
            exact_s.append(time.perf_counter() - t0)
            truth.append(set(top.tolist()))
        row = {"exact_p50_ms": round(float(np.percentile(exact_s, 50)) * 1000, 2),
               "exact_p95_ms": round(float(np.percentile(exact_s, 95)) * 1000, 2),
               "load_exact": uptime().split("load average:")[-1].strip(), "by_candidates": {}}
        for c in args.candidates:
            seconds, recall = [], []
            engine.search_embedded(queries[:3], k=10, candidates=c)  # warm-up
            for q, t in zip(queries, truth, strict=True):
                t0 = time.perf_counter()
                top = engine.search_embedded([q], k=10, candidates=c)[1][0]
                seconds.append(time.perf_counter() - t0)
                recall.append(len(set(top.tolist()) & t) / 10)
            row["by_candidates"][c] = {"recall10": round(float(np.mean(recall)), 4),
                                       "p50_ms": round(float(np.percentile(seconds, 50)) * 1000, 2),
                                       "p95_ms": round(float(np.percentile(seconds, 95)) * 1000, 2),
                                       "load": uptime().split("load average:")[-1].strip()}
            print(scorer, c, row["by_candidates"][c], flush=True)
            write(run | {"scorers": {**run["scorers"], scorer: row}}, args)
        run["scorers"][scorer] = row
        write(run, args)
    run["uptime_end"] = uptime()
    write(run, args)


def write(run: dict, args) -> None:
    out = Path(f"{args.out}_{run['space']['n']}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(run, indent=1) + "\n")
    lines = [*report_head(f"Late interaction on the engine at {run['space']['n']:,} targets", run),
             f"Space: {json.dumps(run['space'])}", "",
             f"Candidates from (`index.candidates_from`): {run.get('candidates_from', 'mean')}", "",
             *(f"Build ({k[6:]} table): {json.dumps(v)}" for k, v in run.items() if k.startswith("build_")), "",
             "| scorer | exact whole space p50 / p95 ms | candidates | recall@10 vs exact | p50 ms | p95 ms | "
             "load avg |", "|---|---|---|---|---|---|---|"]
    for scorer, row in run["scorers"].items():
        for c, r in row["by_candidates"].items():
            lines.append(f"| {scorer} | {row['exact_p50_ms']} / {row['exact_p95_ms']} | {c} | {r['recall10']} | "
                         f"{r['p50_ms']} | {r['p95_ms']} | {r['load']} |")
    lines += ["", "p50 / p95: one query (engine search of the candidates + reading their stored embeddings + exact "
              "re-scoring), single-threaded client, 2 torch threads; recall@10: overlap of the final top 10 with "
              "exact scoring of the whole space by the same scorer.", ""]
    out.with_suffix(".md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
