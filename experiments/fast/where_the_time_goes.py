"""The "Where the time goes" section of docs/results.md, written from the json files that experiments/fast/quiet_run.sh
leaves (bench_peers.json, bench_eval.json, bench_eval_mpnet.json, fast/agreement.json), and make bench's
bench_minilm.json (the paper's Table 3 protocol).

A number whose source is missing, or whose run was not on quiet cores (other processes kept more than
``QUIET_OTHER_CPUS`` CPUs busy in a section; for runs that did not measure it, the 1-min load average above
``--max-load`` as it started), is printed as ``TODO-from-quiet_run``: a number measured under load is never published as
the answer to a latency target. Load-independent numbers (top-10 agreement, MAP differences, recall@10) are
filled whatever the load.

    PYTHONPATH=. python experiments/fast/where_the_time_goes.py --results experiments/results \\
        --out experiments/results/fast/where_the_time_goes.md [--readme docs/results.md]

``--readme`` replaces the text between ``<!-- where-the-time-goes:start -->`` and ``<!-- where-the-time-goes:end
-->`` in that file.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

from uwe_lightning.efficiency.measure import busiest_others, quiet_cores

TODO = "TODO-from-quiet_run"
START, END = "<!-- where-the-time-goes:start -->", "<!-- where-the-time-goes:end -->"
OURS = "ours (fp16, default)"
ST, FAISS, PADDED, REF = ("sentence-transformers semantic_search", "FAISS IndexFlatIP",
                          "padded einsum MaxSim (PyLate colbert_scores)", "reference path (before)")
BACKENDS = ("torch", "onnx", "onnx_int8", "torch_int8")
ST_E2E = "sentence-transformers encode + semantic_search"


def load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def quiet(run: dict | None, max_load: float, others_key: str | None = None) -> bool:
    """:func:`quiet_cores` of a run's json, its busiest section counted (``max_load`` for runs from before the
    measurement). ``others_key``: the block that holds the measurement (``make bench`` keeps it, and its load,
    in ``machine``)."""
    if not run:
        return False
    if others_key:
        block = run.get(others_key) or {}
        others, start = block.get("others_cpus"), (block.get("load_average_start") or [math.inf])[0]
    else:
        others, start = busiest_others(run), run["load_start"][0]
    return quiet_cores(others, start, max_load)


def ms(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return TODO
    return f"{x:.1f}" if x < 100 else f"{x:.0f}"


def verdict(value: float | None, limit: float) -> str:
    return TODO if value is None else ("yes" if value <= limit else "**no**")


def _get(d: dict | None, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def largest(points: dict) -> str:
    return max(points, key=int)


def section(peers: dict | None, ev: dict | None, ev_mpnet: dict | None, agree: dict | None, max_load: float,
            bench: dict | None = None) -> str:
    tp = peers if quiet(peers, max_load) else None  # timings only from a quiet run
    te = ev if quiet(ev, max_load) else None
    tm = ev_mpnet if quiet(ev_mpnet, max_load) else None
    sc = _get(tp, "scoring", "points") or {}

    def p50(scorer: str, label: str, size: str | None = None):
        pts = sc.get(scorer)
        if not pts:
            return None
        return _get(pts, size or largest(pts), label, "single", "p50")

    n_big = f"{int(largest(sc['softmax'])):,}" if "softmax" in sc else "99k"
    mean_ratio = None  # the worst over sizes of ours / semantic_search (<= 1: never slower)
    if "mean" in sc:
        mean_ratio = max(pt[OURS]["single"]["p50"] / pt[ST]["single"]["p50"] for pt in sc["mean"].values())
    e2e = _get(tp, "e2e", "summary") or {}

    def e2e_p50(scorer: str, backend: str):
        return _get(e2e, scorer, backend, "rank_p50_mean_over_tasks")

    def e2e_worst(scorer: str, backend: str):  # the target holds on every WorkBench target space, not on average
        return _get(e2e, scorer, backend, "rank_p50_max_over_tasks")

    def lossless(scorer: str, backend: str) -> bool:  # the rule for reduced precision: >= 99.9 % top-10
        v = _get(agree, "scorers", scorer, backend, "worst_top10_agreement")
        return backend == "torch" or v is None or v >= 0.999

    best = {s: min(((e2e_worst(s, b), b) for b in BACKENDS if e2e_worst(s, b) is not None and lossless(s, b)),
                   default=(None, "")) for s in ("mean", "softmax")}

    def e2e_cell(scorer: str) -> str:
        worst, backend = best[scorer]
        return TODO if worst is None else f"{ms(worst)} ms (mean of the six: {ms(e2e_p50(scorer, backend))})"

    def ev_min(run):
        return None if run is None else run["evaluate"]["wall_s"] / 60

    def agreement(scorer: str, variant: str) -> str:
        v = _get(agree, "scorers", scorer, variant)
        return TODO if v is None else f"{100 * v['worst_top10_agreement']:.2f} %"

    def map_diff(scorer: str, variant: str) -> str:
        v = _get(agree, "scorers", scorer, variant)
        return TODO if v is None else f"{100 * v['mean_map_diff']:+.3f}"

    fp16_worst = None
    if agree:
        fp16_worst = min(agree["scorers"][s]["fp16"]["worst_top10_agreement"] for s in agree["scorers"])
    load = TODO if tp is None else f"{tp['load_start'][0]} at the start, {tp['load_end'][0]} at the end"
    if tp is not None and busiest_others(tp) is not None:
        load += f", this run's own threads included; other processes: at most {busiest_others(tp):.2f} CPUs busy"
    threads = TODO if tp is None else tp["machine"]["torch_threads"]
    lines = [
        "## Where the time goes", "",
        "From `experiments/results/bench_peers.md`, `bench_eval.md` and `fast/agreement.md`.", "",
        f"Measured by `experiments/fast/quiet_run.sh` on the 2-core CPU with nothing else running (load average "
        f"{load}; {threads} threads), MiniLM (22.7M parameters, h = 384). The log with every command and "
        "`uptime` before and after is `experiments/results/fast/quiet_run.md`.", "",
        *([] if tp is not None else [
            f"*Draft: the timings wait for the quiet-core run (`{TODO}` cells); the run under load on the shared "
            "machine is in `experiments/results/bench_peers.md` and is not evidence for or against a target. "
            "Agreement, MAP differences and recall@10 do not depend on the load.*", ""]),
        "| target | limit | measured | met |", "|---|---:|---:|---|",
        f"| `softmax` scoring, {n_big} targets, one pre-encoded query (p50) | 150 ms | {ms(p50('softmax', OURS))} ms | "
        f"{verdict(p50('softmax', OURS), 150)} |",
        f"| `maxsim` scoring, {n_big} targets (p50) | 80 ms | {ms(p50('maxsim', OURS))} ms | "
        f"{verdict(p50('maxsim', OURS), 80)} |",
        f"| `mean` vs sentence-transformers `semantic_search`, every size (worst p50 ratio ours / theirs) | 1.00 | "
        f"{TODO if mean_ratio is None else f'{mean_ratio:.2f}'} | {verdict(mean_ratio, 1.0)} |",
        f"| end to end, `mean`, one query, slowest WorkBench test target space (fastest backend within 99.9 % "
        f"top-10 agreement: {best['mean'][1] or TODO}) | 8 ms | {e2e_cell('mean')} | {verdict(best['mean'][0], 8)} |",
        f"| end to end, `softmax` (same rule: {best['softmax'][1] or TODO}) | 25 ms | {e2e_cell('softmax')} | "
        f"{verdict(best['softmax'][0], 25)} |",
        f"| full zero-shot WorkBench test, MiniLM (wall) | 4 min | "
        f"{TODO if te is None else f'{ev_min(te):.1f} min'} | {verdict(ev_min(te), 4)} |",
        f"| full zero-shot WorkBench test, MPNet (wall) | 15 min | "
        f"{TODO if tm is None else f'{ev_min(tm):.1f} min'} | {verdict(ev_min(tm), 15)} |",
        f"| fp16 target storage: worst task's top-10 agreement with fp32 (all scorers) | >= 99.9 % | "
        f"{TODO if fp16_worst is None else f'{100 * fp16_worst:.2f} %'} | "
        f"{TODO if fp16_worst is None else ('yes' if fp16_worst >= 0.999 else '**no**')} |", "",
    ]
    # Scoring at the largest size, side by side
    rows = [("mean", OURS), ("mean", ST), ("mean", FAISS), ("mean", REF), ("maxsim", OURS), ("maxsim", PADDED),
            ("maxsim", REF), ("softmax_ymean", OURS), ("softmax_ymean", REF), ("softmax", OURS), ("softmax", REF)]
    lines += [f"**Scoring + top-10 of one pre-encoded query, {n_big} ESCO skill labels** (p50 ms; ratio to ours; "
              "every method returns the same top-10 as ours in fp32 within the agreement column of "
              "`bench_peers.md`; batch: queries/s ranking one batch of queries in one call):", "",
              "| scorer | method | p50 ms | x ours | batch q/s |", "|---|---|---:|---:|---:|"]
    for scorer, label in rows:
        v, o = p50(scorer, label), p50(scorer, OURS)
        qps = _get(sc, scorer, largest(sc[scorer]), label, "batch", "queries_per_s") if scorer in sc else None
        lines.append(f"| {scorer} | {label} | {ms(v)} | {TODO if v is None or o is None else f'{v / o:.2f}'} | "
                     f"{'n/a' if qps is None else f'{qps:,.0f}'} |")
    lines.append("")
    # End to end
    lines += ["**End to end, one query** (tokenise, encode, score, top-10; p50 ms, mean over the six WorkBench test "
              "target spaces) and what the query backend costs in ranking quality (top-10 agreement with torch "
              "fp32 on the worst task, mean MAP difference in points; 1000 queries per task, load-independent):", "",
              "| scorer | backend | rank p50 | of which encode | worst-task top-10 agreement | MAP diff |",
              "|---|---|---:|---:|---:|---:|"]
    for scorer in ("mean", "softmax"):
        for backend in (*BACKENDS, ST_E2E) if scorer == "mean" else BACKENDS:
            enc = _get(e2e, scorer, backend, "encode_p50_mean_over_tasks")
            agr = "1 (reference)" if backend == "torch" else ("n/a" if backend == ST_E2E else agreement(scorer, backend))
            md = "0" if backend == "torch" else ("n/a" if backend == ST_E2E else map_diff(scorer, backend))
            lines.append(f"| {scorer} | {backend} | {ms(e2e_p50(scorer, backend))} | {ms(enc)} | {agr} | {md} |")
    lines.append("")
    # Past RAM
    scale = _get(peers, "scale", "sizes") or {}
    lines += ["**Past RAM** (synthetic token-level spaces in a memory-mapped fp16 file; prefilter "
              f"{_get(peers, 'scale', 'prefilter') or TODO} on the pooled vectors, exact rescoring of "
              f"{_get(peers, 'scale', 'candidates') or TODO} candidates; recall@10 against exact scoring of the whole "
              "file):", "", "| targets | file | RSS growth while scoring it all | scorer | exact p50 | prefiltered p50 | "
              "recall@10 |", "|---:|---:|---:|---|---:|---:|---:|"]
    for n in ("100000", "1000000"):
        row = scale.get(n)
        for scorer in ("maxsim", "softmax"):
            s = _get(row, "scorers", scorer)
            timed = s if tp is not None else None
            growth = TODO
            if timed and timed.get("rss_peak_during_exact") is not None:
                growth = f"{max(0, timed['rss_peak_during_exact'] - timed['rss_before']) / 2**20:.0f} MiB"
            file = TODO if row is None else f"{row['file_bytes'] / 2**30:.2f} GiB"
            lines.append(f"| {int(n):,} | {file} | {growth} | {scorer} | {ms(_get(timed, 'exact', 'p50'))} ms | "
                         f"{ms(_get(timed, 'prefiltered', 'p50'))} ms | "
                         f"{TODO if s is None else format(s['recall@10'], '.3f')} |")
    lines.append("")
    enc_share = n_texts = TODO
    if te is not None:
        seconds = te["evaluate"]["seconds"]
        enc_share = f"{seconds['encode_distinct_texts'] / te['evaluate']['wall_s']:.0%}"
        n_texts = f"{seconds['n_distinct_texts']:,}"
    mean_encode = _get(e2e, "mean", "torch", "encode_p50_mean_over_tasks")
    lines += [
        f"- **`mean`: the query's forward pass dominates.** Encoding takes {ms(mean_encode)} "
        f"of {ms(e2e_p50('mean', 'torch'))} ms with torch; ONNX Runtime and int8 shorten it (table above) and the "
        "int8 encoders' cost in agreement and MAP is in the last columns.",
        f"- **Token-level scorers: scoring dominates and grows with the target tokens.** The fast path caches the unit "
        f"target tokens and their norms in tiles by exact length (one product per tile, no padding or masks, the "
        f"reduction in cache, fp16 storage); at {n_big} targets `softmax` takes {ms(p50('softmax', OURS))} ms vs "
        f"{ms(p50('softmax', REF))} ms on the reference path.",
        f"- **Evaluation:** the full zero-shot WorkBench test of MiniLM takes "
        f"{TODO if te is None else f'{ev_min(te):.1f} min'}, {enc_share} of it encoding the "
        f"{n_texts} distinct texts "
        "(batched by token count); MPNet " + (TODO if tm is None else f"{ev_min(tm):.1f} min") + ".",
    ]
    lines += paper_protocol(bench, max_load)
    return "\n".join(lines)


def paper_protocol(bench: dict | None, max_load: float) -> list[str]:
    """Table 3's protocol (``make bench``: 100 single queries per task end to end, FLOPs, batched queries/s,
    a training step, the naive baselines) from ``bench_minilm.json``, when that run was on quiet cores."""
    if not quiet(bench, max_load, others_key="machine"):
        return ["- **Paper protocol** (Table 3: latency, FLOPs, queries/s per scorer): `make bench`, "
                f"`experiments/results/bench_minilm.md` ({TODO}: its committed run was not on quiet cores).", ""]
    m, sc = bench["machine"], bench["scorers"]
    lines = ["", f"**Paper protocol** (Table 3: `{bench['command']}`, `experiments/results/bench_minilm.md`; "
             f"{m['torch_threads']} threads, other processes {m['others_cpus']:.2f} CPUs busy; mean +- SE over "
             f"{sc[next(iter(sc))]['latency_ms']['n']} tasks, {bench['protocol']['timed_queries']} single queries "
             "each, end to end):", "",
             f"| scorer | latency/query (ms) | FLOPs/query (matrix products) | queries/s (batch "
             f"{bench['protocol'].get('throughput_batch', '?')}) | training step (ms) |",
             "|---|---:|---:|---:|---:|"]
    for name, r in sc.items():
        step = _get(r, "train_step", "ms", "mean")
        lines.append(f"| {name} | {r['latency_ms']['mean']:.1f} +- {r['latency_ms']['se']:.1f} | "
                     f"{r['flops']['mean'] / 1e9:.2f} B | {r['throughput_qps']['mean']:.0f} | "
                     f"{'n/a' if step is None else f'{step:.0f}'} |")
    train = _get(next(iter(sc.values())), "train_step") or {}
    naive = bench.get("naive") or {}
    lines += ["", "- **FLOPs** are FlopCounterMode's count of the matrix products (encode + score): the softmax's "
              "exponentials and sums are not in it, so `maxsim` and `softmax` read alike; their latencies differ."]
    if "reencode" in naive:
        re_ = naive["reencode"]
        loops = [v["slowdown"] for v in naive.get("python_loop", {}).values()]
        lines.append(f"- **Caching is what makes it usable:** re-encoding the {naive['n_targets']:,} {naive['task']} "
                     f"targets for every query is {re_['slowdown']:.0f}x slower than the cached ranker "
                     f"({re_['latency_ms']['mean'] / 1000:.1f} s vs {re_['cached_latency_ms']:.1f} ms per query, "
                     f"{re_['scorer']})" + (f"; a Python loop over the cached targets is {min(loops):.0f}-"
                                            f"{max(loops):.0f}x slower." if loops else "."))
    if train:
        lines.append(f"- **Training** is dominated by the encoder's forward + backward: a {train['skills']}-skill "
                     f"step ({train['texts']} texts, <= {train['max_length']} tokens, {train['loss']}, "
                     f"{train['optimizer']}) is in the last column, about the same whatever the scorer. The "
                     "paper-size step (512 skills, ~2,048 texts) needs a GPU.")
    return [*lines, ""]


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=Path("experiments/results"))
    p.add_argument("--max-load", type=float, default=1.0, help="a run that started above this load is not quiet")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--readme", type=Path, default=None)
    args = p.parse_args(argv)
    r = args.results
    agree = load(r / "fast" / "agreement.json") or load(Path("experiments/results/fast/agreement.json"))
    text = section(load(r / "bench_peers.json"), load(r / "bench_eval.json"), load(r / "bench_eval_mpnet.json"),
                   agree, args.max_load, load(r / "bench_minilm.json"))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    if args.readme:
        readme = args.readme.read_text()
        pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
        if not pattern.search(readme):
            raise SystemExit(f"{args.readme}: no {START} ... {END} block to replace")
        args.readme.write_text(pattern.sub(lambda _: f"{START}\n{text}{END}", readme))
    print(text)
    return text


if __name__ == "__main__":
    main()
