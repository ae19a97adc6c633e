"""ONNX Runtime vs torch as the Ranker's query encoder: single-query CPU latency and WorkBench MAP.

The target space (ESCO v1.2.0 skill labels) is encoded once by torch and cached; only the query side differs.
Latency: per thread count, ``--queries`` JobNorm test job titles ranked one at a time (top 10) by both
backends in alternating order (a shared machine's drift hits both alike; compare the ratios), end to end
(``rank``: tokenise, encode, score, top-k) and the query encoding alone (``encode``), per scorer. MAP: both
backends on WorkBench test tasks (``--max-queries`` per task, the targets torch-encoded), per scorer.

    python -m uwe_lightning.export onnx minilm          # writes <minilm dir>/onnx/model.onnx
    PYTHONPATH=. nice -n 15 .venv/bin/python experiments/bench/bench_onnx.py --model minilm \
        --out experiments/results/onnx/latency.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from uwe_lightning import esco
from uwe_lightning.io import atomic_write_text, strict_json
from uwe_lightning.model.onnx import read_export_info
from uwe_lightning.paths import resolve_cache_dir
from uwe_lightning.ranking.ranker import Ranker
from uwe_lightning.workbench.runner import EncoderRankingModel, evaluate, load_tasks

SCORERS = ("mean", "maxsim", "softmax_ymean", "softmax")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="minilm", help="a backbone name or model directory with onnx/model.onnx")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--queries", type=int, default=200, help="timed single queries per thread count")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--scorers", nargs="+", default=list(SCORERS))
    p.add_argument("--map-tasks", nargs="*", default=["JobNorm", "Skill2Job"])
    p.add_argument("--map-scorers", nargs="+", default=["mean", "softmax"])
    p.add_argument("--max-queries", type=int, default=300, help="queries per MAP task (fixed random subset)")
    p.add_argument("--out", type=Path, default=None, help="markdown report (a .json beside it)")
    return p.parse_args()


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def latency(rankers: dict[str, Ranker], queries: list[str], space, warmup: int) -> dict[str, dict]:
    """Per backend: ``rank`` and ``encode`` milliseconds of each query alone, the backends alternating."""
    times: dict[str, dict[str, list[float]]] = {b: {"rank": [], "encode": []} for b in rankers}
    order = list(rankers)
    for i, q in enumerate(queries):
        for backend in order if i % 2 == 0 else order[::-1]:
            ranker = rankers[backend]
            t0 = time.perf_counter()
            ranker.encode([q], "query")
            t1 = time.perf_counter()
            ranker.rank([q], space, k=10)
            t2 = time.perf_counter()
            if i >= warmup:
                times[backend]["encode"].append(1000 * (t1 - t0))
                times[backend]["rank"].append(1000 * (t2 - t1))
    return {b: {kind: {"p50": pct(v, 50), "p95": pct(v, 95), "mean": statistics.fmean(v), "n": len(v)}
                for kind, v in t.items()} for b, t in times.items()}


def memo_embed(ranker: Ranker, memo: dict) -> None:
    """Let every scorer's ranker embed each (side, text) once (the MAP runs; only the ONNX ranker has a query
    side of its own)."""
    plain = ranker.embed

    def embed(texts, show_progress=False, side="target"):
        texts = list(texts)
        missing = [t for t in dict.fromkeys(texts) if (side, t) not in memo]
        if missing:
            memo.update({(side, t): e for t, e in zip(missing, plain(missing, show_progress, side), strict=True)})
        return [memo[(side, t)] for t in texts]

    ranker.embed = embed  # type: ignore[method-assign]


def main() -> None:
    args = parse_args()
    load_start = os.getloadavg()
    started = time.perf_counter()
    base = Ranker.from_pretrained(args.model, device="cpu")
    onnx_file = base.model_dir / "onnx" / "model.onnx"
    skills = esco.load_skills(None, "v1.2.0")["label"].tolist()
    cache_dir = resolve_cache_dir() / "targets"
    queries_all = load_tasks(["JobNorm"], "test")[0]["JobNorm"].queries
    picked = [queries_all[i] for i in np.random.default_rng(0).permutation(len(queries_all))]
    picked = picked[: args.warmup + args.queries]
    report: dict = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "model": args.model,
                    "onnx_export": read_export_info(onnx_file), "n_targets": len(skills),
                    "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                                "torch": torch.__version__, "load_average_start": list(load_start)},
                    "latency": {}, "map": {}}
    spaces = {}
    for threads in args.threads:
        torch.set_num_threads(threads)  # before the sessions: OnnxEncoder takes torch's thread count
        onnx_base = Ranker.from_pretrained(args.model, device="cpu", query_backend="onnx")
        for scorer in args.scorers:
            rankers = {"torch": base.with_scorer(scorer), "onnx": onnx_base.with_scorer(scorer)}
            pooled = rankers["torch"].pooled("target")
            if pooled not in spaces:
                spaces[pooled] = rankers["torch"].index(skills, cache_dir=cache_dir, show_progress=True)
            row = latency(rankers, picked, spaces[pooled], args.warmup)
            report["latency"][f"{threads}/{scorer}"] = {"threads": threads, "scorer": scorer, **row}
            print(f"[onnx bench] {threads} thread(s) {scorer:>13}: rank p50 torch {row['torch']['rank']['p50']:.1f} "
                  f"onnx {row['onnx']['rank']['p50']:.1f} ms; encode p50 torch {row['torch']['encode']['p50']:.1f} "
                  f"onnx {row['onnx']['encode']['p50']:.1f} ms", flush=True)
    torch.set_num_threads(max(args.threads))
    onnx_base = Ranker.from_pretrained(args.model, device="cpu", query_backend="onnx")
    memo: dict = {}  # ("target", text) embeddings are torch's for both backends; ("query", text) ONNX's
    for backend, ranker in (("torch", base), ("onnx", onnx_base)):
        for scorer in args.map_scorers:
            scored = ranker.with_scorer(scorer)
            memo_embed(scored, memo)
            res = evaluate(EncoderRankingModel(scored), args.map_tasks, "test", max_queries=args.max_queries)
            for task, r in res["tasks"].items():
                report["map"].setdefault(f"{task}/{scorer}", {})[backend] = {
                    "map": r["map"], "rp@10": r["rp@10"], "n_queries": r["n_queries"], "n_targets": r["n_targets"]}
            print(f"[onnx bench] MAP {backend} {scorer}: "
                  + ", ".join(f"{t} {100 * r['map']:.2f}" for t, r in res["tasks"].items()), flush=True)
    report["machine"]["load_average_end"] = list(os.getloadavg())
    report["wall_s"] = round(time.perf_counter() - started, 1)
    text = markdown(report)
    print(text)
    if args.out:
        atomic_write_text(args.out, text)
        atomic_write_text(args.out.with_suffix(".json"), strict_json(report, indent=1) + "\n")


def markdown(r: dict) -> str:
    exp = r["onnx_export"]
    lines = [
        f"# ONNX Runtime vs torch query encoder: {r['model']}", "",
        f"Command: `{r['command']}`", "",
        f"Machine: {r['machine']['cpu_count']} CPUs ({r['machine']['platform']}), torch {r['machine']['torch']}, "
        f"onnxruntime {exp.get('versions', {}).get('onnxruntime', '?')}; load average (1/5/15 min) "
        f"{' / '.join(f'{x:.2f}' for x in r['machine']['load_average_start'])} at the start, "
        f"{' / '.join(f'{x:.2f}' for x in r['machine']['load_average_end'])} at the end. The machine was shared "
        "with a training job: absolute times are inflated and noisy; compare torch and ONNX as the ratios "
        "measured in the same run (the backends alternate query by query).", "",
        f"Export: opset {exp.get('opset')}, max abs diff vs torch at export time "
        f"{exp.get('parity', {}).get('max_abs_diff', float('nan')):.2g} over "
        f"{len(exp.get('parity', {}).get('per_shape', {}))} shapes (batch 1-7, lengths 1-{exp.get('max_sequence')}).",
        "",
        f"## Single-query latency (ms; {r['n_targets']} ESCO v1.2.0 skill targets, top 10, JobNorm test titles)", "",
        "`rank`: tokenise + encode + score + top-k of one query; `encode`: the query encoding alone.", "",
        "| threads | scorer | rank p50 torch | rank p50 onnx | rank p95 torch | rank p95 onnx | rank p50 ratio "
        "| encode p50 torch | encode p50 onnx | encode p50 ratio |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in r["latency"].values():
        t, o = row["torch"], row["onnx"]
        lines.append(
            f"| {row['threads']} | {row['scorer']} | {t['rank']['p50']:.1f} | {o['rank']['p50']:.1f} | "
            f"{t['rank']['p95']:.1f} | {o['rank']['p95']:.1f} | {o['rank']['p50'] / t['rank']['p50']:.2f} | "
            f"{t['encode']['p50']:.2f} | {o['encode']['p50']:.2f} | {o['encode']['p50'] / t['encode']['p50']:.2f} |")
    n = next(iter(r["latency"].values()))["torch"]["rank"]["n"] if r["latency"] else 0
    lines += ["", f"{n} timed queries per row (ratio = onnx / torch; < 1: ONNX faster).", ""]
    if r["map"]:
        lines += ["## WorkBench test MAP (queries by the backend, targets by torch)", "",
                  "| task | scorer | queries x targets | MAP torch | MAP onnx | diff | RP@10 torch | RP@10 onnx |",
                  "|---|---|---|---:|---:|---:|---:|---:|"]
        for key, row in r["map"].items():
            task, scorer = key.rsplit("/", 1)
            t, o = row["torch"], row["onnx"]
            lines.append(f"| {task} | {scorer} | {t['n_queries']} x {t['n_targets']} | {100 * t['map']:.3f} | "
                         f"{100 * o['map']:.3f} | {100 * (o['map'] - t['map']):+.4f} | {100 * t['rp@10']:.3f} | "
                         f"{100 * o['rp@10']:.3f} |")
        lines.append("")
    lines.append(f"Wall time {r['wall_s']} s.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
