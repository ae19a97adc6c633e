"""Our downloader (``uwe_lightning.data.download``) against ``pooch`` on a loopback HTTP server that supports Range
requests: a clean 64 MiB download, and one whose first response is cut after 75 % of the body. Prints per run the
wall time, how many times the file's size the server sent, the requests (and range requests) it got, and whether
the result matched its sha256. Each case runs twice, ours and pooch alternating.

pooch is not a dependency; install it beside the venv for this check only:
    pip install --target /tmp/pooch_site --no-deps pooch   # needs requests, platformdirs, packaging (in the venv)
    PYTHONPATH=/tmp/pooch_site:. python experiments/checks/download_vs_pooch.py
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SIZE = 64 << 20
DATA = os.urandom(SIZE)
SHA = hashlib.sha256(DATA).hexdigest()
STATE = {"sent": 0, "cut_next": False, "requests": 0, "ranges": 0}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        STATE["requests"] += 1
        start = 0
        wanted = self.headers.get("Range")
        if wanted and wanted.startswith("bytes="):
            start = int(wanted[6:].split("-")[0])
            STATE["ranges"] += 1
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{SIZE - 1}/{SIZE}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(SIZE - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        body = memoryview(DATA)[start:]
        stop = len(body)
        if STATE["cut_next"]:  # drop the connection after 75 % of the file
            STATE["cut_next"] = False
            stop = int(SIZE * 0.75) - start
        pos = 0
        try:
            while pos < stop:
                n = self.wfile.write(body[pos:min(pos + (1 << 20), stop)])
                pos += n
                STATE["sent"] += n
            if stop < len(body):
                self.wfile.flush()
                self.connection.shutdown(2)
                self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            pass


def ours(url: str, dest: Path) -> None:
    from uwe_lightning.data.download import download

    download(url, dest, sha256=SHA, size=SIZE, retries=3, backoff=0.0, progress=False)


def with_pooch(url: str, dest: Path) -> None:
    import pooch

    logging.getLogger("pooch").setLevel(logging.ERROR)
    fetcher = pooch.create(path=str(dest.parent), base_url=url.rsplit("/", 1)[0] + "/",
                           registry={dest.name: f"sha256:{SHA}"}, retry_if_failed=3)
    fetcher.fetch(dest.name, progressbar=False)


def main() -> None:
    import pooch

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/blob.bin"
    root = Path(tempfile.mkdtemp(prefix="dl_vs_pooch."))
    print(f"file {SIZE >> 20} MiB, pooch {pooch.__version__}, load average {os.getloadavg()[0]:.1f}")
    for case in ("clean", "cut at 75%"):
        for name, fetch in (("ours", ours), ("pooch", with_pooch), ("ours", ours), ("pooch", with_pooch)):
            shutil.rmtree(root / "d", ignore_errors=True)
            (root / "d").mkdir()
            STATE.update(sent=0, requests=0, ranges=0, cut_next=case != "clean")
            dest = root / "d" / "blob.bin"
            start = time.perf_counter()
            try:
                fetch(url, dest)
                ok, error = hashlib.sha256(dest.read_bytes()).hexdigest() == SHA, ""
            except Exception as err:  # report and go on: the comparison is the point
                ok, error = False, f"{type(err).__name__}: {str(err)[:120]}"
            wall = time.perf_counter() - start
            print(f"{case:11s} {name:6s} wall {wall:6.2f} s  server sent {STATE['sent'] / SIZE:4.2f} x file  "
                  f"requests {STATE['requests']} (range {STATE['ranges']})  sha256 ok={ok}  left "
                  f"{sorted(p.name for p in (root / 'd').iterdir())} {error}")
    httpd.shutdown()
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
