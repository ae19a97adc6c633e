"""WorkRB vs ours for one model on one task: the same encoder through WorkRB's runner and through WorkBench's.

    PYTHONPATH=. UWE_MODEL_DIR=models HF_HUB_OFFLINE=1 nice -n 15 .venv/bin/python \
        experiments/checks/workrb_parity.py --model minilm --scorer mean --task Job2Skill \
        --out experiments/results/workrb/parity.md

WorkRB reads ESCO from a private cache (``XDG_CACHE_HOME`` set to a temporary directory, the pack's CSVs
linked into it), never from the user's cache. Writes a markdown report: both numbers, times, ``uptime``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--scorer", default="mean")
    parser.add_argument("--task", default="Job2Skill", help="our task name (its WorkRB task is the alias)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--max-queries", type=int, default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=None, help="markdown report (default: print only)")
    args = parser.parse_args(argv)

    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="workrb-parity-")  # before WorkRB builds a path
    from uwe_lightning.integrations import workrb as bridge
    from uwe_lightning.io import atomic_write_text
    from uwe_lightning.ranking.ranker import Ranker
    from uwe_lightning.workbench.runner import EncoderRankingModel, evaluate

    load_before = uptime()
    bridge.link_esco(args.data_dir, versions=["1.2.0"])
    ranker = Ranker.from_pretrained(args.model, scorer=args.scorer)
    t0 = time.perf_counter()
    ours = evaluate(EncoderRankingModel(ranker), [args.task], args.split, args.data_dir,
                    max_queries=args.max_queries)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    theirs = bridge.evaluate_with_workrb(bridge.UWEWorkRBModel.from_ranker(ranker), [args.task], args.split,
                                         output_dir=Path(os.environ["XDG_CACHE_HOME"]) / "run",
                                         max_queries=args.max_queries)
    t_theirs = time.perf_counter() - t0
    load_after = uptime()
    if args.task not in ours["tasks"] or args.task not in theirs["tasks"]:
        print(f"task {args.task} not evaluated: ours {ours['unavailable']}, WorkRB {theirs['unavailable']}")
        return 1
    o, w = ours["tasks"][args.task], theirs["tasks"][args.task]

    def row(runner: str, r: dict, seconds: float) -> str:
        return (f"| {runner} | {100 * r['map']:.4f} | {100 * r['rp@10']:.4f} | {r['n_queries']:,} | "
                f"{r['n_targets']:,} | {seconds:.0f} |")

    rows = [row("ours (WorkBench runner)", o, t_ours),
            row(f"WorkRB {w['workrb_task']} (`workrb.evaluate`)", w, t_theirs)]
    command = ("PYTHONPATH=. UWE_MODEL_DIR=models HF_HUB_OFFLINE=1 nice -n 15 .venv/bin/python "
               "experiments/checks/workrb_parity.py ") + shlex.join(sys.argv[1:])
    report = "\n".join([
        f"### WorkRB vs ours: {args.model} ({args.scorer} scorer), {args.task} {args.split}", "",
        f"`{command}`", "",
        "| runner | MAP | RP@10 | queries | targets | seconds |", "|---|---:|---:|---:|---:|---:|", *rows, "",
        f"- |MAP difference| = {abs(o['map'] - w['map']):.2e}, "
        f"|RP@10 difference| = {abs(o['rp@10'] - w['rp@10']):.2e} (fractions, not percent).",
        "- Both runs share one encoder in memory; WorkRB encodes queries and targets itself through the "
        "bridge (`UWEWorkRBModel`) and computes its own metrics (`workrb.metrics.ranking`).",
        f"- Load before: `{load_before}`; after: `{load_after}` (2 shared cores, `nice -n 15`).", "",
    ])
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
