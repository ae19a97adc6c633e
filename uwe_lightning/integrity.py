"""Every data file is checked when it is read, and a run records what it read.

A truncated or altered pack file must never give a different benchmark number with exit 0, so
:func:`checked_file` (called by :func:`uwe_lightning.paths.data_file`, through which every pack file is read)
compares the file's sha256 with the manifest and refuses a mismatch in one line. Which manifest:

* a directory holding its own :data:`MANIFEST_NAME` (a pack built by ``fetch manifest=<file>``, a pack you
  made, the test fixtures): that one (:func:`write_manifest` writes it for a directory; a manifest that lists
  no file pins nothing: every file is hashed and recorded, none refused);
* any other directory is the uwe-data pack: the manifest shipped with the package (``data/sources.json``,
  what ``make data`` builds and ``make data-check`` verifies). A file rebuilt from ESCO's official download
  (recorded in the pack's ``.uwe_fetch.json``) is accepted with the hash recorded when it was built.

Hashing 90 MB on every command would cost a second, so a verified file is stamped (path, size, mtime_ns ->
sha256) in ``<cache dir>/verified-data.json``: the common case costs a ``stat``, a changed file is hashed again.
Files not in the manifest are hashed too (not refused). :func:`data_fingerprint` gives what this process read,
with the manifest's hash, for ``run_info.json`` and ``results.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

from uwe_lightning.io import DataError, atomic_write_json

MANIFEST_NAME = "uwe-manifest.json"
SHIPPED_MANIFEST = Path(__file__).parent / "data" / "sources.json"
STAMP_FILE = "verified-data.json"
_FETCH_STATE = ".uwe_fetch.json"  # written by uwe_lightning.data.pack (make data)

_lock = threading.Lock()
_read: dict[str, dict[str, Any]] = {}  # data root -> {"manifest": sha256, "files": {relpath: sha256}}
_manifests: dict[str, tuple[str, dict[str, str]]] = {}


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest(root: Path) -> tuple[str, dict[str, str]]:
    """(the manifest's own sha256, {relpath: accepted sha256}) for the data directory ``root``."""
    key = str(root)
    if key not in _manifests:
        own = root / MANIFEST_NAME
        path = own if own.is_file() else SHIPPED_MANIFEST
        try:
            raw = path.read_bytes()
            files = {entry["path"]: entry["sha256"] for entry in json.loads(raw)["files"]}
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DataError(f"{path}: not a readable data manifest ({type(err).__name__}: {err}); "
                            f"write it again with uwe_lightning.integrity.write_manifest('{root}')") from err
        state = root / _FETCH_STATE
        if state.is_file():  # files rebuilt from the official ESCO download
            try:
                for rel, record in json.loads(state.read_text()).get("files", {}).items():
                    if str(record.get("origin", "")).startswith("official:") and record.get("sha256"):
                        files[rel] = record["sha256"]
            except (OSError, ValueError, AttributeError):
                pass  # make data-check names an unreadable fetch record; the shipped hashes still apply
        _manifests[key] = (hashlib.sha256(raw).hexdigest(), files)
    return _manifests[key]


class _Stamps:
    """(resolved path, size, mtime_ns) -> sha256 of files already hashed, kept in the cache directory."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.data: dict[str, list] | None = None

    def _load(self) -> dict[str, list]:
        if self.data is None:
            try:
                self.data = json.loads(self.path.read_text()) if self.path and self.path.is_file() else {}
                if not isinstance(self.data, dict):
                    self.data = {}
            except (OSError, ValueError):
                self.data = {}  # a damaged stamp file only costs a re-hash
        return self.data

    def get(self, path: Path, stat: os.stat_result) -> str | None:
        entry = self._load().get(str(path))
        return entry[2] if entry and entry[:2] == [stat.st_size, stat.st_mtime_ns] else None

    def put(self, path: Path, stat: os.stat_result, sha: str) -> None:
        self._load()[str(path)] = [stat.st_size, stat.st_mtime_ns, sha]
        if self.path is None:
            return
        with contextlib.suppress(OSError):  # a read-only cache only costs a re-hash next time
            atomic_write_json(self.path, self.data)


_stamps: dict[str, _Stamps] = {}


def _stamp_store(cache_dir: Path | None) -> _Stamps:
    key = str(cache_dir)
    if key not in _stamps:
        _stamps[key] = _Stamps(cache_dir / STAMP_FILE if cache_dir else None)
    return _stamps[key]


def _stamped_sha256(path: Path, cache_dir: Path | None) -> str:
    """sha256 of ``path``, from its stamp where size and mtime are unchanged (call with the lock held)."""
    stat = path.stat()
    stamps = _stamp_store(cache_dir)
    sha = stamps.get(path, stat)
    if sha is None:
        sha = sha256_file(path)
        stamps.put(path, stat, sha)  # what the bytes hash to, whether or not they are the expected ones
    return sha


def checked_file(root: Path, relpath: str, cache_dir: Path | None = None) -> Path:
    """``root / relpath`` after checking its sha256 against the manifest (see the module doc); a mismatch is a
    :class:`DataError` naming the file and how to repair the pack."""
    root = Path(root).resolve()
    path = root / relpath
    with _lock:
        sha = _stamped_sha256(path, cache_dir)
        manifest_sha, expected = _manifest(root)
        want = expected.get(relpath)
        if want is not None and sha != want:
            own = (root / MANIFEST_NAME).is_file()
            fix = (f"restore it, or write the manifest again (uwe_lightning.integrity.write_manifest('{root}'))"
                   if own else "rebuild the pack with `make data` (check it with `make data-check`)")
            raise DataError(f"data file {path} is not the pack's ({path.stat().st_size:,} bytes, sha256 "
                            f"{sha[:12]}..., the manifest says {want[:12]}...): it is damaged or was changed; {fix}")
        entry = _read.setdefault(str(root), {"manifest": manifest_sha, "files": {}})
        entry["files"][relpath] = sha if want is not None else f"{sha} (not in the manifest)"
    return path


def file_records(root: str | os.PathLike, names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """``{relpath: {"sha256", "size"}}`` of ``names`` (default: every file) under ``root``, for a model's
    metadata (:func:`check_records` verifies them when it is loaded)."""
    root = Path(root)
    paths = [root / n for n in names] if names is not None else sorted(p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): {"sha256": sha256_file(p), "size": p.stat().st_size} for p in paths}


def check_records(root: str | os.PathLike, records: dict[str, dict[str, Any]], what: str, fix: str,
                  cache_dir: Path | None = None) -> None:
    """Refuse, in one line, a file under ``root`` whose size or sha256 is not what ``records`` says (a missing
    file too); stamped like the data files, so a second load costs a ``stat`` per file."""
    root = Path(root).resolve()
    with _lock:
        for rel, want in records.items():
            path = root / rel
            if not path.is_file():
                raise DataError(f"{what} {root}: {rel} is missing; {fix}")
            size = path.stat().st_size
            if size != want.get("size", size) or _stamped_sha256(path, cache_dir) != want["sha256"]:
                raise DataError(f"{what} {root}: {rel} is damaged ({size:,} bytes; its metadata says "
                                f"{want.get('size', '?'):,} bytes, sha256 {want['sha256'][:12]}...); {fix}")


def data_fingerprint() -> dict[str, Any]:
    """What this process read: per data directory, the manifest's sha256 and each file's sha256, plus one
    sha256 over all of it (equal fingerprints: the same bytes were read)."""
    with _lock:
        dirs = {root: {"manifest_sha256": v["manifest"], "files": dict(sorted(v["files"].items()))}
                for root, v in sorted(_read.items())}
    summary = hashlib.sha256(json.dumps([[v["manifest_sha256"], v["files"]] for v in dirs.values()],
                                        sort_keys=True).encode()).hexdigest()
    return {"sha256": summary, "dirs": dirs}


def write_manifest(root: str | os.PathLike) -> Path:
    """Write ``root/uwe-manifest.json``: every file under ``root`` (but the manifest) with its sha256 and size."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST_NAME
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    entries = [{"path": p.relative_to(root).as_posix(), "sha256": sha256_file(p), "size": p.stat().st_size}
               for p in files]
    out = root / MANIFEST_NAME
    atomic_write_json(out, {"files": entries})
    _manifests.pop(str(root.resolve()), None)
    return out
