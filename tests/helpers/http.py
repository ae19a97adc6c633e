"""A real HTTP server on 127.0.0.1 (a background thread) serving fixture bytes under URL paths, with Range
requests and injectable faults: a connection cut mid-file, a server that ignores Range, a missing path (404)."""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        owner: FileServer = self.server.owner  # type: ignore[attr-defined]
        requested = self.headers.get("Range")
        owner.log.append((self.path, requested))
        data = owner.files.get(self.path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", requested or "")
        if match and self.path not in owner.ignore_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if self.path in owner.cut_once:  # announce the whole body, send half of it, hang up
            owner.cut_once.discard(self.path)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


class FileServer:
    """``with FileServer({"/a/b.csv": b"..."}) as server:`` serves at ``server.url``; ``server.log`` lists
    (path, Range header) per request; add paths to ``cut_once`` / ``ignore_range`` to inject faults."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = dict(files)
        self.cut_once: set[str] = set()
        self.ignore_range: set[str] = set()
        self.log: list[tuple[str, str | None]] = []

    def __enter__(self) -> FileServer:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def requests_for(self, path: str) -> list[str | None]:
        return [rng for p, rng in self.log if p == path]
