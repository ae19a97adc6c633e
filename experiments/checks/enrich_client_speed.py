"""The enrichment client before (urllib, commit ca192fa) and after (the openai SDK) against the loopback devserver,
in one process: client set-up, 200 sequential requests and 200 on 8 threads, interleaved twice; then the seconds
from calling the enrich command to its one-line failure for an unresolvable host and a refused port (new client).

    git show ca192fa:uwe_lightning/enrichment/client.py > /tmp/old_client.py
    python experiments/checks/enrich_client_speed.py /tmp/old_client.py
"""

from __future__ import annotations

import csv
import importlib.util
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

N = 200
PAYLOAD = {"model": "m", "messages": [{"role": "user", "content": "x" * 800}], "max_tokens": 64,
           "response_format": {"type": "json_object"}}


def main(old_path: str) -> None:
    start = time.perf_counter()
    import openai  # noqa: F401 (timed: the SDK's import)

    print(f"import openai {time.perf_counter() - start:.2f} s, load average {os.getloadavg()[0]:.1f}")
    from uwe_lightning.enrichment import client as new
    from uwe_lightning.enrichment.devserver import ChatServer, items_reply

    spec = importlib.util.spec_from_file_location("old_client", old_path)
    old = importlib.util.module_from_spec(spec)
    sys.modules["old_client"] = old
    spec.loader.exec_module(old)
    with ChatServer(lambda payload, index: items_reply(["Python Developer"] * 20)) as server:
        for round_ in range(2):
            for name, module in (("urllib", old), ("openai", new)):
                t = time.perf_counter()
                client = module.ChatClient(module.Endpoint.resolve(server.base_url, ""))
                setup = time.perf_counter() - t
                t = time.perf_counter()
                for _ in range(N):
                    client.complete(PAYLOAD)
                sequential = time.perf_counter() - t
                t = time.perf_counter()
                with ThreadPoolExecutor(8) as pool:
                    list(pool.map(client.complete, [PAYLOAD] * N))
                threaded = time.perf_counter() - t
                print(f"round {round_} {name:6s} set-up {setup * 1e3:7.1f} ms  sequential {sequential / N * 1e3:6.2f} "
                      f"ms/request  8 threads {threaded / N * 1e3:6.2f} ms/request  load {os.getloadavg()[0]:.1f}")
    from uwe_lightning.cli import enrich as cli

    os.environ["OPENAI_API_KEY"] = ""
    tmp = Path(tempfile.mkdtemp())
    with (tmp / "skills.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["uri", "label", "description"], ["u1", "manage staff", "Direct staff."]])
    for url in ("http://127.0.0.1:9/v1", "http://no-such-host.invalid/v1"):
        t = time.perf_counter()
        try:
            cli.main(["titles", f"skills={tmp / 'skills.csv'}", "leakage.enabled=false", f"out_dir={tmp / 'out'}",
                      "show_progress=false", f"endpoint.base_url={url}"])
            code = 0
        except SystemExit as err:
            code = err.code
        print(f"{url}: exit {code} after {time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main(sys.argv[1])
