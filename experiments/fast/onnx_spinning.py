"""ONNX Runtime's idle-worker spinning vs none, end to end (tokenise, encode, score, top-10), in one run.

ONNX Runtime's default keeps its intra-op workers busy-waiting after each run; the scorer, which runs next in
torch, then shares the cores with them. ``OnnxEncoder`` turns spinning off; this measures what that changes.
The two sessions run in blocks A B A (no spinning, spinning, no spinning) on the same cached target spaces.

    PYTHONPATH=. python experiments/fast/onnx_spinning.py --out experiments/results/fast/onnx_spinning.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from uwe_lightning.cli.export import onnx_model_dir
from uwe_lightning.efficiency.benchmark import load_datasets
from uwe_lightning.efficiency.measure import OtherCpu, load_average, sample_queries
from uwe_lightning.efficiency.spaces import by_target_pooling, encode_task_spaces
from uwe_lightning.io import atomic_write_text
from uwe_lightning.model.onnx import OnnxEncoder
from uwe_lightning.paths import resolve_cache_dir
from uwe_lightning.ranking.ranker import Ranker


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="minilm")
    p.add_argument("--tasks", nargs="+", default=["Job2Skill", "SkillExtr-H"])
    p.add_argument("--scorers", nargs="+", default=["mean", "softmax"])
    p.add_argument("--queries", type=int, default=40)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--scratch", type=Path, default=Path("outputs/bench_peers/onnx"),
                   help="where the export is made when the model directory has none (as in bench_peers.py)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    base = Ranker.from_pretrained(args.model, device="cpu")
    load_start, others = load_average(), OtherCpu()
    datasets, _ = load_datasets(args.tasks, "test", None)
    rankers = {s: base.with_scorer(s) for s in args.scorers}
    spaces, task_space = encode_task_spaces(datasets, by_target_pooling(rankers), resolve_cache_dir() / "targets",
                                            False, print)
    onnx = Ranker.from_pretrained(str(onnx_model_dir(base.model_dir, args.scratch / Path(base.model_dir).name, int8=False)), device="cpu", query_backend="onnx")
    quiet_encoder = onnx.query_encoder
    spinning_encoder = OnnxEncoder(quiet_encoder, quiet_encoder.onnx_file, spinning=True)
    rows = []
    for task, ds in datasets.items():
        queries = sample_queries(ds.queries, args.queries + 3, 0)
        for scorer in args.scorers:
            ranker = onnx.with_scorer(scorer, tau=rankers[scorer].spec.tau)
            space = spaces[task_space[task]].encoded[ranker.pooled("target")]
            ranker.prepare(space)
            times: dict[str, list[float]] = {"no spinning (ours)": [], "spinning (ONNX Runtime default)": []}
            # Blocks A B A (not query by query: a spinning session's workers would also slow the next query of
            # the other session); A twice so that a drift of the machine shows in neither alone.
            for label, encoder in (("no spinning (ours)", quiet_encoder),
                                   ("spinning (ONNX Runtime default)", spinning_encoder),
                                   ("no spinning (ours)", quiet_encoder)):
                ranker.query_encoder = encoder
                for i, q in enumerate(queries):
                    start = time.perf_counter()
                    ranker.rank([q], space, k=10)
                    if i >= 3:  # warm-up
                        times[label].append(1000 * (time.perf_counter() - start))
                time.sleep(0.5)  # the spinning workers' busy-wait ends before the next block
            p50 = {k: float(np.median(v)) for k, v in times.items()}
            rows.append((task, scorer, p50["no spinning (ours)"], p50["spinning (ONNX Runtime default)"]))
            print(f"{task} {scorer}: {p50}", flush=True)
    lines = ["# ONNX Runtime query encoder: idle-worker spinning vs none, end to end", "",
             f"Command: `python experiments/fast/onnx_spinning.py {' '.join(argv or sys.argv[1:])}`  ",
             f"{args.model}, {args.threads} threads, {args.queries} queries per block, blocks A B A (no spinning twice, "
             f"spinning between); load average {load_start[0]:.2f} at the start; other processes kept {others.now():.2f} "
             "CPUs busy.", "",
             "| task | scorer | p50 ms, no spinning (ours) | p50 ms, spinning (default) | ratio |", "|---|---|---:|---:|---:|"]
    lines += [f"| {t} | {s} | {a:.1f} | {b:.1f} | {b / a:.2f} |" for t, s, a, b in rows]
    text = "\n".join(lines) + "\n"
    if args.out:
        atomic_write_text(args.out, text)
    print(text)
    return text


if __name__ == "__main__":
    main()
