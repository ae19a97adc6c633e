"""Issue 32's library changes, timed before (a git ref, default ``main``) and after (this checkout) in one process.

- the edge-file reader (``uwe_lightning/data/edges.py::load_edges``) on the largest edge-format file the pack
  gives: ESCO v1.2.0's occupation-skill relations as (skill = skill URI, text = occupation preferredLabel),
  129,004 rows, written once to ``--work`` as CSV;
- the ranking-metrics kernel (``uwe_lightning/workbench/metrics.py::ranking_metrics``; the torchmetrics Metrics
  share it), on random scores of 1,024 queries x 13,939 targets at 1 thread.

Versions alternate, ``--reps`` times each; CPU seconds (``time.process_time``) of this process, which a shared,
loaded machine disturbs less than wall time; the median is reported. Run from the repository root:

    nice -n 15 python experiments/bench/bench_datasets_io.py [--before main] [--reps 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, os.getcwd())
from uwe_lightning.data import edges as edges_after  # noqa: E402
from uwe_lightning.data.graphs import load_vocabulary  # noqa: E402
from uwe_lightning.paths import resolve_data_dir  # noqa: E402
from uwe_lightning.workbench import metrics as metrics_after  # noqa: E402


def module_at(ref: str, relpath: str, work: Path):
    source = subprocess.run(["git", "show", f"{ref}:{relpath}"], check=True, capture_output=True, text=True).stdout
    path = work / f"before_{Path(relpath).stem}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def edge_file(work: Path) -> Path:
    out = work / "esco_v1.2.0_occupation_skill_edges.csv"
    if not out.exists():
        pack = resolve_data_dir(None) / "esco" / "v1.2.0"
        relations = pd.read_csv(pack / "occupationSkillRelations_en.csv", dtype=str)
        labels = pd.read_csv(pack / "occupations_en.csv", dtype=str).set_index("conceptUri")["preferredLabel"]
        pd.DataFrame({"skill": relations["skillUri"], "text": relations["occupationUri"].map(labels)}).to_csv(
            out, index=False)
    return out


def timed(fn, reps: int, versions: dict) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in versions}
    results = {}
    for _ in range(reps):
        for name, module in versions.items():
            start = time.process_time()
            results[name] = fn(module)
            times[name].append(time.process_time() - start)
    return times, results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", default="main")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--work", default=tempfile.gettempdir())
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    work = Path(args.work)
    lines = [f"# before = `{args.before}`, after = this checkout; CPU seconds, median of {args.reps} "
             f"(all runs in brackets); load: {os.getloadavg()[0]:.1f} at start", ""]

    path = edge_file(work)
    vocab = load_vocabulary("esco-v1.2.0")
    versions = {"before": module_at(args.before, "uwe_lightning/data/edges.py", work), "after": edges_after}
    times, graphs = timed(lambda m: m.load_edges(path, vocab, "J"), args.reps, versions)
    assert graphs["before"].texts == graphs["after"].texts and graphs["before"].n_edges == graphs["after"].n_edges
    lines.append(f"load_edges, {graphs['after'].meta['rows']:,} rows ({graphs['after'].n_edges:,} edges):")
    for name, ts in times.items():
        lines.append(f"  {name}: {statistics.median(ts):.3f} s {[round(t, 3) for t in ts]}")
    lines.append(f"  after / before: {statistics.median(times['after']) / statistics.median(times['before']):.3f}")

    torch.set_num_threads(1)
    torch.manual_seed(0)
    scores = torch.randn(1024, 13939)
    labels = [torch.randint(0, 13939, (int(n),)).tolist() for n in torch.randint(1, 30, (1024,))]
    versions = {"before": module_at(args.before, "uwe_lightning/workbench/metrics.py", work),
                "after": metrics_after}
    times, results = timed(lambda m: m.ranking_metrics(scores, labels, chunk_size=1024), args.reps, versions)
    assert results["before"] == results["after"]
    lines.append("ranking_metrics, 1,024 x 13,939 scores, 1 thread (identical results):")
    for name, ts in times.items():
        lines.append(f"  {name}: {statistics.median(ts):.3f} s {[round(t, 3) for t in ts]}")
    lines.append(f"  after / before: {statistics.median(times['after']) / statistics.median(times['before']):.3f}")
    lines.append(f"load: {os.getloadavg()[0]:.1f} at the end")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
