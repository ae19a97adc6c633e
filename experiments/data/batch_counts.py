"""What a training step holds on the open protocol's graphs: skill rows, texts per graph, rows without a positive.

    python experiments/data/batch_counts.py [--steps 200] [--sizes 512 64] [--out experiments/results/batch_counts]

Samples ``--steps`` steps (seed 0) with each ``data.sampling`` at each ``skills_per_step`` (no tokenizer, no
model: :meth:`UWETrainDataset.sample` only) and writes ``batch_counts.md`` / ``.json`` with the means and the
min/max over steps. These are the numbers the configs' and README's comments quote.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from uwe_lightning.data.datamodule import UWETrainDataset
from uwe_lightning.data.sampling import SAMPLINGS
from uwe_lightning.io import atomic_write_json, atomic_write_text
from uwe_lightning.protocol import build_open_protocol


def step_counts(dataset: UWETrainDataset, steps: int) -> dict:
    rows: dict[str, list[float]] = {"skills": []}
    for step in range(steps):
        sample = dataset.sample(step)
        rows["skills"].append(len(sample.skills))
        for name, part in sample.graphs.items():
            rows.setdefault(f"{name}/texts", []).append(part.pos_mask.shape[1])
            rows.setdefault(f"{name}/rows_without_positive", []).append(int((~part.pos_mask.any(axis=1)).sum()))
    return {key: {"mean": float(np.mean(v)), "min": int(np.min(v)), "max": int(np.max(v))} for key, v in rows.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 64])
    parser.add_argument("--out", type=Path, default=Path("experiments/results/batch_counts"))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    protocol = build_open_protocol()
    results: dict = {"steps": args.steps, "counts": protocol.meta["counts"], "runs": {}}
    for size in args.sizes:
        for sampling in SAMPLINGS:
            dataset = UWETrainDataset(protocol.vocab, protocol.graphs, skills_per_step=size, sampling=sampling)
            results["runs"][f"{sampling}@{size}"] = step_counts(dataset, args.steps)
            print(f"[batch_counts] {sampling} S={size}: done", file=sys.stderr, flush=True)
    results["seconds"] = round(time.perf_counter() - start, 1)
    results["loadavg"] = Path("/proc/loadavg").read_text().strip() if Path("/proc/loadavg").exists() else None
    lines = [
        "# Texts per training step on the open protocol",
        "",
        f"`python experiments/data/batch_counts.py --steps {args.steps} --sizes {' '.join(map(str, args.sizes))}` "
        f"(seed 0, {results['seconds']} s, load average `{results['loadavg']}`). Graphs: "
        + ", ".join(f"{g} {c['texts']:,} texts / {c['edges']:,} edges / {c['skills_covered']:,} skills"
                    for g, c in results["counts"].items()) + ".",
        "",
        "| sampling | S | skill rows | J texts | V texts | A texts | texts in all | J rows w/o positive | "
        "V rows w/o positive | A rows w/o positive |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, run in results["runs"].items():
        sampling, size = key.split("@")
        graphs = ("J", "V", "A")
        total = run["skills"]["mean"] + sum(run[f"{g}/texts"]["mean"] for g in graphs)
        no_pos = [run[f"{g}/rows_without_positive"]["mean"] / run["skills"]["mean"] for g in graphs]
        lines.append(
            f"| {sampling} | {size} | {run['skills']['mean']:.1f} | "
            + " | ".join(f"{run[f'{g}/texts']['mean']:.1f}" for g in graphs)
            + f" | {total:.0f} | " + " | ".join(f"{x:.1%}" for x in no_pos) + " |"
        )
    lines += ["", "Means over the steps; min/max per step in `batch_counts.json`. `texts in all` = skill rows + "
              "the three graphs' texts (the paper's 2,048 at S = 512 assumes full coverage)."]
    atomic_write_json(args.out / "batch_counts.json", results)
    atomic_write_text(args.out / "batch_counts.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return results


if __name__ == "__main__":
    main()
