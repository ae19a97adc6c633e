"""``make bench-scale``: the in-memory exact index against the LanceDB engine on large real-text target spaces.

For ``--n`` targets (experiments/bench/scale_texts.py: every real text of the data pack, then title-skill
combinations where they run out), MiniLM on ``--threads`` cores, per scorer (mean, maxsim, softmax):

- build: the encoding throughput (once, shared by both backends: the encoded space is cached), then per backend
  the time to make it searchable (exact: pack the space; engine: insert in batches + the ANN index), its RAM
  (the packed tensors; the engine: the process's resident-set growth) and disk;
- search, one query at a time on pre-embedded queries (the query encoder costs the same for both): p50 / p95
  latency; for the engine per candidate count, and recall@10 of its re-scored top 10 against exact scoring of the
  whole space (ties broken the same way);
- the exact index against ranking the packed space directly (the interface's overhead, as a ratio, same run).

Writes ``<out>/scale_<n>.json`` and ``.md``, with ``uptime`` before and after each timed section.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from experiments.bench.scale_texts import query_titles, scale_texts  # noqa: E402


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3)}


def timed(fn, items, warmup: int = 3) -> tuple[list, list[float]]:
    for item in items[:warmup]:
        fn(item)
    out, seconds = [], []
    for item in items:
        start = time.perf_counter()
        out.append(fn(item))
        seconds.append(time.perf_counter() - start)
    return out, seconds


def recall_at(found: list[list[int]], truth: list[list[int]]) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--scorers", nargs="+", default=["mean", "maxsim", "softmax"])
    parser.add_argument("--candidates", type=int, nargs="+", default=[10, 20, 50, 100, 200, 500, 1000])
    parser.add_argument("--timed-candidates", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--cache", default="outputs/scale/cache")
    parser.add_argument("--db", default="outputs/scale/lancedb")
    parser.add_argument("--out", default="experiments/results/scale")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    for name in ("LANCE_CPU_THREADS", "LANCE_IO_THREADS"):  # the engine's own pools on the same cores
        os.environ.setdefault(name, str(args.threads))
    from uwe_lightning.ranking.engine import LanceIndex
    from uwe_lightning.ranking.index import ExactIndex
    from uwe_lightning.ranking.packed import EncodedTexts, memory_bytes
    from uwe_lightning.ranking.ranker import Ranker

    queries = query_titles(n=args.queries)
    texts, sources = scale_texts(args.n, queries=queries)
    ids = [f"s{i}" for i in range(len(texts))]
    base = Ranker.from_pretrained(args.model, scorer="maxsim", batch_size=256)
    report: dict = {"n": len(texts), "sources": sources, "model": args.model, "threads": args.threads,
                    "queries": len(queries), "machine": platform.processor() or platform.machine(),
                    "command": "python experiments/bench/bench_scale.py " + " ".join(argv or sys.argv[1:]),
                    "uptime": {"start": uptime()}}
    start = time.perf_counter()
    tokens = base.index(texts, cache_dir=args.cache, show_progress=True)  # token level, fp16, cached
    encode_log = Path(args.cache) / f"encode_{len(texts)}.json"
    report["encode"] = (json.loads(encode_log.read_text()) if base.last_index_hit and encode_log.is_file()
                        else {"seconds": round(time.perf_counter() - start, 1), "hit": base.last_index_hit})
    offsets = tokens.offsets.tolist()
    row_of = {t: i for i, t in enumerate(texts)}

    def stored_tokens(batch: list[str]) -> list[torch.Tensor]:  # the cached encoding, in place of the encoder
        return [tokens.tokens[offsets[row_of[t]] : offsets[row_of[t] + 1]].float() for t in batch]

    query_tokens = base.embed(queries, side="query")
    report["scorers"] = {}
    for scorer in args.scorers:
        ranker = base.with_scorer(scorer)
        entry: dict = {"uptime_before": uptime()}
        t0 = time.perf_counter()
        if ranker.pooled("target"):
            space = EncodedTexts.from_token_list(stored_tokens(texts), pooled=True, model_id=ranker._identity())
        else:
            space = tokens
        exact = ExactIndex(ranker, ids, texts, space)
        ranker.prepare(space)  # the fast path's layout, built once (what the first query would pay)
        entry["exact"] = {"build_s": round(time.perf_counter() - t0, 2), "ram_bytes": memory_bytes(space),
                          "disk_bytes": memory_bytes(space)}
        packed_q = [ranker.pack([q], "query") for q in query_tokens]
        truth, seconds, direct = [], [], []
        for q in packed_q[:3]:
            exact.search(q, k=10)  # warm-up
        for q in packed_q:  # through the index and directly, alternating: the same load for both
            t0 = time.perf_counter()
            truth.append(exact.search(q, k=10)[1][0].tolist())
            t1 = time.perf_counter()
            ranker.rank(q, space, k=10)
            direct.append(time.perf_counter() - t1)
            seconds.append(t1 - t0)
        entry["exact"].update(percentiles(seconds))
        entry["exact"]["interface_overhead_p50_ratio"] = round(float(np.median(seconds) / np.median(direct)), 3)
        # The engine: embedded LanceDB, a fresh table per (n, scorer).
        table = f"scale{len(texts)}-{scorer}"
        db = Path(args.db)
        rss0 = rss_bytes()
        t0 = time.perf_counter()
        engine = LanceIndex(ranker, db, table=table, embed_fn=stored_tokens)
        built = engine.build(ids, texts, show_progress=False)
        entry["engine"] = {"build_s": round(time.perf_counter() - t0, 1), "inserted": built["encoded"],
                           "ann": built["ann"] or engine.ann and "kept",
                           "disk_bytes": dir_bytes(db / f"{table}.lance"),
                           "rss_growth_bytes": max(0, rss_bytes() - rss0), "by_candidates": {}}
        for count in args.timed_candidates:
            found, seconds = timed(
                lambda q, c=count, e=engine: e.search_embedded([q], k=10, candidates=c)[1][0].tolist(), query_tokens, 3)
            entry["engine"]["by_candidates"][count] = {**percentiles(seconds), "recall@10": round(recall_at(found, truth), 4)}
        # Recall as a function of the candidate count: prefixes of the engine's order for the largest count,
        # each re-scored exactly (what a search with that count re-scores, up to the ANN's own ordering).
        largest = max(args.candidates)
        hits = [engine.candidates_of(q, largest).column("id").to_pylist() for q in query_tokens]
        curve = {}
        for count in sorted(args.candidates):
            found = []
            for q, ids_found in zip(packed_q, hits, strict=True):
                rows = torch.tensor(sorted(int(i[1:]) for i in ids_found[:count]))
                top = ranker.rank(q, space.select(rows), k=10)[1][0]
                found.append(rows[top].tolist())
            curve[count] = round(recall_at(found, truth), 4)
        entry["engine"]["recall_by_candidates"] = curve
        entry["uptime_after"] = uptime()
        report["scorers"][scorer] = entry
        print(json.dumps({scorer: entry}), flush=True)
        report["uptime"]["end"] = uptime()
        write(report, Path(args.out))  # after every scorer: a run cut short keeps what it measured
    return report


def write(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"scale_{report['n']}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"scale_{report['n']}.md").write_text(markdown(report))


def mib(n) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f} MiB"


def markdown(r: dict) -> str:
    enc = r["encode"]
    lines = [f"# Scale benchmark: {r['n']:,} targets, {r['model']} on {r['threads']} cores", "",
             f"Command: `{r['command']}` (machine: {r['machine']}).", "",
             f"Targets: {', '.join(f'{k} {v:,}' for k, v in r['sources'].items() if v)} "
             "(experiments/bench/scale_texts.py); queries: "
             f"{r['queries']} JobNorm test titles (removed from the targets), one at a time, pre-embedded.", "",
             f"Encoding (shared by both backends): {enc.get('n', r['n']):,} texts in {enc.get('seconds')} s "
             f"({enc.get('texts_per_s', '-')} texts/s, loadavg {enc.get('loadavg', '-')}).", "",
             f"`uptime` at start: `{r['uptime']['start']}`; at end: `{r['uptime']['end']}`.", "",
             "| scorer | backend | build s | RAM | disk | candidates | p50 ms | p95 ms | recall@10 vs exact |",
             "|---|---|---|---|---|---|---|---|---|"]
    for scorer, e in r["scorers"].items():
        ex, en = e["exact"], e["engine"]
        lines.append(f"| {scorer} | exact (in memory) | {ex['build_s']} | {mib(ex['ram_bytes'])} | "
                     f"{mib(ex['disk_bytes'])} (cache) | all | {ex['p50_ms']} | {ex['p95_ms']} | 1.0 |")
        for count, c in en["by_candidates"].items():
            lines.append(f"| {scorer} | LanceDB ({en['ann'] or 'flat'}) + exact re-score | {en['build_s']} | "
                         f"+{mib(en['rss_growth_bytes'])} RSS | {mib(en['disk_bytes'])} | {count} | {c['p50_ms']} | "
                         f"{c['p95_ms']} | {c['recall@10']} |")
    lines += ["", "Recall@10 against exact as a function of the candidate count (prefixes of the engine's order for "
              "the largest count, each re-scored exactly):", "",
              "| scorer | " + " | ".join(str(c) for c in next(iter(r["scorers"].values()))["engine"]["recall_by_candidates"])
              + " |", "|---|" + "---|" * len(next(iter(r["scorers"].values()))["engine"]["recall_by_candidates"])]
    for scorer, e in r["scorers"].items():
        lines.append(f"| {scorer} | " + " | ".join(str(v) for v in e["engine"]["recall_by_candidates"].values()) + " |")
    lines += ["", "Exact index through the TargetIndex interface vs ranking the packed space directly (p50 ratio, "
              "same run): " + ", ".join(f"{s} {e['exact']['interface_overhead_p50_ratio']}"
                                        for s, e in r["scorers"].items()), "",
              "Per scorer, `uptime` before / after: " + "; ".join(
                  f"{s}: `{e['uptime_before'].split('load average:')[-1].strip()}` / "
                  f"`{e['uptime_after'].split('load average:')[-1].strip()}`" for s, e in r["scorers"].items()), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
