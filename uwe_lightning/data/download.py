"""Resumable, checked HTTP(S) downloads with the standard library: what ``make data`` fetches the pack with.

A download goes to ``<file>.part`` beside its target. When a ``.part`` is already there (an earlier run was cut
off) the request asks for the rest (``Range: bytes=<have>-``); a server that answers 206 is appended to, one that
ignores the range (200) restarts the file cleanly. A connection cut mid-body is retried with a range request, up
to ``retries`` times, then the ``.part`` stays for the next run. A finished file is checked (size, sha256 and/or
md5) before it is renamed onto its target (fsync + ``os.replace``), so a target is never half a file; a file that
fails its check is deleted, and the error names the URL and the file. HTTP errors (404, 403, ...) and unreachable
hosts are one-line :class:`DownloadError` s naming both as well.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from uwe_lightning.io import DataError, make_dirs, publish_file

USER_AGENT = "uwe_lightning-fetch/1 (python urllib)"
CHUNK = 1 << 16
PART_SUFFIX = ".part"


class DownloadError(DataError):
    """A download that failed (HTTP error, unreachable host, checksum mismatch); the message names URL and file."""


class _Interrupted(Exception):
    """The body stopped before its announced length: resumable."""


def mirrored(url: str, mirror: str | None) -> str:
    """``url`` under a mirror base URL: ``<mirror>/<host>/<path>`` (the layout an internal mirror or a proxy
    cache of the sources uses); unchanged without a mirror.

    >>> mirrored("https://raw.githubusercontent.com/o/r/abc/a%20b.csv", "http://mirror.local/uwe/")
    'http://mirror.local/uwe/raw.githubusercontent.com/o/r/abc/a%20b.csv'
    >>> mirrored("https://example.org/x", None)
    'https://example.org/x'
    """
    if not mirror:
        return url
    parts = urllib.parse.urlsplit(url)
    return f"{mirror.rstrip('/')}/{parts.netloc}{parts.path}"


def file_digests(path: str | os.PathLike) -> dict[str, str]:
    """``{"sha256": ..., "md5": ...}`` of a file, read once in chunks."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha.update(block)
            md5.update(block)
    return {"sha256": sha.hexdigest(), "md5": md5.hexdigest()}


def _progress(total: int | None, initial: int, what: str, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency, but a bar is not worth failing for
        return None
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=what,
                disable=not enabled, leave=False, file=sys.stderr, dynamic_ncols=True)


def _total_size(response: http.client.HTTPResponse, have: int) -> int | None:
    """The size of the whole file from Content-Range (``bytes a-b/N``) or Content-Length (+ what we have)."""
    content_range = response.headers.get("Content-Range", "")
    if "/" in content_range and content_range.rsplit("/", 1)[1].strip().isdigit():
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("Content-Length")
    return int(length) + have if length and length.isdigit() else None


def _fetch_into(url: str, part: Path, size: int | None, what: str, timeout: float, progress: bool) -> None:
    """One request: continue ``part`` (or start it) until the body ends; raise :class:`_Interrupted` if it ends
    early."""
    have = part.stat().st_size if part.is_file() else 0
    if size is not None and have > size:  # not a prefix of the file we want
        part.unlink()
        have = 0
    if size is not None and have == size:
        return
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left to send: the check after the download decides
            return
        raise DownloadError(f"HTTP {err.code} {err.reason} for {url} ({what})") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(f"cannot download {what} from {url}: {reason} (no network? set mirror=<base URL> "
                            "or pack_url=<URL of a uwe-data copy>, or verify an existing pack with --offline)"
                            ) from None
    with response:
        resumed = have > 0 and response.status == 206 and response.headers.get(
            "Content-Range", "").startswith(f"bytes {have}-")
        if not resumed:
            have = 0  # the server sent the whole file (it ignored the range): start again
        total = _total_size(response, have)
        bar = _progress(total, have, what, progress)
        try:
            with open(part, "ab" if resumed else "wb") as fh:
                while True:
                    try:
                        chunk = response.read(CHUNK)
                    except (http.client.IncompleteRead, ConnectionError, TimeoutError) as err:
                        raise _Interrupted(f"{type(err).__name__}: {err}") from None
                    if not chunk:
                        break
                    fh.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    got = part.stat().st_size
    if total is not None and got < total:
        raise _Interrupted(f"connection closed after {got:,} of {total:,} bytes")


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    what: str | None = None,
    sha256: str | None = None,
    md5: str | None = None,
    size: int | None = None,
    timeout: float = 60.0,
    retries: int = 3,
    backoff: float = 1.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` (resumable through ``dest.part``), check it, publish it atomically.

    ``what`` names the file in messages (default: ``dest``). Raises :class:`DownloadError` for an HTTP error, an
    unreachable host, ``retries`` interruptions in a row (the ``.part`` is kept for the next run) and a checksum
    or size mismatch (the ``.part`` is deleted, so the next run starts clean).
    """
    dest = Path(dest)
    what = what or str(dest)
    make_dirs(dest.parent)
    part = dest.with_name(dest.name + PART_SUFFIX)
    for attempt in range(retries + 1):
        try:
            _fetch_into(url, part, size, what, timeout, progress)
            break
        except _Interrupted as err:
            if attempt == retries:
                raise DownloadError(f"download of {what} from {url} was interrupted {retries + 1} times ({err}); "
                                    f"the partial file {part} is kept: run again to resume") from None
            time.sleep(backoff * (attempt + 1))
    digests = file_digests(part)
    got_size = part.stat().st_size
    problems = []
    if size is not None and got_size != size:
        problems.append(f"size {got_size:,} B, expected {size:,} B")
    for name, expected in (("sha256", sha256), ("md5", md5)):
        if expected and digests[name] != expected.lower():
            problems.append(f"{name} {digests[name]}, expected {expected.lower()}")
    if problems:
        part.unlink()
        raise DownloadError(f"checksum mismatch for {what} downloaded from {url}: {'; '.join(problems)}. The "
                            "download was deleted: the source (or mirror) serves different bytes than the pack "
                            "was built from")
    return publish_file(part, dest)
