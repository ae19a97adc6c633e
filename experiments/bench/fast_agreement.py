"""What the fast and the reduced-precision paths cost in ranking quality on WorkBench (load-independent).

For each WorkBench test task (a fixed random subset of ``--max-queries`` queries; the full target space) and
each scorer, against the fp32 fast path (``precision=fp32``, itself checked against the reference path):

- ``reference``: the reference scorer path (``fast=False``) on ``--reference-tasks``: top-10 identical?
- ``fp16``: fp16 storage of the target tokens (``precision=fp16``): top-10 agreement and MAP;
- ``onnx``, ``onnx_int8``, ``torch_int8``: the queries encoded by that backend (targets stay torch fp32-encoded,
  the fp32 fast path scores): top-10 agreement and MAP (the int8 rows are the MAP cost of int8 query encoders).

Top-10 agreement of a query = |top-10 of the variant & top-10 of fp32| / 10 (ties: lower index first); reported
per task as the mean over queries. ``DEFAULT_PRECISION`` in uwe_lightning/ranking/fast.py gives fp16 only to
scorers whose worst task reaches ``--threshold`` (tests/test_fast.py checks the two agree).

    PYTHONPATH=. nice -n 19 .venv/bin/python experiments/bench/fast_agreement.py --model minilm \
        --out experiments/results/fast/agreement.md

Timings are not taken here (the numbers do not depend on the machine's load); the ONNX export is made in a
scratch copy of the model directory (``--onnx-dir``, symlinks + export) when the model directory has none.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from uwe_lightning.cli.export import onnx_model_dir
from uwe_lightning.efficiency.measure import machine_info
from uwe_lightning.efficiency.spaces import by_target_pooling, encode_task_spaces
from uwe_lightning.io import atomic_write_text, strict_json
from uwe_lightning.paths import resolve_cache_dir
from uwe_lightning.ranking.fast import DEFAULT_PRECISION, topk_stable
from uwe_lightning.ranking.ranker import Ranker
from uwe_lightning.workbench.metrics import RankingMetrics
from uwe_lightning.workbench.runner import load_tasks, subsample

SCORERS = ("mean", "maxsim", "softmax_ymean", "softmax")
TASKS = ("Job2Skill", "Skill2Job", "JobNorm", "SkillNorm", "SkillExtr-T", "SkillExtr-H")
BACKENDS = ("onnx", "onnx_int8", "torch_int8")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="minilm")
    p.add_argument("--tasks", nargs="+", default=list(TASKS))
    p.add_argument("--scorers", nargs="+", default=list(SCORERS))
    p.add_argument("--max-queries", type=int, default=1000, help="queries per task (fixed random subset; 0 = all)")
    p.add_argument("--backends", nargs="*", default=list(BACKENDS), help="query backends compared with torch")
    p.add_argument("--reference-tasks", nargs="*", default=["JobNorm", "Skill2Job"],
                   help="tasks where the fp32 fast path is compared with the reference path (fast=False)")
    p.add_argument("--threshold", type=float, default=0.999)
    p.add_argument("--onnx-dir", type=Path, default=Path("outputs/onnx"))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None, help="markdown report (a .json beside it)")
    p.add_argument("--update", action="store_true",
                   help="keep the other scorers' rows of an existing --out .json (re-measure only --scorers)")
    return p.parse_args()


def top10_agreement(a: torch.Tensor, b: torch.Tensor, k: int = 10) -> tuple[float, float]:
    """(mean |top-k(a) & top-k(b)| / k, fraction of rows whose top-k lists are identical in order)."""
    ia, ib = topk_stable(a, k)[1], topk_stable(b, k)[1]
    overlap = sum(len(set(x) & set(y)) for x, y in zip(ia.tolist(), ib.tolist(), strict=True))
    return overlap / (k * len(ia)), float((ia == ib).all(1).float().mean())


class Accumulator:
    """Agreement with the fp32 scores and MAP, block by block."""

    def __init__(self) -> None:
        self.overlap = self.identical = self.rows = 0.0
        self.metrics = RankingMetrics(ks=(10,))

    def update(self, scores: torch.Tensor, exact: torch.Tensor, labels, exclude) -> None:
        agree, same = top10_agreement(scores, exact)
        self.overlap += agree * len(scores)
        self.identical += same * len(scores)
        self.rows += len(scores)
        self.metrics.update(scores, labels, exclude)

    def result(self) -> dict:
        m = self.metrics.compute()
        return {"top10_agreement": self.overlap / self.rows, "top10_identical": self.identical / self.rows,
                "map": m["map"], "rp@10": m["rp@10"], "n_queries": int(self.rows)}


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    base = Ranker.from_pretrained(args.model, device="cpu", precision="fp32")
    machine = machine_info(base.device)
    datasets, unavailable = load_tasks(args.tasks, "test")
    datasets = {n: subsample(ds, args.max_queries or None, 0) for n, ds in datasets.items()}
    rankers = {s: base.with_scorer(s) for s in args.scorers}
    cache_dir = resolve_cache_dir() / "targets"
    spaces, task_space = encode_task_spaces(datasets, by_target_pooling(rankers), cache_dir, False, print)

    backends: dict[str, Ranker] = {"torch": base}
    onnx_dir = onnx_model_dir(base.model_dir, args.onnx_dir / Path(base.model_dir).name,
                              int8="onnx_int8" in args.backends) if args.backends else None
    for backend in args.backends:
        source = onnx_dir if backend.startswith("onnx") else base.model_dir
        backends[backend] = Ranker.from_pretrained(str(source), device="cpu", precision="fp32",
                                                   query_backend=backend)
    queries = list(dict.fromkeys(q for ds in datasets.values() for q in ds.queries))
    raw: dict[str, dict[str, torch.Tensor]] = {}
    for backend, ranker in backends.items():
        t0 = time.perf_counter()
        raw[backend] = dict(zip(queries, ranker.embed(queries, side="query"), strict=True))
        print(f"[agreement] {len(queries)} queries embedded by {backend} in {time.perf_counter() - t0:.0f}s",
              flush=True)

    result: dict = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "model": args.model,
                    "threshold": args.threshold, "max_queries": args.max_queries, "machine": machine,
                    "unavailable": unavailable, "default_precision": dict(DEFAULT_PRECISION), "scorers": {}}
    for scorer in args.scorers:
        exact_ranker = rankers[scorer]
        variants = {"fp16": exact_ranker.with_scorer(scorer, tau=exact_ranker.spec.tau, precision="fp16")}
        rows: dict[str, dict] = {v: {"tasks": {}} for v in ("reference", "fp16", *args.backends)}
        for name, ds in datasets.items():
            space = spaces[task_space[name]].encoded[exact_ranker.pooled("target")]
            packed = {b: exact_ranker.pack([raw[b][q] for q in ds.queries], "query") for b in backends}
            acc = {v: Accumulator() for v in ("exact", "fp16", *args.backends)}
            reference = exact_ranker.with_scorer(scorer, tau=exact_ranker.spec.tau, fast=False) \
                if name in args.reference_tasks else None
            if reference is not None:
                acc["reference"] = Accumulator()
            blocks = {b: exact_ranker.score_blocks(packed[b], space, block_size=512) for b in backends}
            fp16_blocks = variants["fp16"].score_blocks(packed["torch"], space, block_size=512)
            ref_blocks = reference.score_blocks(packed["torch"], space, block_size=512) if reference else None
            for start, exact in blocks["torch"]:
                stop = start + len(exact)
                labels = ds.labels[start:stop]
                exclude = None if ds.exclude is None else ds.exclude[start:stop]
                acc["exact"].update(exact, exact, labels, exclude)
                acc["fp16"].update(next(fp16_blocks)[1], exact, labels, exclude)
                for b in args.backends:
                    acc[b].update(next(blocks[b])[1], exact, labels, exclude)
                if ref_blocks is not None:
                    acc["reference"].update(next(ref_blocks)[1], exact, labels, exclude)
            exact_row = acc.pop("exact").result()
            for variant, a in acc.items():
                row = a.result()
                row["map_fp32"] = exact_row["map"]
                row["map_diff"] = row["map"] - exact_row["map"]
                row["n_targets"] = len(space)
                rows[variant]["tasks"][name] = row
            print(f"[agreement] {scorer:>13} {name:<12} " + "  ".join(
                f"{v} {rows[v]['tasks'][name]['top10_agreement']:.5f} ({100 * rows[v]['tasks'][name]['map_diff']:+.3f})"
                for v in rows if name in rows[v]["tasks"]), flush=True)
        for row in rows.values():
            tasks = row["tasks"]
            if tasks:
                row["worst_top10_agreement"] = min(t["top10_agreement"] for t in tasks.values())
                row["mean_map_diff"] = sum(t["map_diff"] for t in tasks.values()) / len(tasks)
        result["scorers"][scorer] = {v: r for v, r in rows.items() if r["tasks"]}
        result.setdefault("measured_by", {})[scorer] = result["command"]
    if args.update and args.out and args.out.with_suffix(".json").is_file():
        old = json.loads(args.out.with_suffix(".json").read_text())
        for scorer, rows in old["scorers"].items():
            if scorer not in result["scorers"]:
                result["scorers"][scorer] = rows
                result["measured_by"][scorer] = old.get("measured_by", {}).get(scorer, old["command"])
        result["scorers"] = {s: result["scorers"][s] for s in SCORERS if s in result["scorers"]}
    result["machine"]["load_average_end"] = list(os.getloadavg())
    result["wall_s"] = round(time.perf_counter() - started, 1)
    text = markdown(result)
    print(text)
    if args.out:
        atomic_write_text(args.out, text)
        atomic_write_text(args.out.with_suffix(".json"), strict_json(result, indent=1) + "\n")


def markdown(r: dict) -> str:
    lines = [f"# Ranking agreement of the fast and reduced-precision paths: {r['model']} (WorkBench test)", "",
             f"Command: `{r['command']}`", "",
             f"{r['max_queries'] or 'all'} queries per task (fixed random subset, seed 0), full target spaces. "
             "Agreement = mean over queries of |top-10 & top-10 of the fp32 fast path| / 10; identical = the "
             "top-10 lists are equal in order; MAP diff = variant - fp32, in MAP points. These numbers do not "
             "depend on the machine's load (no timing here). Threshold for fp16 as a default: "
             f"{100 * r['threshold']:.1f} % on every task.", "",
             "| scorer | variant | worst task agreement | mean MAP diff (points) | per task: agreement / identical / MAP diff |",
             "|---|---|---:|---:|---|"]
    for scorer, variants in r["scorers"].items():
        for variant, row in variants.items():
            per_task = "; ".join(f"{t} {x['top10_agreement']:.5f} / {x['top10_identical']:.4f} / "
                                 f"{100 * x['map_diff']:+.3f}" for t, x in row["tasks"].items())
            lines.append(f"| {scorer} | {variant} | {row['worst_top10_agreement']:.5f} | "
                         f"{100 * row['mean_map_diff']:+.3f} | {per_task} |")
    if len(set(r.get("measured_by", {}).values())) > 1:
        lines += ["", "Measured by: " + "; ".join(f"{s}: `{c}`" for s, c in r["measured_by"].items())]
    lines += ["", "Variants: `reference` = the reference scorer path (fast=False) against the fp32 fast path; "
              "`fp16` = fp16 target storage (fbgemm fp16-weight GEMM); `onnx` / `onnx_int8` / `torch_int8` = "
              "queries encoded by that backend, targets by torch fp32, scored by the fp32 fast path.", "",
              "MAP of the fp32 fast path per task (points): " + ", ".join(
                  f"{t} {100 * x['map_fp32']:.2f}" for t, x in next(iter(r["scorers"].values()))["fp16"]["tasks"].items())
              + f" ({next(iter(r['scorers']))}).", "",
              f"Default precision after this run (uwe_lightning/ranking/fast.py): {r['default_precision']}.", "",
              f"Machine: {r['machine']['cpu_count']} CPUs, torch {r['machine']['torch']}; wall time {r['wall_s']} s "
              f"(load average {_load(r['machine']['load_average_start'])} at the start, "
              f"{_load(r['machine']['load_average_end'])} at the end: the machine was shared; that changes the "
              "wall time only)."]
    return "\n".join(lines) + "\n"


def _load(values) -> str:
    return "/".join(f"{v:.2f}" for v in values) if values else "n/a"


if __name__ == "__main__":
    sys.exit(main())
