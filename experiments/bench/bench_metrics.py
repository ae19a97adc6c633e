"""Speed of the WorkBench metrics at SkillNorm-test size, and against workrb's reference.

Scores come block by block from a matmul of random normalised embeddings; each query is a noisy copy of
its first positive target (cosine ~0.16, against 0 +- 0.05 for the others, so ranks vary). The full score
matrix never exists. We time the metrics alone and the whole loop, then run workrb's
``calculate_ranking_metrics`` and ours on the same scores of a query subset (workrb needs the full subset
matrix in memory and loops in Python per query and per target).

    .venv/bin/python experiments/bench/bench_metrics.py
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from uwe_lightning.workbench.metrics import RankingMetrics, ranking_metrics

RESULTS = Path(__file__).resolve().parents[1] / "results" / "metrics_speed.md"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--queries", type=int, default=73_311, help="SkillNorm test (published split)")
    parser.add_argument("--targets", type=int, default=13_939, help="ESCO skills")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--chunk-size", type=int, default=4096, help="queries scored per block")
    parser.add_argument("--multi-label-fraction", type=float, default=0.02)
    parser.add_argument("--subset", type=int, default=2000, help="queries compared with workrb")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (scoring matmuls)")
    parser.add_argument("--metric-threads", type=int, default=1, help="RankingMetrics(cpu_threads=...)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args()


def make_labels(
    rng: np.random.Generator, n_queries: int, n_targets: int, multi_fraction: float
) -> list[list[int]]:
    """One positive per query; ``multi_fraction`` of queries get 2-4 (identical altLabels of several skills)."""
    labels = [[int(t)] for t in rng.integers(0, n_targets, n_queries)]
    for q in np.flatnonzero(rng.random(n_queries) < multi_fraction):
        extra = rng.choice(n_targets, size=int(rng.integers(1, 4)), replace=False)
        labels[q] = sorted({labels[q][0], *map(int, extra)})
    return labels


def normalised(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


def query_embeddings(
    targets: torch.Tensor, labels: list[list[int]], start: int, stop: int, seed: int
) -> torch.Tensor:
    """Noisy copies of each query's first positive, generated per block (seeded by block start)."""
    generator = torch.Generator().manual_seed((seed + 1) * 1_000_003 + start)  # not the targets' seed
    first = torch.tensor([row[0] for row in labels[start:stop]])
    noise = torch.randn(stop - start, targets.shape[1], generator=generator).to(targets.device)
    return normalised(targets[first.to(targets.device)] + 0.3 * noise)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_full(targets, labels, args, device) -> tuple[dict, float, float, float]:
    """Metrics over all queries, block by block: (metrics, metrics seconds, scoring seconds, total seconds)."""
    metrics = RankingMetrics(ks=(10,), cpu_threads=args.metric_threads)
    metric_seconds = score_seconds = 0.0
    start_all = time.perf_counter()
    for start in range(0, len(labels), args.chunk_size):
        stop = min(start + args.chunk_size, len(labels))
        queries = query_embeddings(targets, labels, start, stop, args.seed)
        t0 = time.perf_counter()
        scores = queries @ targets.T
        sync(device)
        t1 = time.perf_counter()
        metrics.update(scores, labels[start:stop])
        sync(device)
        t2 = time.perf_counter()
        score_seconds += t1 - t0
        metric_seconds += t2 - t1
    return metrics.compute(), metric_seconds, score_seconds, time.perf_counter() - start_all


def timed(function, repeats: int) -> tuple[object, list[float]]:
    """(result, seconds of each run): the CPU is shared, so we report every run and compare the fastest."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - start)
    return result, seconds


def run_subset(targets, labels, args) -> dict:
    """workrb vs ours on the same [subset, targets] score matrix (CPU)."""
    from workrb.metrics.ranking import calculate_ranking_metrics

    subset_labels = labels[: args.subset]
    scores = (query_embeddings(targets, labels, 0, args.subset, args.seed) @ targets.T).cpu()
    ours, ours_s = timed(lambda: ranking_metrics(scores, subset_labels, chunk_size=args.chunk_size), 3)
    ours_2, ours_2_s = timed(
        lambda: ranking_metrics(scores, subset_labels, chunk_size=args.chunk_size, cpu_threads=2), 3
    )
    assert ours_2 == ours, "thread count changed the metrics"
    reference, reference_s = timed(
        lambda: calculate_ranking_metrics(scores, subset_labels, metrics=("map", "rp@10")), 2
    )
    # Random float scores: ties are (almost surely) absent, so unpatched workrb must agree exactly.
    return {
        "ours": ours,
        "reference": reference,
        "ours_s": ours_s,
        "ours_2_threads_s": ours_2_s,
        "reference_s": reference_s,
    }


def seconds_cell(runs: list[float]) -> str:
    return f"{min(runs):.3f} (runs: {', '.join(f'{s:.3f}' for s in runs)})"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def report(args, full, metric_s, score_s, total_s, subset, device) -> str:
    speedup = min(subset["reference_s"]) / min(subset["ours_s"])
    command = " ".join([".venv/bin/python experiments/bench/bench_metrics.py", *sys.argv[1:]])
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    lines = [
        "# WorkBench metrics speed (MAP, RP@10)",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {device_name}; os.cpu_count() = {os.cpu_count()}; torch.get_num_threads() = "
        f"{torch.get_num_threads()}; torch {torch.__version__}; numpy {np.__version__}; "
        f"Python {platform.python_version()}; device {device}. Load average at start: {args.load_at_start} "
        "(the 2 cores are shared, so timings vary from run to run).",
        "",
        f"Setting: {args.queries:,} queries x {args.targets:,} targets (SkillNorm-test size), dim {args.dim}, "
        f"blocks of {args.chunk_size} queries scored by a matmul (the full matrix never exists); "
        f"{full['n_queries']:,} counted queries, ~{args.multi_label_fraction:.0%} multi-label.",
        "",
        "| measurement | seconds |",
        "|---|---|",
        f"| metrics only (`RankingMetrics.update`, cpu_threads={args.metric_threads}, all {args.queries:,} "
        f"queries) | {metric_s:.2f} |",
        f"| scoring matmuls | {score_s:.2f} |",
        f"| total loop (incl. generating query embeddings) | {total_s:.2f} |",
        "",
        f"Result on the full set: MAP {full['map']:.6f}, RP@10 {full['rp@10']:.6f}.",
        "",
        f"Against workrb 0.6.0 `calculate_ranking_metrics` on the same scores of the first {args.subset:,} "
        "queries (CPU, one score matrix):",
        "",
        "| implementation | seconds (fastest run) | MAP | RP@10 |",
        "|---|---|---|---|",
        f"| workrb (reference) | {seconds_cell(subset['reference_s'])} | {subset['reference']['map']:.8f} | "
        f"{subset['reference']['rp@10']:.8f} |",
        f"| ours (`ranking_metrics`, cpu_threads=1, the default) | {seconds_cell(subset['ours_s'])} | "
        f"{subset['ours']['map']:.8f} | {subset['ours']['rp@10']:.8f} |",
        f"| ours (`ranking_metrics`, cpu_threads=2) | {seconds_cell(subset['ours_2_threads_s'])} | "
        f"{subset['ours']['map']:.8f} | {subset['ours']['rp@10']:.8f} |",
        "",
        f"Speed-up (fastest workrb run / fastest run of ours, default): {speedup:.0f}x. workrb extrapolated to all {args.queries:,} queries: "
        f"~{min(subset['reference_s']) * args.queries / args.subset:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    args.load_at_start = " ".join(f"{load:.2f}" for load in os.getloadavg())
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rng = np.random.default_rng(args.seed)
    labels = make_labels(rng, args.queries, args.targets, args.multi_label_fraction)
    generator = torch.Generator().manual_seed(args.seed)
    targets = normalised(torch.randn(args.targets, args.dim, generator=generator)).to(device)

    full, metric_s, score_s, total_s = run_full(targets, labels, args, device)
    print(
        f"full: {full}; metrics {metric_s:.2f} s, scoring {score_s:.2f} s, total {total_s:.2f} s", flush=True
    )
    subset = run_subset(targets, labels, args)
    print(
        f"subset: ours {subset['ours_s']} s (2 threads {subset['ours_2_threads_s']} s) {subset['ours']}; workrb {subset['reference_s']} s "
        f"{subset['reference']}",
        flush=True,
    )
    for name in ("map", "rp@10"):
        if abs(subset["ours"][name] - subset["reference"][name]) > 1e-6:
            raise SystemExit(
                f"{name} differs from workrb: {subset['ours'][name]} vs {subset['reference'][name]}"
            )

    text = report(args, full, metric_s, score_s, total_s, subset, device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
