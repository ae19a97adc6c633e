"""A headless-Chromium screenshot of the service's page (``GET /``) with a ranking shown.

Starts ``python -m uwe_lightning.serve`` on 127.0.0.1 (see :func:`serve_load.running_server`, experiments/bench/serve_load.py), opens
``/?q=...`` (the page fills in the queries and ranks them at once) in Debian's ``chromium``, checks that the
rendered page holds a ranking for every query, and saves the screenshot.

    UWE_MODEL_DIR=models nice -n 15 .venv/bin/python experiments/demos/serve_screenshot.py
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))  # serve_load lives in experiments/bench
from serve_load import RESULTS, running_server  # noqa: E402

QUERIES = ["data scientist", "I care for patients after surgery"]


def chromium(*args: str) -> subprocess.CompletedProcess:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("chromium is not installed (Debian: apt-get install -y chromium)")
    with tempfile.TemporaryDirectory(prefix="uwe-chromium-") as profile:
        return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                               "--hide-scrollbars", f"--user-data-dir={profile}", "--virtual-time-budget=15000", *args],
                              capture_output=True, text=True, timeout=180)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--targets", default="esco_skills")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--size", default="1000,1000", help="window width,height in pixels")
    parser.add_argument("--out", type=Path, default=RESULTS / "page.png")
    args = parser.parse_args()
    with running_server([f"model={args.model}", f"targets=[{args.targets}]", "show_progress=false"]) as url:
        page = f"{url}/?{urlencode([('q', q) for q in QUERIES])}"
        dom = chromium("--dump-dom", page).stdout
        missing = [q for q in QUERIES if f'class="query">{q}<' not in dom]
        if missing or 'class="score"' not in dom:
            print(dom[-3000:], file=sys.stderr)
            raise SystemExit(f"the page shows no ranking for {missing or QUERIES}")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(f".{args.out.name}.tmp.png")
        proc = chromium(f"--window-size={args.size}", f"--screenshot={tmp}", page)
        if not tmp.is_file():
            raise SystemExit(f"chromium wrote no screenshot: {proc.stderr[-2000:]}")
        tmp.replace(args.out)  # atomic: a half-written PNG is never committed
    print(f"[screenshot] {args.out} ({args.out.stat().st_size} bytes): {page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
