"""``make bench-peers``: the Ranker side by side with what users would pick instead, in one run.

Sections (``--sections``, all by default but ``evaluate``):

- ``scoring``: scoring + top-10 of a pre-encoded query as the target space grows (nested random subsets of the
  ESCO v1.2.0 skill labels + altLabels, ~99k, encoded once and cached), per scorer: ours (fp16 storage where
  the agreement allows, and fp32), the reference scorer path (``fast=False``, what the Ranker did before), and
  the peers: sentence-transformers ``util.semantic_search`` and FAISS ``IndexFlatIP`` for ``mean``, PyLate's
  padded-einsum MaxSim for ``maxsim``. Single-query p50 / p95 (wall and CPU time), batched queries/s, memory,
  ratios to ours, and each method's top-10 agreement with ours in fp32.
- ``e2e``: single-query latency end to end (tokenise, encode, score, top-10) on the WorkBench test target
  spaces, per scorer and query backend (torch, ONNX Runtime, their int8 variants), and sentence-transformers
  ``encode`` + ``semantic_search`` for ``mean``; the query encoding alone beside it.
- ``scale``: synthetic token-level spaces of ``--synthetic`` sizes (100k, 1M) in memory-mapped fp16 files
  (uwe_lightning/efficiency/synthetic.py): file and resident memory, exact single-query latency, and an
  approximate prefilter on the pooled vectors (FAISS IVF) + exact rescoring of ``--candidates``: its latency
  and recall@10 against exact scoring.
- ``evaluate`` (``make bench-eval``): the full zero-shot WorkBench test of ``--model`` (wall time, load;
  ``--eval-tasks`` / ``--eval-max-queries`` shrink it for a smoke run).

``--prepare`` builds, untimed, what the timed sections would otherwise build on their first run (the cached
growth and WorkBench target spaces, the ONNX exports, the synthetic files) and exits: run it before a timed run
(it does not need quiet cores; experiments/fast/quiet_run.sh does).

Every timing is recorded with the machine's load average before and after its section and with the process's
CPU time beside the wall time (on a shared machine the wall time includes waiting for a CPU).

    make bench-peers                      # = the command below; ~10-15 min on 2 quiet cores (MiniLM)
    PYTHONPATH=. .venv/bin/python experiments/bench/bench_peers.py --out experiments/results/bench_peers.md
    # scale it: --sizes ... --queries 100 --synthetic 100000 1000000 3000000 --e2e-queries 200
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from uwe_lightning.cli.export import onnx_model_dir
from uwe_lightning.efficiency.benchmark import _growth_texts, load_datasets
from uwe_lightning.efficiency.measure import (
    OtherCpu,
    busiest_others,
    machine_info,
    quiet_cores,
    sample_queries,
)
from uwe_lightning.efficiency.peers import (
    FaissFlatIP,
    PaddedMaxSim,
    SemanticSearch,
    batch_rate,
    fmt_ms,
    peak_rss_bytes,
    pooled_vectors,
    reset_peak_rss,
    rss_bytes,
    time_each,
    top_k_agreement,
)
from uwe_lightning.efficiency.spaces import TextMemo, build_space, by_target_pooling, encode_task_spaces
from uwe_lightning.efficiency.synthetic import synthetic_name, write_synthetic
from uwe_lightning.io import atomic_save_figure, atomic_write_text, strict_json
from uwe_lightning.paths import resolve_cache_dir
from uwe_lightning.ranking import fast
from uwe_lightning.ranking.cache import texts_sha256
from uwe_lightning.ranking.packed import EncodedTexts
from uwe_lightning.ranking.prefilter import Prefilter, pooled_query_vectors, rank_prefiltered
from uwe_lightning.ranking.ranker import Ranker
from uwe_lightning.workbench.runner import WORKBENCH_TASKS, EncoderRankingModel, evaluate

SCORERS = ("mean", "maxsim", "softmax_ymean", "softmax")
TASKS = [t for t in WORKBENCH_TASKS if t != "SkillSim"]  # SkillSim is not in the data pack
K = 10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="minilm")
    p.add_argument("--sections", nargs="+", default=["scoring", "e2e", "scale"],
                   choices=["scoring", "e2e", "scale", "evaluate"])
    p.add_argument("--prepare", action="store_true",
                   help="build the caches, ONNX exports and synthetic files the sections need, time nothing, exit")
    p.add_argument("--eval-tasks", nargs="+", default=TASKS, help="tasks of the evaluate section")
    p.add_argument("--eval-max-queries", type=int, default=None, help="evaluate: queries per task (default: all)")
    p.add_argument("--threads", type=int, default=None, help="torch / FAISS / ONNX Runtime threads (default: torch's)")
    p.add_argument("--scorers", nargs="+", default=list(SCORERS))
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000, 10000, 30000, 100000])
    p.add_argument("--queries", type=int, default=30, help="timed single queries per point (scoring)")
    p.add_argument("--slow-queries", type=int, default=8, help="... for the reference path and the padded MaxSim")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=256, help="queries ranked as one batch (throughput)")
    p.add_argument("--peer-max-targets", type=int, default=100000,
                   help="largest size the padded MaxSim peer holds (float32, padded: ~30 MiB per 1k targets)")
    p.add_argument("--tasks", nargs="+", default=TASKS, help="WorkBench test tasks of the e2e section")
    p.add_argument("--e2e-queries", type=int, default=40)
    p.add_argument("--backends", nargs="+", default=["torch", "onnx", "onnx_int8", "torch_int8"])
    p.add_argument("--synthetic", type=int, nargs="*", default=[100000, 1000000])
    p.add_argument("--synthetic-queries", type=int, default=20, help="queries for exact vs prefiltered (scale)")
    p.add_argument("--scale-scorers", nargs="+", default=["maxsim", "softmax"])
    p.add_argument("--candidates", type=int, default=1000)
    p.add_argument("--prefilter", default="faiss_ivf", help="faiss_ivf | faiss_hnsw | usearch | exact")
    p.add_argument("--nprobe", type=int, default=32)
    p.add_argument("--scratch", type=Path, default=Path("outputs/bench_peers"),
                   help="synthetic files and the ONNX export copy (gitignored)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="markdown report; .json and _latency_vs_targets.png beside it")
    return p.parse_args(argv)


def log(message: str) -> None:
    print(f"[bench-peers {time.strftime('%H:%M:%S')}] {message}", flush=True)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class Section:
    """Records the wall time, the load average before and after a section of the run, and how many CPUs other
    processes kept busy meanwhile (``others_cpus``: what competed with the timings; the load average also counts
    this run's own threads)."""

    def __init__(self, result: dict, name: str) -> None:
        self.result, self.name = result, name

    def __enter__(self) -> dict:
        self.start = time.perf_counter()
        self.cpu = time.process_time()
        self.entry = {"load_start": loadavg()}
        self.others = OtherCpu()
        log(f"section {self.name} (load {self.entry['load_start']})")
        return self.entry

    def __exit__(self, *exc) -> None:
        self.entry.update(load_end=loadavg(), wall_s=round(time.perf_counter() - self.start, 1),
                          cpu_s=round(time.process_time() - self.cpu, 1), others_cpus=self.others.now())
        self.result.setdefault("sections", {})[self.name] = self.entry


# ----------------------------------------------------------------------------------------------------------
# scoring: target-space growth, ours vs reference vs peers, query pre-encoded
# ----------------------------------------------------------------------------------------------------------


def rank_encoded(ranker: Ranker, space) -> Callable[[EncodedTexts], torch.Tensor]:
    return lambda q: ranker.rank(q, space, k=K)[1]


def measure_method(search: Callable[[object], torch.Tensor], singles: list, batch_input, n_single: int,
                   warmup: int, reference: list[torch.Tensor] | None) -> dict:
    """Single-query stats, batched throughput, top-10 agreement with ``reference`` (one index row per query)."""
    picked = singles[:n_single]
    found: list[torch.Tensor] = []

    def one(item):
        found.append(torch.atleast_2d(search(item))[:, :K])

    row = {"single": time_each(one, picked, warmup=min(warmup, len(picked)))}
    found = found[min(warmup, len(picked)):]
    if reference is not None:
        row["top10_agreement"] = top_k_agreement(torch.cat(found), torch.cat(reference[: len(found)]))
    if batch_input is not None:
        n = batch_input[0] if isinstance(batch_input, tuple) else len(batch_input)
        row["batch"] = batch_rate(lambda: search(batch_input), n)
    return row, found


def growth_space(args, base: Ranker, cache_dir: Path):
    """The ESCO growth space in one fixed permutation (size n = its first n texts), both poolings, cached."""
    texts = _growth_texts(None)
    texts = [texts[i] for i in np.random.default_rng(args.seed).permutation(len(texts))]
    rankers = {s: base.with_scorer(s) for s in args.scorers}
    pooling = by_target_pooling({**rankers, "mean": base.with_scorer("mean"), "maxsim": base.with_scorer("maxsim")})
    memo = TextMemo(base)
    space = build_space("growth", texts, pooling, memo, cache_dir, False)
    memo.clear()
    return texts, rankers, space


def scoring_section(args, base: Ranker, query_tokens: list[torch.Tensor], cache_dir: Path) -> dict:
    # Nested random subsets of one fixed permutation; the whole permutation is the cached space, whatever
    # --sizes asks for.
    texts, rankers, space = growth_space(args, base, cache_dir)
    sizes = sorted({min(s, len(texts)) for s in args.sizes})
    n_batch = args.batch
    out: dict = {"n_texts": len(texts), "sizes": sizes, "source": "ESCO v1.2.0 skill preferredLabels + altLabels",
                 "queries": args.queries, "slow_queries": args.slow_queries, "batch": n_batch, "points": {}}
    for size in sizes:
        subsets = {pooled: enc.select(torch.arange(size)) for pooled, enc in space.encoded.items()}
        for scorer in args.scorers:
            ours = rankers[scorer]
            targets = subsets[ours.pooled("target")]
            singles = [ours.pack([t], "query") for t in query_tokens]
            batch = ours.pack(query_tokens[:n_batch], "query")
            point: dict = {}
            variants = {"ours fp32": ours.with_scorer(scorer, tau=ours.spec.tau, precision="fp32")}
            default = fast.resolve_precision("auto", scorer)
            variants[f"ours ({default}, default)"] = ours.with_scorer(scorer, tau=ours.spec.tau, precision="auto")
            exact = None
            for label, ranker in variants.items():
                t0 = time.perf_counter()
                prepared = ranker.prepare(targets)
                prep_s = time.perf_counter() - t0
                row, found = measure_method(rank_encoded(ranker, prepared), singles, batch, args.queries,
                                            args.warmup, exact)
                if exact is None:
                    exact = found
                    row["top10_agreement"] = 1.0
                row.update(memory_bytes=prepared.memory_bytes(), prepare_s=round(prep_s, 3))
                point[label] = row
            reference = ours.with_scorer(scorer, tau=ours.spec.tau, fast=False)
            row, _ = measure_method(rank_encoded(reference, targets), singles, None, args.slow_queries,
                                    min(1, args.warmup), exact)
            row["memory_bytes"] = targets.tokens.numel() * 4  # its buckets: the space in float32, padded
            point["reference path (before)"] = row
            if scorer == "mean":
                vectors = pooled_vectors(targets)
                qv = torch.cat([s.tokens.float() for s in singles])
                for peer in (SemanticSearch(vectors), FaissFlatIP(vectors)):
                    row, _ = measure_method(lambda i, p=peer, qv=qv: p.search(qv[i][None], K)[1],
                                            list(range(len(qv))), None, args.queries, args.warmup, exact)
                    row["batch"] = batch_rate(lambda p=peer, qv=qv: p.search(qv[:n_batch], K), min(n_batch, len(qv)))
                    row["memory_bytes"] = peer.memory_bytes()
                    point[peer.name] = row
            if scorer == "maxsim" and size <= args.peer_max_targets:
                peer = PaddedMaxSim(targets)
                units = [F.normalize(t.float(), dim=-1, eps=1e-8) for t in query_tokens]
                row, _ = measure_method(lambda u, p=peer: p.search(u, K)[1], units, None, args.slow_queries,
                                        min(1, args.warmup), exact)
                row["memory_bytes"] = peer.memory_bytes()
                point[peer.name] = row
                del peer
            gc.collect()
            ours_label = next(label for label in point if label.endswith("default)"))
            base_p50 = point[ours_label]["single"]["p50"]
            for row in point.values():
                row["ratio_p50_to_ours"] = row["single"]["p50"] / base_p50
            out["points"].setdefault(scorer, {})[str(size)] = point
            log(f"scoring {scorer:>13} {size:>7}: " + ", ".join(
                f"{label} {row['single']['p50']:.1f} ms" for label, row in point.items()))
        del subsets
    tokens = space.encoded[False]
    out["bytes"] = {"tokens_fp16": [int(tokens.offsets[s]) * tokens.hidden_size * 2 for s in sizes]}
    return out


# ----------------------------------------------------------------------------------------------------------
# e2e: single queries end to end on WorkBench target spaces
# ----------------------------------------------------------------------------------------------------------


def e2e_onnx_dir(args, base: Ranker) -> Path | None:
    if not any(b.startswith("onnx") for b in args.backends):
        return None
    return onnx_model_dir(base.model_dir, args.scratch / "onnx" / Path(base.model_dir).name,
                          int8="onnx_int8" in args.backends)


def e2e_section(args, base: Ranker, cache_dir: Path) -> dict:
    datasets, unavailable = load_datasets(args.tasks, "test", None)
    rankers = {s: base.with_scorer(s) for s in args.scorers}
    spaces, task_space = encode_task_spaces(datasets, by_target_pooling(rankers), cache_dir, False, log)
    backends: dict[str, Ranker] = {}
    onnx_dir = e2e_onnx_dir(args, base)
    for backend in args.backends:
        source = onnx_dir if backend.startswith("onnx") else base.model_dir
        backends[backend] = base if backend == "torch" else Ranker.from_pretrained(
            str(source), device="cpu", query_backend=backend)
    out: dict = {"tasks": {}, "unavailable": unavailable, "queries": args.e2e_queries}
    st_model = None
    if "mean" in args.scorers:
        from sentence_transformers import SentenceTransformer, util

        st_model = SentenceTransformer(str(base.model_dir), device="cpu")
    for name, ds in datasets.items():
        queries = sample_queries(ds.queries, args.warmup + args.e2e_queries, args.seed)
        row: dict = {"n_targets": ds.n_targets, "scorers": {}}
        for scorer in args.scorers:
            per_backend = {}
            for backend, backend_ranker in backends.items():
                ranker = backend_ranker.with_scorer(scorer, tau=rankers[scorer].spec.tau)
                space = spaces[task_space[name]].encoded[ranker.pooled("target")]
                ranker.prepare(space)
                per_backend[backend] = {
                    "rank": time_each(lambda q, r=ranker, s=space: r.rank([q], s, k=K), queries, args.warmup),
                    "encode": time_each(lambda q, r=ranker: r.encode([q], "query"), queries, args.warmup),
                }
            if scorer == "mean" and st_model is not None:
                corpus = pooled_vectors(spaces[task_space[name]].encoded[True])

                def st_search(q, corpus=corpus):
                    vec = st_model.encode([q], convert_to_tensor=True)
                    return util.semantic_search(vec, corpus, top_k=K)

                per_backend["sentence-transformers encode + semantic_search"] = {
                    "rank": time_each(st_search, queries, args.warmup),
                    "encode": time_each(lambda q: st_model.encode([q], convert_to_tensor=True), queries, args.warmup),
                }
            row["scorers"][scorer] = per_backend
            log(f"e2e {name:<12} {scorer:>13}: " + ", ".join(
                f"{b} {v['rank']['p50']:.1f} ms" for b, v in per_backend.items()))
        out["tasks"][name] = row
    summary = {}
    for scorer in args.scorers:
        for backend in next(iter(out["tasks"].values()))["scorers"][scorer]:
            p50s = [t["scorers"][scorer][backend]["rank"]["p50"] for t in out["tasks"].values()
                    if backend in t["scorers"][scorer]]
            enc = [t["scorers"][scorer][backend]["encode"]["p50"] for t in out["tasks"].values()
                   if backend in t["scorers"][scorer]]
            cpu = [t["scorers"][scorer][backend]["rank"]["cpu_p50"] for t in out["tasks"].values()
                   if backend in t["scorers"][scorer]]
            summary.setdefault(scorer, {})[backend] = {"rank_p50_mean_over_tasks": float(np.mean(p50s)),
                                                       "rank_p50_max_over_tasks": float(np.max(p50s)),
                                                       "rank_cpu_p50_mean_over_tasks": float(np.mean(cpu)),
                                                       "encode_p50_mean_over_tasks": float(np.mean(enc))}
    out["summary"] = summary
    return out


# ----------------------------------------------------------------------------------------------------------
# scale: memory-mapped synthetic spaces, exact vs prefiltered
# ----------------------------------------------------------------------------------------------------------


def synthetic_base(base: Ranker, cache_dir: Path) -> tuple[EncodedTexts, str]:
    """The Job2Skill test target space (ESCO skills, token level, cached) and the digest naming its files."""
    datasets, _ = load_datasets(["Job2Skill"], "test", None)
    base_space = base.with_scorer("maxsim").index(datasets["Job2Skill"].targets, cache_dir=cache_dir)
    return base_space, texts_sha256(datasets["Job2Skill"].targets) + (base.checkpoint_id() or "")


SWAP, NOISE = 0.3, 0.1


def prepare(args, base: Ranker, cache_dir: Path) -> dict:
    """Build (untimed) what the selected sections need: cached spaces, ONNX exports, synthetic files."""
    done: dict = {}
    t0 = time.perf_counter()
    if "scoring" in args.sections:
        growth_space(args, base, cache_dir)
        done["growth_space_s"] = round(time.perf_counter() - t0, 1)
    if "e2e" in args.sections:
        datasets, _ = load_datasets(args.tasks, "test", None)
        encode_task_spaces(datasets, by_target_pooling({s: base.with_scorer(s) for s in args.scorers}), cache_dir,
                           False, log)
        done["onnx_dir"] = str(e2e_onnx_dir(args, base))
    if "scale" in args.sections:
        base_space, digest = synthetic_base(base, cache_dir)
        for n in args.synthetic:
            path = args.scratch / synthetic_name(digest, n, args.seed, SWAP, NOISE)
            if not path.is_file():
                log(f"prepare: writing {path} ({n:,} synthetic targets)")
                write_synthetic(path, base_space, n, args.seed, SWAP, NOISE)
            done.setdefault("synthetic", []).append(str(path))
    done["wall_s"] = round(time.perf_counter() - t0, 1)
    log(f"prepared: {done}")
    return done


def scale_section(args, base: Ranker, query_tokens: list[torch.Tensor], cache_dir: Path) -> dict:
    base_space, digest = synthetic_base(base, cache_dir)
    out: dict = {"base": f"Job2Skill test target space ({len(base_space)} ESCO v1.2.0 skills, token level)",
                 "swap": SWAP, "noise": NOISE, "candidates": args.candidates, "prefilter": args.prefilter,
                 "nprobe": args.nprobe, "queries": args.synthetic_queries, "sizes": {}}
    queries = query_tokens[: args.synthetic_queries]
    for n in args.synthetic:
        path = args.scratch / synthetic_name(digest, n, args.seed, out["swap"], out["noise"])
        t0 = time.perf_counter()
        if not path.is_file():
            write_synthetic(path, base_space, n, args.seed, out["swap"], out["noise"])
        write_s = time.perf_counter() - t0
        gc.collect()
        rss_open = rss_bytes()
        mapped = fast.open_prepared(path)
        row: dict = {"file_bytes": mapped.file_bytes(), "in_memory_bytes": mapped.memory_bytes(),
                     "tokens": mapped.total_tokens, "write_s": round(write_s, 1), "scorers": {}}
        t0 = time.perf_counter()
        index = Prefilter(mapped.pooled_vectors, args.prefilter, nprobe=args.nprobe, seed=args.seed)
        mapped.release_all()  # the pooled vectors were read through the mapping: drop their pages
        row["prefilter"] = {"backend": args.prefilter, "build_s": round(time.perf_counter() - t0, 1),
                            "memory_bytes": index.memory_bytes(), "nlist": getattr(index, "nlist", None)}
        for scorer in args.scale_scorers:
            point = scale_point(base.with_scorer(scorer), mapped, index, queries, args.candidates)
            row["scorers"][scorer] = point
            log(f"scale {n:>8} {scorer:>8}: exact {point['exact']['p50']:.0f} ms, prefiltered "
                f"{point['prefiltered']['p50']:.1f} ms, recall@10 {point['recall@10']:.3f}, peak RSS "
                f"{(point['rss_peak_during_exact'] or 0) / 2**20:.0f} MiB (file {row['file_bytes'] / 2**20:.0f} MiB)")
        row["rss_at_open"] = rss_open
        mapped.close()
        index = None
        gc.collect()
        out["sizes"][str(n)] = row
    return out


def scale_point(ranker: Ranker, mapped: fast.MappedTargets, index: Prefilter, queries: list[torch.Tensor],
                candidates: int) -> dict:
    """Exact (the whole mapped file) and prefiltered top-10 of each query: latency, recall, peak RSS."""
    packed = [ranker.pack([t], "query") for t in queries]
    exact_found: list[torch.Tensor] = []
    reset = reset_peak_rss()
    rss_before = rss_bytes()
    stats = time_each(lambda q: exact_found.append(ranker.rank(q, mapped, k=K)[1]), packed, warmup=1)
    peak = peak_rss_bytes() if reset else None
    found: list[torch.Tensor] = []
    pre_stats = time_each(lambda i: found.append(rank_prefiltered(ranker, [queries[i]], mapped, index, K,
                                                                  candidates)[1]), list(range(len(queries))), warmup=1)
    pooled_q = pooled_query_vectors(queries)
    search = time_each(lambda i: index.search(pooled_q[i][None], candidates), list(range(len(queries))), warmup=1)
    return {"exact": stats, "prefiltered": pre_stats, "prefilter_search": search,
            "recall@10": top_k_agreement(torch.cat(found[1:]), torch.cat(exact_found[1:])),
            "rss_before": rss_before, "rss_peak_during_exact": peak}


# ----------------------------------------------------------------------------------------------------------
# evaluate: the full zero-shot WorkBench test
# ----------------------------------------------------------------------------------------------------------


def evaluate_section(args, base: Ranker) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    res = evaluate(EncoderRankingModel(base), args.eval_tasks, "test", max_queries=args.eval_max_queries,
                   show_progress=True)
    return {"wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(time.process_time() - c0, 1),
            "tasks_run": list(args.eval_tasks), "max_queries": args.eval_max_queries, "seconds": res["seconds"], "macro_map": res["macro"]["map"],
            "tasks": {n: {"map": r["map"], "n_queries": r["n_queries"], "n_targets": r["n_targets"],
                          "seconds": r["seconds"]} for n, r in res["tasks"].items()}}


# ----------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------


def mib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:.1f}"


def growth(point: dict) -> str:
    peak, before = point.get("rss_peak_during_exact"), point.get("rss_before")
    return "n/a" if peak is None or before is None else f"{max(0, peak - before) / 2**20:.1f}"


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [f"# Ranking side by side with sentence-transformers, FAISS and a padded-einsum MaxSim: {r['model']}", "",
             f"Command: `{r['command']}`  ", f"Machine: {m['cpu_count']} CPUs ({m['cpus_usable']} usable), "
             f"{m['torch_threads']} torch threads, torch {m['torch']}, {m['platform']}; load average "
             f"{'/'.join(map(str, r['load_start']))} at the start, {'/'.join(map(str, r['load_end']))} at the end. "
             f"Wall time {r['wall_s']} s.", ""]
    others = busiest_others(r)
    if others is not None:
        lines += [f"Other processes kept {others:.2f} CPUs busy on average (the busiest section; `/proc/stat` busy "
                  "time minus this run's CPU time; the load average also counts this run's own threads).", ""]
    if not quiet_cores(others, r["load_start"][0]):
        shared = (f"other processes kept {others:.2f} CPUs busy" if others is not None
                  else f"load {r['load_start'][0]:.1f} on {m['cpus_usable']} CPUs as the run started")
        lines += [f"**Shared machine:** {shared}: wall times include waiting for a CPU and are upper bounds; CPU "
                  "times (cpu p50) are less affected.", ""]
    lines += ["Per section: " + "; ".join(
        f"{name} {s['wall_s']} s (load {s['load_start'][0]} -> {s['load_end'][0]}"
        + (f"; others {s['others_cpus']:.2f} CPUs" if s.get("others_cpus") is not None else "") + ")"
        for name, s in r.get("sections", {}).items()), ""]
    sc = r.get("scoring")
    if sc:
        lines += [f"## Scoring + top-10 of a pre-encoded query vs target-space size ({sc['source']})", "",
                  f"Single-query p50 / p95 wall ms (and CPU ms), {sc['queries']} queries per point "
                  f"({sc['slow_queries']} for the reference path and the padded MaxSim); batch: {sc['batch']} "
                  "queries in one call (median of 5 after a warm-up call); ratio = p50 / ours (default); agreement = top-10 overlap with ours fp32.", ""]
        for scorer, points in sc["points"].items():
            lines += [f"### {scorer}", "", "| targets | method | p50 | p95 | cpu p50 | ratio | batch q/s | memory MiB | "
                      "top-10 agreement |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
            for size, point in points.items():
                for label, row in point.items():
                    s = row["single"]
                    q = row.get("batch", {}).get("queries_per_s")
                    lines.append(f"| {int(size):,} | {label} | {fmt_ms(s['p50'])} | {fmt_ms(s['p95'])} | "
                                 f"{fmt_ms(s.get('cpu_p50', math.nan))} | {row['ratio_p50_to_ours']:.2f} | "
                                 f"{'n/a' if q is None else f'{q:.0f}'} | {mib(row.get('memory_bytes'))} | "
                                 f"{row.get('top10_agreement', math.nan):.4f} |")
            lines.append("")
        lines += ["![latency vs targets](" + r.get("plot", "bench_peers_latency_vs_targets.png") + ")", ""]
    e2e = r.get("e2e")
    if e2e:
        lines += ["## End to end: one query (tokenise, encode, score, top-10) on the WorkBench test target spaces", "",
                  f"p50 wall ms per task ({e2e['queries']} queries each), mean over tasks; the query encoding alone "
                  "beside it; cpu = the process's CPU ms (p50).", "",
                  "| scorer | query backend | rank p50 (mean over tasks) | worst task | rank cpu p50 | encode p50 |",
                  "|---|---|---:|---:|---:|---:|"]
        for scorer, backends in e2e["summary"].items():
            for backend, s in backends.items():
                lines.append(f"| {scorer} | {backend} | {fmt_ms(s['rank_p50_mean_over_tasks'])} | "
                             f"{fmt_ms(s['rank_p50_max_over_tasks'])} | {fmt_ms(s['rank_cpu_p50_mean_over_tasks'])} | "
                             f"{fmt_ms(s['encode_p50_mean_over_tasks'])} |")
        lines += ["", "Per task (rank p50 ms): " + "; ".join(
            f"{t} ({v['n_targets']:,} targets): " + ", ".join(
                f"{s}/{b} {x['rank']['p50']:.1f}" for s, bs in v["scorers"].items() for b, x in bs.items()
                if b == "torch") for t, v in e2e["tasks"].items()), "",
            "MAP cost of the int8 query encoders: experiments/results/fast/agreement.md (load-independent).", ""]
    scale = r.get("scale")
    if scale:
        lines += [f"## Past RAM: memory-mapped synthetic spaces ({scale['base']}, swap {scale['swap']}, noise "
                  f"{scale['noise']})", "", f"{scale['queries']} real Job2Skill/JobNorm queries; prefilter "
                  f"{scale['prefilter']} (nprobe {scale['nprobe']}) on the pooled vectors, then exact rescoring of "
                  f"{scale['candidates']} candidates; recall@10 = overlap with the exact top-10 over the whole file.",
                  "RSS growth = peak resident set while scoring the whole file exactly minus the resident set just "
                  "before (the process also holds the earlier sections' spaces: compare the growth with the file).",
                  "", "| targets | tokens | file MiB | in memory MiB | index MiB (build s) | scorer | exact p50 ms | "
                  "exact cpu p50 | prefiltered p50 ms | recall@10 | RSS growth MiB (RSS before) |",
                  "|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
        for n, row in scale["sizes"].items():
            for scorer, s in row["scorers"].items():
                lines.append(f"| {int(n):,} | {row['tokens']:,} | {mib(row['file_bytes'])} | "
                             f"{mib(row['in_memory_bytes'])} | {mib(row['prefilter']['memory_bytes'])} "
                             f"({row['prefilter']['build_s']}) | {scorer} | {fmt_ms(s['exact']['p50'])} | "
                             f"{fmt_ms(s['exact'].get('cpu_p50', math.nan))} | {fmt_ms(s['prefiltered']['p50'])} | "
                             f"{s['recall@10']:.3f} | {growth(s)} ({mib(s['rss_before'])}) |")
        lines.append("")
    ev = r.get("evaluate")
    if ev:
        sec = r.get("sections", {}).get("evaluate", {})
        subset = "" if ev.get("max_queries") is None else f", SMOKE: {ev['max_queries']} queries per task"
        lines += [f"## {'Full zero-shot' if not subset else 'Zero-shot'} WorkBench test ("
                  f"{', '.join(ev.get('tasks_run', ev['tasks']))}{subset})", "",
                  f"{r['model']} / mean: wall {ev['wall_s']} s (CPU {ev['cpu_s']} s), of which encoding the "
                  f"{ev['seconds']['n_distinct_texts']:,} distinct texts {ev['seconds']['encode_distinct_texts']} s; "
                  f"macro MAP {100 * ev['macro_map']:.2f}; load {sec.get('load_start')} -> {sec.get('load_end')}.", ""]
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> Path | None:
    sc = r.get("scoring")
    if not sc:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(sc["points"])
    cols = min(2, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4.2 * rows), squeeze=False)
    for ax, scorer in zip(axes.flat, names, strict=False):
        points = sc["points"][scorer]
        sizes = [int(s) for s in points]
        labels = list(dict.fromkeys(label for p in points.values() for label in p))
        for label in labels:
            xs = [s for s in sizes if label in points[str(s)]]
            ys = [points[str(s)][label]["single"]["p50"] for s in xs]
            ax.plot(xs, ys, marker="o", linestyle="-" if label.startswith("ours") else "--", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{scorer}: scoring + top-10, one pre-encoded query", fontsize=9)
        ax.set_xlabel("targets")
        ax.set_ylabel("p50 wall ms")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(f"{r['model']}, {r['machine']['torch_threads']} threads, load {r['load_start'][0]}", fontsize=9)
    fig.tight_layout()
    return atomic_save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        import faiss

        faiss.omp_set_num_threads(torch.get_num_threads())
    except ImportError:
        pass
    started, others = time.perf_counter(), OtherCpu()
    result: dict = {"command": " ".join(["python", "experiments/bench/bench_peers.py", *(argv or sys.argv[1:])]),
                    "model": args.model, "load_start": loadavg(), "args": {k: str(v) if isinstance(v, Path) else v
                                                                          for k, v in vars(args).items()}}
    base = Ranker.from_pretrained(args.model, device="cpu")
    result["machine"] = machine_info(base.device)
    cache_dir = resolve_cache_dir() / "targets"
    if args.prepare:
        return {"prepare": prepare(args, base, cache_dir)}
    query_tokens = None
    if {"scoring", "scale"} & set(args.sections):
        datasets, _ = load_datasets(["JobNorm", "Job2Skill"], "test", None)
        pool = [q for ds in datasets.values() for q in ds.queries[:500]]
        texts = sample_queries(pool, max(args.batch, args.queries + args.warmup, args.synthetic_queries + 1), args.seed)
        query_tokens = base.embed(texts, side="query")
    if "scoring" in args.sections:
        with Section(result, "scoring"):
            result["scoring"] = scoring_section(args, base, query_tokens, cache_dir)
    if "e2e" in args.sections:
        with Section(result, "e2e"):
            result["e2e"] = e2e_section(args, base, cache_dir)
    if "scale" in args.sections:
        with Section(result, "scale"):
            result["scale"] = scale_section(args, base, query_tokens, cache_dir)
    if "evaluate" in args.sections:
        with Section(result, "evaluate"):
            result["evaluate"] = evaluate_section(args, base)
    result["load_end"] = loadavg()
    result["wall_s"] = round(time.perf_counter() - started, 1)
    result["others_cpus"] = others.now()
    if args.out:
        png = args.out.with_name(args.out.stem + "_latency_vs_targets.png")
        result["plot"] = png.name
        plot(result, png)
        atomic_write_text(args.out.with_suffix(".json"), strict_json(result, indent=1) + "\n")
        atomic_write_text(args.out, markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
