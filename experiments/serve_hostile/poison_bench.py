"""Poisoned-client rounds against the ranking service: does one client sending a query the service must refuse
slow down everyone else?

What is measured: the ranking service app (``uwe_lightning.service.app.create_app``, one target space,
``esco_skills`` of the mini data pack by default) runs under uvicorn on 127.0.0.1 (a free port) in a thread
of this process. Each round, ``--clients`` concurrent clients (one HTTP connection each) send ``--requests``
single-query ``POST /rank`` requests one after another (k=5, queries cycling through six job titles). In a
*poisoned* round, client 0 sends instead the body ``{"queries": ["a\\ud800"], "k": 5}``: a JSON string
holding a lone surrogate, which no UTF-8 encoder accepts. One clean warm-up round (not counted) is followed by
``--rounds`` pairs of a clean and a poisoned round.

Why: a request the tokenizer cannot encode must be refused on its own (422) and must neither fail nor delay
the requests it would have shared a model call with. The ratio of the others' median latency (poisoned vs
clean) says whether it does: about 1.0 is what is wanted.

Printed: one line per round (the other clients' p50 latency, the set of status codes they and the poisoning
client got, the others' throughput), then the median of the per-round p50s, clean vs poisoned, and their
ratio; the checkout measured and the machine load (``os.getloadavg()``, the machine is shared) before and
after.

Run (from the repository root; ``--model`` is a backbone name resolved in ``UWE_MODEL_DIR``, a saved UWE
model or a Hugging Face model directory)::

    UWE_MODEL_DIR=models .venv/bin/python experiments/serve_hostile/poison_bench.py \\
        --model models/all-MiniLM-L6-v2 --clients 50 --requests 10 --rounds 2

To compare another commit back to back, check it out elsewhere (``git worktree add /tmp/old <commit>``) and
pass ``--repo /tmp/old``: that checkout is put first on ``sys.path``, so its ``uwe_lightning`` (and its
``tests.helpers`` for the mini data pack) is the one measured. The script itself only uses ``create_app``,
``ServedSpace``, ``Limits``, ``Ranker.from_pretrained`` and ``load_targets`` with the arguments below, so an
older checkout that has these works.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import statistics
import threading
import time
from pathlib import Path

from checkout import load_line, use_checkout  # this folder (the script's own) is sys.path[0]

#: The normal clients' queries (client c's i-th request asks QUERIES[(c + i) % 6]).
QUERIES = ["software engineer", "nurse", "truck driver", "data engineer python sql", "cook", "teacher"]
NORMAL_BODIES = [b'{"queries": ["%s"], "k": 5}' % q.encode() for q in QUERIES]
#: A lone surrogate (valid JSON, not encodable as UTF-8): what the poisoning client sends every time.
POISON_BODY = b'{"queries": ["a\\ud800"], "k": 5}'
HEADERS = {"content-type": "application/json"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm",
                        help="backbone name (resolved in UWE_MODEL_DIR), saved UWE model or HF model "
                             "directory (default: %(default)s)")
    parser.add_argument("--scorer", default="maxsim", help="scorer of the ranker (default: %(default)s)")
    parser.add_argument("--clients", type=int, default=12,
                        help="concurrent clients (client 0 poisons) (default: %(default)s)")
    parser.add_argument("--requests", type=int, default=10,
                        help="requests per client per round (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="pairs of a clean and a poisoned round (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="data pack holding esco_skills (default: tests.helpers.paths.MINI_DATA)")
    parser.add_argument("--repo", type=Path, default=None,
                        help="another checkout put first on sys.path, to measure an older commit "
                             "back to back")
    args = parser.parse_args(argv)
    if args.clients < 2 or args.requests < 1 or args.rounds < 1:
        parser.error("needs --clients >= 2, --requests >= 1 and --rounds >= 1")
    return args


def build_app(args: argparse.Namespace):
    """The service app on ``esco_skills`` with small limits, as the service tests build it."""
    from uwe_lightning.ranking.ranker import Ranker
    from uwe_lightning.ranking.targets import DIRECTIONS, load_targets
    from uwe_lightning.service.app import ServedSpace, create_app
    from uwe_lightning.service.requests import Limits

    data_dir = args.data_dir
    if data_dir is None:
        from tests.helpers.paths import MINI_DATA

        data_dir = MINI_DATA
    ranker = Ranker.from_pretrained(str(args.model), scorer=args.scorer, device="cpu")
    skills = load_targets("esco_skills", data_dir)
    spaces = {"esco_skills": ServedSpace("esco_skills", skills.source, skills.ids, skills.texts,
                                         ranker.index(skills.texts))}
    limits = Limits(max_queries=8, max_chars=200, max_k=20, max_body_bytes=20000)
    return create_app(ranker, spaces, directions=DIRECTIONS, limits=limits, max_batch_queries=16,
                      max_wait_ms=2)


@contextlib.contextmanager
def served(app):
    """Run ``app`` with uvicorn on 127.0.0.1 (a free port) in a daemon thread; yield its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server thread exited before it started")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def run_round(url: str, bodies_per_client: list[list[bytes]]) -> tuple[list[list[tuple[float, int]]], float]:
    """Every client sends its bodies one after another, all clients at once; returns each client's
    ``(seconds, status)`` per request and the round's wall time."""
    import httpx

    async def client(http: httpx.AsyncClient, bodies: list[bytes]) -> list[tuple[float, int]]:
        out = []
        for body in bodies:
            t0 = time.perf_counter()
            response = await http.post("/rank", content=body, headers=HEADERS)
            out.append((time.perf_counter() - t0, response.status_code))
        return out

    async def go() -> tuple[list[list[tuple[float, int]]], float]:
        async with contextlib.AsyncExitStack() as stack:
            https = [await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=60))
                     for _ in bodies_per_client]
            t0 = time.perf_counter()
            pairs = zip(https, bodies_per_client, strict=True)
            results = await asyncio.gather(*(client(h, b) for h, b in pairs))
            return list(results), time.perf_counter() - t0

    return asyncio.run(go())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    use_checkout(args.repo)
    import torch

    torch.set_num_threads(args.threads)
    import uwe_lightning

    app = build_app(args)
    logging.getLogger("uwe_lightning.serve").setLevel(logging.ERROR)
    print(f"checkout {Path(uwe_lightning.__file__).parent.parent}, model {args.model}, "
          f"{args.clients} clients x {args.requests} requests, {args.rounds} round pairs, "
          f"{args.threads} torch threads", flush=True)
    print(load_line("before"), flush=True)
    p50: dict[bool, list[float]] = {False: [], True: []}
    with served(app) as url:
        # A clean warm-up round (dropped from the summary), then alternating clean / poisoned rounds.
        for poisoned in [False] + [p for _ in range(args.rounds) for p in (False, True)]:
            bodies = [[NORMAL_BODIES[(c + i) % len(NORMAL_BODIES)] for i in range(args.requests)]
                      for c in range(args.clients)]
            if poisoned:
                bodies[0] = [POISON_BODY] * args.requests
            results, wall = run_round(url, bodies)
            others = [x for client in results[1:] for x in client]
            p50[poisoned].append(statistics.median(t for t, _ in others))
            print(("poisoned" if poisoned else "clean   "),
                  f"p50 {p50[poisoned][-1] * 1e3:7.1f} ms  "
                  f"others' statuses {sorted({s for _, s in others})}  "
                  f"poison {sorted({s for _, s in results[0]})}  {len(others) / wall:.0f} req/s", flush=True)
    clean, dirty = statistics.median(p50[False][1:]), statistics.median(p50[True])
    print(f"median p50 clean {clean * 1e3:.1f} ms, poisoned {dirty * 1e3:.1f} ms, ratio {dirty / clean:.2f}")
    print(load_line("after"), flush=True)


if __name__ == "__main__":
    main()
