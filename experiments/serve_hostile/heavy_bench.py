"""Heavy requests against the serve app: how long does a light request wait behind them?

What is measured: the app ``python -m uwe_lightning.serve`` would serve (``uwe_lightning.cli.serve.build_app``
on ``conf/serve.yaml`` with ``model=minilm``, ``targets=[esco_skills]``, ``device=cpu``, the configured limits
and batching), called in-process through ``httpx.ASGITransport`` (no socket, no uvicorn). After one light
warm-up request alone, three heavy requests (64 queries x 1,000 CJK characters each, k=100: the largest the
default limits accept) are sent at once, and a light one (1 query, k=5) 0.5 s later.

Why: the batcher splits a heavy request over several model calls (``batching.max_tokens``) and runs the
request with the least work left first, so the light request should be answered after about one model call,
not after the heavy ones. Its time, next to the heavy requests', says whether it is.

Printed: the warm-up's status and time; for each request its status, its own time and when it finished
(``t``, seconds since the heavy requests were sent), in the order they finish; the batcher's counters
(``app.state.batcher.stats``); the checkout measured and the machine load (``os.getloadavg()``, the
machine is shared) before and after.

Run (from the repository root; the data pack and the target-space cache are the project's defaults,
``uwe_lightning.paths``: ``$UWE_DATA_DIR`` / ``$UWE_CACHE_DIR`` or their fallbacks)::

    UWE_MODEL_DIR=models .venv/bin/python experiments/serve_hostile/heavy_bench.py

To compare another commit back to back, check it out elsewhere (``git worktree add /tmp/old <commit>``) and
pass ``--repo /tmp/old``: that checkout is put first on ``sys.path``, so its ``uwe_lightning`` (and its
``conf/serve.yaml``) is the one measured.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from checkout import REPO, load_line, use_checkout  # this folder (the script's own) is sys.path[0]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm",
                        help="model config (conf/model/<name>.yaml) (default: %(default)s)")
    parser.add_argument("--target", default="esco_skills", choices=["esco_skills", "esco_occupations"],
                        help="target space served (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: %(default)s)")
    parser.add_argument("--heavy", type=int, default=3,
                        help="heavy requests sent at once (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=64,
                        help="queries per heavy request (default: %(default)s)")
    parser.add_argument("--chars", type=int, default=1000,
                        help="characters per heavy query (default: %(default)s)")
    parser.add_argument("--k", type=int, default=100, help="k of the heavy requests (default: %(default)s)")
    parser.add_argument("--delay", type=float, default=0.5,
                        help="seconds between the heavy and the light request (default: %(default)s)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="data pack (default: uwe_lightning.paths.default_data_dir())")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="target-space cache (default: uwe_lightning.paths.default_cache_dir())")
    parser.add_argument("--repo", type=Path, default=None,
                        help="another checkout put first on sys.path, to measure an older commit "
                             "back to back")
    parser.add_argument("overrides", nargs="*", help="further Hydra overrides of conf/serve.yaml (key=value)")
    return parser.parse_args(argv)


def build_app(args: argparse.Namespace):
    """The serve app of ``conf/serve.yaml`` with the chosen model and target space, on the CPU."""
    from hydra import compose, initialize_config_dir

    from uwe_lightning.cli.serve import build_app as build_serve_app
    from uwe_lightning.paths import CONF_DIR

    overrides = [f"model={args.model}", f"targets=[{args.target}]", "device=cpu", "show_progress=false",
                 # compose() runs no Hydra job, so ${hydra:runtime.output_dir} is unset; serve writes nothing
                 f"paths.output_dir={REPO / 'outputs' / 'heavy_bench'}"]
    if args.data_dir is not None:
        overrides.append(f"paths.data_dir={args.data_dir.resolve()}")
    if args.cache_dir is not None:
        overrides.append(f"paths.cache_dir={args.cache_dir.resolve()}")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="serve", overrides=overrides + list(args.overrides))
    return build_serve_app(cfg)


def heavy_queries(n_queries: int, n_chars: int) -> list[str]:
    """``n_queries`` distinct strings of ``n_chars`` CJK ideographs (rotations of one pseudo-random
    string)."""
    cjk = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(n_chars))
    return [cjk[i:] + cjk[:i] for i in range(n_queries)]


async def run(app, args: argparse.Namespace) -> None:
    import httpx

    heavy = {"queries": heavy_queries(args.queries, args.chars), "k": args.k}
    light = {"queries": ["data scientist"], "k": 5}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", timeout=600) as client:
        t0 = time.perf_counter()
        response = await client.post("/rank", json=light)
        print("warm-up light alone", response.status_code, f"{time.perf_counter() - t0:.2f}s", flush=True)

        start = time.perf_counter()

        async def timed(body: dict, name: str) -> httpx.Response:
            sent = time.perf_counter()
            response = await client.post("/rank", json=body)
            now = time.perf_counter()
            print(f"{name}: {response.status_code} after {now - sent:.2f}s (t={now - start:.2f})", flush=True)
            return response

        heavies = [asyncio.ensure_future(timed(heavy, f"heavy{j}")) for j in range(args.heavy)]
        await asyncio.sleep(args.delay)
        await timed(light, "light")
        await asyncio.gather(*heavies)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    use_checkout(args.repo)
    import torch

    torch.set_num_threads(args.threads)
    import uwe_lightning

    app = build_app(args)
    print(f"checkout {Path(uwe_lightning.__file__).parent.parent}, model {args.model}, target {args.target}, "
          f"{args.heavy} heavy requests of {args.queries} queries x {args.chars} characters (k={args.k}), "
          f"{args.threads} torch threads", flush=True)
    print(load_line("before"), flush=True)
    asyncio.run(run(app, args))
    print(app.state.batcher.stats.as_dict())
    print(load_line("after"), flush=True)


if __name__ == "__main__":
    main()
