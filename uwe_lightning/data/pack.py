"""The data pack as a manifest of files with their public sources, and the two things done with it: verify a
directory against it, and build a directory from the sources (``make data``).

The manifest (``sources.json`` beside this module, written by ``experiments/data/make_data_manifest.py`` from the
pack itself) lists every file of the pack with its sha256 and size, and the sources it can be obtained from, in
the order they are tried:

* ``url``: a byte-identical public copy (a GitHub raw URL at a pinned commit); checked against the sha256;
  with a ``transform`` (columns the pack kept), the transformed download is checked against the sha256;
* ``archive`` + ``member``: a member of a public zip (archive checked by its published md5 and size, member by
  the sha256);
* ``official`` + ``member`` (+ ``transform``): a member of an official download that has no fixed URL (ESCO
  v1.2.0: ESCO e-mails a link), given by the user as ``esco_v120_zip=<zip>``; a transformed member is not
  byte-identical to the pack's assembled file, so it is checked by its counts (rows, altLabels, ...) instead and
  recorded as *rebuilt*;
* ``package``: a documentation file of the pack (README, SOURCE.md) shipped inside this package.

``pack_url=<URL of a copy of the pack>`` (an internal mirror of ``uwe-data`` itself) is tried first for every
file, with the pack's sha256. ``mirror=<base URL>`` maps every upstream URL to ``<base>/<host>/<path>``. What was
obtained from where is recorded in ``<data_dir>/.uwe_fetch.json``, which :func:`verify_pack` reads so that a
rebuilt file stays accepted while its bytes do not change.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uwe_lightning.data.download import DownloadError, download, file_digests, mirrored
from uwe_lightning.data.esco_official import TRANSFORMS, counts, zip_member
from uwe_lightning.integrity import MANIFEST_NAME
from uwe_lightning.io import DataError, atomic_write_bytes, atomic_write_json

MANIFEST_FILE = Path(__file__).with_name("sources.json")
PACK_DOCS_DIR = Path(__file__).with_name("pack_docs")
STATE_FILE = ".uwe_fetch.json"
DOWNLOADS_DIR = ".downloads"
ESCO_V120_DOWNLOAD = ("https://esco.ec.europa.eu/en/use-esco/download (ESCO dataset - v1.2.0, classification, "
                      "language en, file type csv; ESCO e-mails the download link)")


@dataclass(frozen=True)
class PackFile:
    """One file of the pack: where it goes, what it must hash to, and where it can come from."""

    path: str
    sha256: str
    size: int
    kind: str  # copy | archive_member | assembled | pack_doc
    byte_identical: bool  # a public source has exactly these bytes
    sources: list[dict[str, Any]]
    provides: str = ""
    note: str = ""
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    files: list[PackFile]
    archives: dict[str, dict[str, Any]]
    task_sizes: dict[str, list[int]]
    meta: dict[str, Any]
    source: Path | None = None  # the file it was read from

    def file(self, path: str) -> PackFile:
        for entry in self.files:
            if entry.path == path:
                return entry
        raise KeyError(f"{path} is not a file of the pack manifest")


def load_manifest(path: str | os.PathLike | None = None) -> Manifest:
    """The shipped manifest (or the one at ``path``); a malformed one is a DataError naming it."""
    path = Path(path) if path else MANIFEST_FILE
    try:
        raw = json.loads(path.read_text())
        files = [PackFile(**entry) for entry in raw["files"]]
        return Manifest(files, raw.get("archives", {}), raw.get("task_sizes", {}), raw.get("meta", {}), path)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a readable pack manifest ({type(err).__name__}: {err})") from err


@dataclass
class FileStatus:
    """What became of one file: ``ok`` (its bytes are the pack's), ``rebuilt`` (from an official download, checked
    by its counts), ``missing``, ``mismatch`` (present, wrong bytes) or ``failed`` (every source failed)."""

    path: str
    status: str
    detail: str = ""
    origin: str = ""

    @property
    def good(self) -> bool:
        return self.status in ("ok", "rebuilt")


@dataclass
class FetchOptions:
    mirror: str | None = None
    pack_url: str | None = None
    esco_v120_zip: str | None = None
    timeout: float = 60.0
    retries: int = 3
    backoff: float = 1.0
    progress: bool = True
    keep_downloads: bool = False


def read_state(data_dir: Path) -> dict[str, dict[str, Any]]:
    path = data_dir / STATE_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text()).get("files", {})
    except (OSError, ValueError, AttributeError) as err:
        raise DataError(f"{path}: unreadable fetch record ({err}); delete it and run `make data` again") from err


def _check_present(entry: PackFile, data_dir: Path, state: dict[str, dict[str, Any]]) -> FileStatus:
    path = data_dir / entry.path
    if not path.is_file():
        return FileStatus(entry.path, "missing")
    sha = file_digests(path)["sha256"]
    if sha == entry.sha256:
        return FileStatus(entry.path, "ok", origin=state.get(entry.path, {}).get("origin", "present"))
    record = state.get(entry.path, {})
    if record.get("sha256") == sha and str(record.get("origin", "")).startswith("official:"):
        return FileStatus(entry.path, "rebuilt", "rebuilt from the official download: not byte-identical to the "
                          "pack's assembled file by design (checked by its counts when it was built)",
                          record["origin"])
    return FileStatus(entry.path, "mismatch", f"sha256 {sha}, expected {entry.sha256}")


def verify_pack(data_dir: str | os.PathLike, manifest: Manifest | None = None) -> list[FileStatus]:
    """Check every manifest file of ``data_dir`` against its sha256 (``--offline``); nothing is downloaded."""
    manifest = manifest or load_manifest()
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data directory {data_dir} does not exist: run `make data` (python -m "
                        "uwe_lightning.data.fetch) to build it, or point paths.data_dir / UWE_DATA_DIR at a pack")
    state = read_state(data_dir)
    return [_check_present(entry, data_dir, state) for entry in manifest.files]


class _Builder:
    """Obtains the files of one fetch run; archives are downloaded once and removed at the end."""

    def __init__(self, data_dir: Path, manifest: Manifest, options: FetchOptions) -> None:
        self.data_dir, self.manifest, self.options = data_dir, manifest, options
        self.archives: dict[str, Path] = {}
        self.failed_archives: dict[str, DataError] = {}
        self.downloads: list[Path] = []  # source files transformed into a pack file (removed at the end)

    def candidates(self, entry: PackFile) -> list[dict[str, Any]]:
        first = [{"pack_url": self.options.pack_url}] if self.options.pack_url and entry.kind != "pack_doc" else []
        return [*first, *entry.sources]

    def _download(self, url: str, dest: Path, what: str, **checks: Any) -> Path:
        o = self.options
        return download(url, dest, what=what, timeout=o.timeout, retries=o.retries, backoff=o.backoff,
                        progress=o.progress, **checks)

    def archive(self, name: str) -> Path:
        """The downloaded archive ``name`` (once per run; a failure is remembered, not retried per member)."""
        if name in self.failed_archives:
            raise self.failed_archives[name]
        if name not in self.archives:
            spec = self.manifest.archives[name]
            url = mirrored(spec["url"], self.options.mirror)
            filename = urllib.parse.unquote(spec["url"].rsplit("/", 1)[-1])
            dest = self.data_dir / DOWNLOADS_DIR / filename
            try:
                self.archives[name] = self._download(url, dest, f"{name} ({filename})", md5=spec.get("md5"),
                                                     size=spec.get("size"))
            except DataError as err:
                self.failed_archives[name] = err
                raise
        return self.archives[name]

    def obtain(self, entry: PackFile, source: dict[str, Any]) -> tuple[str, bool]:
        """Write ``entry`` from ``source``; returns (origin, byte-identical to the pack)."""
        dest = self.data_dir / entry.path
        if "pack_url" in source:
            url = f"{source['pack_url'].rstrip('/')}/{urllib.parse.quote(entry.path)}"
            self._download(url, dest, entry.path, sha256=entry.sha256, size=entry.size)
            return f"pack_url:{url}", True
        if "url" in source and "transform" in source:  # a public file the pack took columns of
            url = mirrored(source["url"], self.options.mirror)
            raw = self.data_dir / DOWNLOADS_DIR / f"{Path(entry.path).name}.source"
            self.downloads.append(self._download(url, raw, f"{entry.path} (its source)"))
            return self._publish(entry, TRANSFORMS[source["transform"]](raw.read_bytes(), url), url, exact=True)
        if "url" in source:
            url = mirrored(source["url"], self.options.mirror)
            self._download(url, dest, entry.path, sha256=entry.sha256, size=entry.size)
            return url, True
        if "package" in source:
            data = (PACK_DOCS_DIR / source["package"]).read_bytes()
            return self._publish(entry, data, f"package:{source['package']}", exact=True)
        if "archive" in source:
            archive = self.archive(source["archive"])
            url = self.manifest.archives[source["archive"]]["url"]
            return self._publish(entry, zip_member(archive, source["member"]), f"{url}#{source['member']}",
                                 exact=True)
        if "official" in source:
            return self._official(entry, source)
        raise DataError(f"manifest: unknown source {source} for {entry.path}")

    def _official(self, entry: PackFile, source: dict[str, Any]) -> tuple[str, bool]:
        archive = self.options.esco_v120_zip
        if not archive:
            raise DataError(f"{entry.path} has no byte-identical public copy; it can be rebuilt from the official "
                            f"ESCO v1.2.0 CSV download ({ESCO_V120_DOWNLOAD}): pass esco_v120_zip=<that zip>, or "
                            "pack_url=<URL of a copy of the pack>")
        if not Path(archive).is_file():
            raise DataError(f"esco_v120_zip={archive}: no such file")
        data = zip_member(archive, source["member"])
        transform = source.get("transform")
        if transform:
            data = TRANSFORMS[transform](data, f"{archive}#{source['member']}")
            got = counts(data, transform, source["member"])
            if got != entry.counts:
                raise DataError(f"{entry.path} rebuilt from {archive}#{source['member']} has counts {got}, the "
                                f"pack's file {entry.counts}: is it the ESCO v1.2.0 English CSV download?")
        origin = f"official:{source['official']}:{Path(archive).name}#{source['member']}"
        return self._publish(entry, data, origin, exact=not transform)

    def _publish(self, entry: PackFile, data: bytes, origin: str, exact: bool) -> tuple[str, bool]:
        sha = hashlib.sha256(data).hexdigest()
        if exact and sha != entry.sha256:
            raise DownloadError(f"checksum mismatch for {entry.path} from {origin}: sha256 {sha}, expected "
                                f"{entry.sha256}")
        atomic_write_bytes(self.data_dir / entry.path, data)
        return origin, sha == entry.sha256

    def cleanup(self) -> None:
        if self.options.keep_downloads:
            return
        for path in [*self.archives.values(), *self.downloads]:
            path.unlink(missing_ok=True)
        downloads = self.data_dir / DOWNLOADS_DIR
        if downloads.is_dir() and not any(downloads.iterdir()):
            shutil.rmtree(downloads)


def fetch_pack(data_dir: str | os.PathLike, manifest: Manifest | None = None,
               options: FetchOptions | None = None) -> list[FileStatus]:
    """Build ``data_dir`` from the sources: files already right are kept, the others obtained from their first
    source that works (atomically, checked). One :class:`FileStatus` per manifest file; ``failed`` ones say why
    each of their sources failed. Nothing is written when nothing is missing."""
    manifest = manifest or load_manifest()
    options = options or FetchOptions()
    data_dir = Path(data_dir)
    state = read_state(data_dir) if data_dir.is_dir() else {}
    builder = _Builder(data_dir, manifest, options)
    statuses, changed = [], False
    try:
        for entry in manifest.files:
            present = _check_present(entry, data_dir, state)
            if present.good:
                statuses.append(present)
                continue
            errors = []
            for source in builder.candidates(entry):
                try:
                    origin, exact = builder.obtain(entry, source)
                except DataError as err:
                    errors.append(" ".join(str(err).split()))
                    continue
                state[entry.path] = {"sha256": file_digests(data_dir / entry.path)["sha256"], "origin": origin,
                                     "byte_identical": exact}
                statuses.append(FileStatus(entry.path, "ok" if exact else "rebuilt", origin=origin))
                changed = True
                break
            else:
                statuses.append(FileStatus(entry.path, "failed", " | ".join(errors)))
    finally:
        builder.cleanup()
        if changed:
            atomic_write_json(data_dir / STATE_FILE, {"format": 1, "files": state})
        if manifest.source and manifest.source.resolve() != MANIFEST_FILE.resolve() and data_dir.is_dir():
            # a pack of another manifest carries it: loading checks its files against it (uwe_lightning.integrity)
            atomic_write_bytes(data_dir / MANIFEST_NAME, manifest.source.read_bytes())
    return statuses
