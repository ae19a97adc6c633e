"""Issue 29, part 2: the label-overlap table (training graphs x evaluation tasks x splits), and MAP of the
zero-shot model on the overlapping vs the non-overlapping queries.

    nice -n 15 python experiments/studies/transfer_controls/overlap.py table --splits val test
    nice -n 15 python experiments/studies/transfer_controls/overlap.py map --max-queries 2000

``table`` writes overlap.json + overlap.md (and the per-query flags, overlap_flags.json.gz, which ``map`` reads)
into --out; MiniLM embeddings are cached under --cache-dir (default: the project's cache dir / overlap).
The cosine test runs on the fixed 2,000-query subsets a run tests on (--cosine-max-queries; 0: every query),
the verbatim and Jaccard tests on every query. ``map`` scores zero-shot MiniLM (mean pooling) on the test
tasks' fixed query subsets and on their overlapping / non-overlapping queries (the WorkBench runner's views), into
overlap_map.json + overlap_map.md; a trained model the same way, against the zero-shot one:

    python experiments/studies/transfer_controls/overlap.py map --model <run>/best_model --name overlap_map_all-seed0 \
        --baseline experiments/results/transfer_controls/overlap_map.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))  # this checkout's package, not another install

from uwe_lightning.io import atomic_write_bytes, atomic_write_json, atomic_write_text  # noqa: E402
from uwe_lightning.paths import resolve_cache_dir  # noqa: E402
from uwe_lightning.studies import overlap  # noqa: E402

OUT = Path("experiments/results/transfer_controls")
FLAGS_FILE = "overlap_flags.json.gz"
MINILM = "models/all-MiniLM-L6-v2"


def command_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def say(message: str) -> None:
    print(f"[overlap {time.strftime('%H:%M:%S')}] {message}", flush=True)


def table(args: argparse.Namespace) -> None:
    embed = None
    if not args.no_cosine:
        raw = overlap.sentence_transformer_embedder(args.model)
        embed = overlap.CachedEmbedder(raw, Path(args.cache_dir), model_id=str(Path(args.model).resolve().name))
    start = time.perf_counter()
    out = overlap.protocol_overlap(args.data_dir, args.splits, embed, progress=say,
                                   cosine_max_queries=args.cosine_max_queries)
    flags = {key: {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in value.items()}
             for key, value in out.pop("query_flags").items()}
    out["command"] = command_line()
    out["seconds"] = round(time.perf_counter() - start, 1)
    out["thresholds"] = {"jaccard": overlap.JACCARD_THRESHOLD, "cosine": overlap.COSINE_THRESHOLD,
                         "cosine_model": None if embed is None else str(args.model),
                         "cosine_max_queries": None if embed is None else args.cosine_max_queries}
    dest = Path(args.out)
    atomic_write_json(dest / "overlap.json", out)
    atomic_write_text(dest / "overlap.md", overlap.overlap_markdown(out["rows"], out["command"]))
    atomic_write_bytes(dest / FLAGS_FILE, gzip.compress(json.dumps(flags).encode(), mtime=0))
    say(f"wrote {dest}/overlap.json, overlap.md, {FLAGS_FILE} in {out['seconds']} s")


def map_by_overlap(args: argparse.Namespace) -> None:
    from uwe_lightning.ranking.ranker import Ranker
    from uwe_lightning.workbench.runner import evaluate_ranker

    flags = json.loads(gzip.decompress((Path(args.out) / FLAGS_FILE).read_bytes()))
    by_task = overlap.flags_for_split(flags, args.split)
    criteria = [c for c in args.criteria if all(c in v for v in by_task.values())]
    views = {}
    for criterion in criteria:
        views.update(overlap.overlap_views(by_task, criterion))
    model_id = args.model_id or ("all-MiniLM-L6-v2 (zero-shot, mean)" if args.model == MINILM else str(args.model))
    ranker = Ranker.from_pretrained(str(args.model), scorer=args.scorer, model_id=model_id)
    results = evaluate_ranker(ranker, list(overlap.SPLIT_TASKS[args.split]), args.split, args.data_dir,
                              max_queries=args.max_queries, seed=0, views=views, show_progress=True)
    results["command"] = command_line()
    baseline = json.loads(Path(args.baseline).read_text()) if args.baseline else None
    dest = Path(args.out)
    atomic_write_json(dest / f"{args.name}.json", results)
    atomic_write_text(dest / f"{args.name}.md",
                      overlap.views_markdown(results, criteria, results["command"], baseline=baseline))
    say(f"wrote {dest}/{args.name}.json, {args.name}.md")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["table", "map"])
    parser.add_argument("--splits", nargs="+", default=["val", "test"], choices=sorted(overlap.SPLIT_TASKS))
    parser.add_argument("--split", default="test", choices=sorted(overlap.SPLIT_TASKS), help="map: the split")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--model", default=MINILM, help="the model to embed (table) / to score (map)")
    parser.add_argument("--model-id", default=None, help="map: the model's name in the tables")
    parser.add_argument("--scorer", default="mean", help="map: the scorer (mean: the zero-shot baseline's)")
    parser.add_argument("--name", default="overlap_map", help="map: the output files' stem in --out")
    parser.add_argument("--baseline", default=None,
                        help="map: another map's json (e.g. the zero-shot overlap_map.json): differences to it")
    parser.add_argument("--cache-dir", default=str(resolve_cache_dir() / "overlap"))
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--no-cosine", action="store_true", help="table: skip the embedding test (model-free)")
    parser.add_argument("--cosine-max-queries", type=int, default=2000,
                        help="table: the cosine test on the fixed 2,000-query subsets a run tests on (0: all)")
    parser.add_argument("--max-queries", type=int, default=2000, help="map: queries per task (the test subsets)")
    parser.add_argument("--criteria", nargs="+", default=list(overlap.CRITERIA))
    args = parser.parse_args(argv)
    args.cosine_max_queries = args.cosine_max_queries or None
    (table if args.what == "table" else map_by_overlap)(args)


if __name__ == "__main__":
    main()
