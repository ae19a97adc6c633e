"""A bounded loopback load test of the ranking service: N concurrent clients, p50/p99 latency, throughput, and
every answer checked against ``Ranker.rank`` for the same query.

Starts ``python -m uwe_lightning.serve`` on 127.0.0.1 (a free port) with the given model and target space
(encoded once, or loaded from the cache ``rank`` uses), sends ``--requests`` single-query ``POST /rank``
requests per concurrency level (after a short warm-up), then stops the server and ranks the same queries with
``Ranker.rank`` in this process (one query a call, as each request asked). Writes a Markdown table.

    UWE_MODEL_DIR=models nice -n 15 .venv/bin/python experiments/bench/serve_load.py --clients 1 4 16

Exit status 1 when a request went unanswered or an answer differs from ``Ranker.rank`` beyond float rounding
(two targets whose scores differ by less than ``--tie-tol`` may swap places: the service encodes queries in
batches, which changes scores in the 6th decimal).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # this checkout's package (in this process and the server's), not another install
RESULTS = REPO / "experiments" / "results" / "serve"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--scorer", default=None, help="a scorer name (default: the model's)")
    parser.add_argument("--targets", default="esco_skills", choices=["esco_skills", "esco_occupations"])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=200, help="requests per concurrency level")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the server")
    parser.add_argument("--tie-tol", type=float, default=1e-4)
    parser.add_argument("--out", type=Path, default=RESULTS / "load.md")
    return parser.parse_args(argv)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_server(overrides: list[str], timeout_s: float = 900) -> Iterator[str]:
    """``python -m uwe_lightning.serve <overrides>`` on 127.0.0.1 and a free port; yields its base URL once
    ``/health`` answers, and stops it (SIGTERM to the process it started) on exit."""
    port, work = free_port(), Path(tempfile.mkdtemp(prefix="uwe-serve-"))
    log_path = work / "server.log"
    cmd = [sys.executable, "-m", "uwe_lightning.serve", f"port={port}", "log_level=warning",
           f"hydra.run.dir={work / 'run'}", *overrides]
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited ({proc.returncode}): {log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer within {timeout_s}s; log: {log_path}")
            time.sleep(0.5)
        print(log_path.read_text().strip(), flush=True)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


async def load(url: str, queries: list[str], clients: int, k: int, space: str) -> tuple[list[float], list, float]:
    """Send one request per query with ``clients`` at a time; (latency s per request, answers, wall s)."""
    latencies: list[float] = [0.0] * len(queries)
    answers: list = [None] * len(queries)
    todo = iter(range(len(queries)))

    async def client(http: httpx.AsyncClient) -> None:
        for i in todo:
            t0 = time.perf_counter()
            res = await http.post("/rank", json={"queries": [queries[i]], "k": k, "target_space": space})
            latencies[i] = time.perf_counter() - t0
            answers[i] = res.json()["results"][0]["top"] if res.status_code == 200 else res.status_code

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - t0
    return latencies, answers, wall


def compare(answer: list[dict] | int | None, ids: list[str], scores: list[float], tol: float) -> str:
    """``equal``, ``near-tie swap`` (same scores within ``tol``, ids swapped among near-equal scores) or why not."""
    if not isinstance(answer, list):
        return f"no answer ({answer})"
    got_ids, got_scores = [t["id"] for t in answer], [t["score"] for t in answer]
    if len(got_ids) != len(ids):
        return "wrong length"
    if not np.allclose(got_scores, scores, atol=tol, rtol=0):
        return "scores differ"
    if got_ids == ids:
        return "equal"
    for a, b, s in zip(got_ids, ids, scores, strict=True):  # a swap is only fine between near-equal scores
        if a != b and not any(abs(s - t) <= tol for x, t in zip(ids, scores, strict=True) if x == a):
            return "ids differ"
    return "near-tie swap"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from uwe_lightning.paths import resolve_cache_dir
    from uwe_lightning.ranking.ranker import Ranker
    from uwe_lightning.ranking.targets import load_targets

    occupations = load_targets("esco_occupations")  # job titles as queries, a fixed spread over the list
    step = max(1, len(occupations.texts) // (args.requests + args.warmup))
    pool = occupations.texts[::step]
    warm, queries = pool[: args.warmup], pool[args.warmup : args.warmup + args.requests]
    overrides = [f"model={args.model}", f"targets=[{args.targets}]", "show_progress=false"]
    overrides += [f"scorer={args.scorer}"] if args.scorer else []
    overrides += [f"threads={args.threads}"] if args.threads else []
    uptime_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    rows, verdicts = [], {}
    with running_server(overrides) as url:
        asyncio.run(load(url, warm, 1, args.k, args.targets))
        for clients in args.clients:
            before = httpx.get(f"{url}/health").json()["batching"]
            latencies, answers, wall = asyncio.run(load(url, queries, clients, args.k, args.targets))
            after = httpx.get(f"{url}/health").json()
            calls = after["batching"]["calls"] - before["calls"]
            ms = np.array(latencies) * 1000
            rows.append({"clients": clients, "requests": len(queries), "p50": np.percentile(ms, 50),
                         "p99": np.percentile(ms, 99), "mean": ms.mean(), "rps": len(queries) / wall,
                         "per_call": (after["batching"]["queries"] - before["queries"]) / max(1, calls),
                         "answers": answers})
            print(f"[load] {clients:>3} clients: p50 {rows[-1]['p50']:.1f} ms, p99 {rows[-1]['p99']:.1f} ms, "
                  f"{rows[-1]['rps']:.1f} req/s, {rows[-1]['per_call']:.2f} queries per model call", flush=True)
        health = after
    uptime_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()

    # The reference: Ranker.rank for each query alone, on the same model and cached target space.
    ranker = Ranker.from_pretrained(args.model, scorer=args.scorer, device="cpu")
    space_texts = load_targets(args.targets)
    space = ranker.index(space_texts.texts, cache_dir=resolve_cache_dir() / "targets")
    want = {}
    for q in queries:
        scores, index = ranker.rank([q], space, k=args.k)
        want[q] = ([space_texts.ids[i] for i in index[0].tolist()], scores[0].tolist())
    for row in rows:
        row["verdicts"] = [compare(a, *want[q], args.tie_tol) for q, a in zip(queries, row["answers"], strict=True)]
        for v in row["verdicts"]:
            verdicts[v] = verdicts.get(v, 0) + 1
    ok = set(verdicts) <= {"equal", "near-tie swap"}

    command = "UWE_MODEL_DIR=models nice -n 15 .venv/bin/python experiments/bench/" + " ".join(
        [Path(__file__).name, *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    lines = [
        "# Ranking service: loopback load test",
        "",
        f"{dt.date.today().isoformat()}, `{command}`",
        "",
        f"Server: `python -m uwe_lightning.serve {' '.join(overrides)}` on 127.0.0.1 ({health['model']}, scorer "
        f"`{health['scorer']}`, {space_texts.source}: {len(space_texts.texts)} targets, k={args.k}; "
        "micro-batching defaults: up to 64 queries per model call, 2 ms wait).",
        f"Clients: httpx, single-query requests, {len(queries)} per level after {len(warm)} warm-up requests; "
        "queries are ESCO occupation labels (job titles).",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, CPU only. **Shared**: "
        "the machine ran another CPU job (an experiment campaign) at the same time and this test ran under "
        "`nice -n 15` beside it (server and clients on the same 2 cores), so the absolute numbers are "
        "pessimistic; the ratios between levels are the point.",
        f"Load before: `{uptime_before}`",
        f"Load after: `{uptime_after}`",
        "",
        "| clients | requests | p50 ms | p99 ms | mean ms | throughput req/s | queries per model call | answered | equal to `Ranker.rank` |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        answered = sum(isinstance(a, list) for a in row["answers"])
        same = sum(v in ("equal", "near-tie swap") for v in row["verdicts"])
        swaps = sum(v == "near-tie swap" for v in row["verdicts"])
        lines.append(f"| {row['clients']} | {row['requests']} | {row['p50']:.1f} | {row['p99']:.1f} | {row['mean']:.1f} "
                     f"| {row['rps']:.1f} | {row['per_call']:.2f} | {answered}/{row['requests']} | {same}/{row['requests']}"
                     + (f" ({swaps} near-tie swaps)" if swaps else "") + " |")
    lines += ["", f"Check: every answer compared with `Ranker.rank([query], space, k={args.k})` in the load-test process (not the server) "
              f"(ids in order; scores within {args.tie_tol}): {verdicts}. "
              + ("All answered and equal." if ok else "**MISMATCH**"), ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from uwe_lightning.io import atomic_write_text

    atomic_write_text(args.out, "\n".join(lines))
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
