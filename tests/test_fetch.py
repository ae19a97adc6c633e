"""``make data`` against a real HTTP server on 127.0.0.1: the shipped manifest's source URLs (under a mirror base
URL), with the miniature pack's files in place of the real ones. Checksums, a corrupted file, an interrupted
download, 404s, the official ESCO rebuild, the hub's SkillMatch-1K, ``--offline``, and every task loading the
result."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import subprocess
import sys
import urllib.parse
import zipfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from tests.helpers.http import FileServer
from tests.helpers.paths import FIXTURES, MINI_DATA, writable_pack
from uwe_lightning.cli.errors import run_reporting_user_errors
from uwe_lightning.cli.fetch import run as fetch_run
from uwe_lightning.data import pack
from uwe_lightning.data.download import DownloadError, download
from uwe_lightning.data.esco_official import counts
from uwe_lightning.paths import CONF_DIR, DATA_FILES, REPO_DIR
from uwe_lightning.workbench.dataset import TaskUnavailable
from uwe_lightning.workbench.registry import get_task, task_names

SKILLMATCH = FIXTURES / "skillmatch"
JOB_SKILL_VAL = "workbench/job2skill_val/job_skill_val.parquet"
TITLES = "workbench/jobnorm/titles.csv"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _path_of(url: str) -> str:
    """The request path a mirror serves ``url`` under (``/<host>/<path>``)."""
    parts = urllib.parse.urlsplit(url)
    return f"/{parts.netloc}{parts.path}"


def _zip(members: dict[str, bytes], folder: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(folder + name, data)
    return buffer.getvalue()


def _task_sizes(data_dir: Path, with_errors: bool = False) -> dict[str, list[int] | str]:
    """(queries, targets) of every registered task split; ``with_errors``: also what the others raised (on the
    miniature pack Skill2Job@open/val has no held-out title, an empty target space)."""
    import uwe_lightning.protocol  # noqa: F401  (registers the protocol's variants)

    sizes: dict[str, list[int] | str] = {}
    for name in task_names():
        for split in ("val", "test"):
            try:
                dataset = get_task(name).load(split, data_dir)
            except (TaskUnavailable, ValueError) as err:
                if with_errors:
                    sizes[f"{name}/{split}"] = f"{type(err).__name__}: {err}".replace(str(data_dir), "<data>")
                continue
            sizes[f"{name}/{split}"] = [dataset.n_queries, dataset.n_targets]
    return sizes


@pytest.fixture(scope="module")
def mini_sources(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """The shipped manifest restricted to the files of the miniature pack, hashes of the miniature files, and
    what a mirror of their sources serves (URL path -> bytes), archives zipped from their members."""
    real = json.loads(pack.MANIFEST_FILE.read_text())
    served: dict[str, bytes] = {}
    members: dict[str, dict[str, bytes]] = {}
    files = []
    for entry in real["files"]:
        if entry["kind"] == "pack_doc":
            files.append(entry)
            continue
        source_file = MINI_DATA / entry["path"]
        if not source_file.is_file():
            continue
        data = source_file.read_bytes()
        entry = {**entry, "sha256": _sha(data), "size": len(data)}
        transform = next((s["transform"] for s in entry["sources"] if "transform" in s), None)
        if entry["kind"] == "assembled":
            entry["counts"] = counts(data, transform)
        for source in entry["sources"]:
            if "url" in source:
                served[_path_of(source["url"])] = data
            if "archive" in source:
                members.setdefault(source["archive"], {})[source["member"]] = data
        files.append(entry)
    archives = dict(real["archives"])
    for name, content in members.items():
        data = _zip(content, folder="export/")
        served[_path_of(archives[name]["url"])] = data
        archives[name] = {**archives[name], "md5": hashlib.md5(data).hexdigest(), "size": len(data)}
    manifest = {"meta": real["meta"], "archives": archives, "files": files, "task_sizes": _task_sizes(MINI_DATA)}
    path = tmp_path_factory.mktemp("manifest") / "sources.json"
    path.write_text(json.dumps(manifest, indent=1))
    return path, served


def _options(server: FileServer, **kwargs) -> pack.FetchOptions:
    return pack.FetchOptions(mirror=server.url, progress=False, backoff=0.0, retries=2, timeout=10, **kwargs)


def _official_zip(tmp_path: Path) -> Path:
    """The miniature ESCO v1.2.0 files in the official download's layout: more columns, ESCO's own row order."""
    def reshape(path: str, columns: list[str], extra: dict[str, str]) -> bytes:
        rows = list(csv.DictReader(io.StringIO((MINI_DATA / path).read_text())))[::-1]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\r\n")
        writer.writeheader()
        writer.writerows({**extra, **row} for row in rows)
        return out.getvalue().encode()

    skills = reshape("esco/v1.2.0/skills_en.csv", ["conceptType", "conceptUri", "skillType", "reuseLevel",
                     "preferredLabel", "altLabels", "hiddenLabels", "status", "modifiedDate", "scopeNote",
                     "definition", "inScheme", "description"], {"status": "released", "hiddenLabels": ""})
    relations = reshape("esco/v1.2.0/occupationSkillRelations_en.csv", ["occupationUri", "occupationLabel",
                        "relationType", "skillType", "skillUri", "skillLabel"], {"occupationLabel": "x"})
    occupations = (MINI_DATA / "esco/v1.2.0/occupations_en.csv").read_bytes()
    path = tmp_path / "ESCO dataset - v1.2.0 - classification - en - csv.zip"
    path.write_bytes(_zip({"skills_en.csv": skills, "occupationSkillRelations_en.csv": relations,
                           "occupations_en.csv": occupations}, folder="ESCO dataset - v1.2.0/"))
    return path


def test_fetch_builds_a_pack_that_every_task_loads(mini_sources, tmp_path):
    manifest_path, served = mini_sources
    manifest = pack.load_manifest(manifest_path)
    out = tmp_path / "data"
    with FileServer(served) as server:
        statuses = pack.fetch_pack(out, manifest, _options(server, esco_v120_zip=str(_official_zip(tmp_path))))
        assert {s.path: s.status for s in statuses if not s.good} == {}
        n_requests = len(server.log)
        again = pack.fetch_pack(out, manifest, _options(server))
        assert len(server.log) == n_requests, "a complete pack downloads nothing"
    assert {s.status for s in again} <= {"ok", "rebuilt"}
    rebuilt = sorted(s.path for s in statuses if s.status == "rebuilt")
    assert rebuilt == ["esco/v1.2.0/occupationSkillRelations_en.csv", "esco/v1.2.0/skills_en.csv"]
    assert not list(out.rglob("*.part")) and not (out / pack.DOWNLOADS_DIR).exists()
    for entry in manifest.files:
        assert (out / entry.path).is_file()
        if entry.path not in rebuilt:
            assert _sha((out / entry.path).read_bytes()) == entry.sha256
    # every task loader accepts the result, with the miniature pack's sizes (and the same refusals)
    assert _task_sizes(out, with_errors=True) == _task_sizes(MINI_DATA, with_errors=True)
    assert _task_sizes(out) == manifest.task_sizes
    assert all(s.good for s in pack.verify_pack(out, manifest))  # --offline accepts it, rebuilt files included
    state = json.loads((out / pack.STATE_FILE).read_text())["files"]
    assert state["esco/v1.1.0/skills_en.csv"]["origin"].endswith("csv.zip#skills_en.csv")
    assert state[TITLES]["origin"].startswith(server.url + "/raw.githubusercontent.com/")


def test_corrupted_file_is_rejected_naming_the_url(mini_sources, tmp_path):
    manifest_path, served = mini_sources
    manifest = pack.load_manifest(manifest_path)
    first, later = (_path_of(s["url"]) for s in manifest.file("extra/skillskape/train.csv").sources)
    corrupt = b"not the file\n" + served[first][13:]
    with FileServer({**served, first: corrupt}) as server:  # the pinned commit's copy is corrupt: the next is used
        statuses = {s.path: s for s in pack.fetch_pack(tmp_path / "a", manifest, _options(server))}
        assert statuses["extra/skillskape/train.csv"].origin == server.url + later
    with FileServer({**served, first: corrupt, later: corrupt}) as server:
        statuses = {s.path: s for s in pack.fetch_pack(tmp_path / "d", manifest, _options(server))}
    failed = statuses["extra/skillskape/train.csv"]
    assert failed.status == "failed"
    for bad in (first, later):
        assert f"checksum mismatch for extra/skillskape/train.csv downloaded from {server.url}{bad}" in failed.detail
    assert not (tmp_path / "d/extra/skillskape/train.csv").exists()
    assert not (tmp_path / "d/extra/skillskape/train.csv.part").exists(), "a corrupt download is not kept"


def test_interrupted_download_resumes_with_a_range_request(mini_sources, tmp_path):
    manifest_path, served = mini_sources
    manifest = pack.load_manifest(manifest_path)
    path = _path_of(manifest.file(JOB_SKILL_VAL).sources[0]["url"])
    with FileServer(served) as server:
        server.cut_once.add(path)
        statuses = {s.path: s for s in pack.fetch_pack(tmp_path / "d", manifest, _options(server))}
    half = len(served[path]) // 2
    assert server.requests_for(path) == [None, f"bytes={half}-"]  # cut after half, then only the rest
    assert statuses[JOB_SKILL_VAL].status == "ok"
    assert (tmp_path / "d" / JOB_SKILL_VAL).read_bytes() == served[path]


def test_partial_file_of_an_earlier_run_is_continued_or_restarted(tmp_path):
    data = bytes(range(256)) * 40
    with FileServer({"/f.bin": data}) as server:
        dest = tmp_path / "f.bin"
        dest.with_name("f.bin.part").write_bytes(data[:1000])  # an earlier run stopped here
        download(f"{server.url}/f.bin", dest, sha256=_sha(data), size=len(data), progress=False)
        assert server.requests_for("/f.bin") == ["bytes=1000-"] and dest.read_bytes() == data
        server.ignore_range.add("/f.bin")  # a server without Range support: the file restarts cleanly
        dest.unlink()
        dest.with_name("f.bin.part").write_bytes(b"x" * 500)
        download(f"{server.url}/f.bin", dest, sha256=_sha(data), progress=False)
        assert dest.read_bytes() == data
        server.ignore_range.clear()  # a stale part that is no prefix: rejected, deleted, the next run is clean
        dest.unlink()
        dest.with_name("f.bin.part").write_bytes(b"x" * 500)
        with pytest.raises(DownloadError, match=rf"checksum mismatch for .* downloaded from {server.url}/f.bin"):
            download(f"{server.url}/f.bin", dest, sha256=_sha(data), progress=False)
        assert not dest.with_name("f.bin.part").exists() and not dest.exists()
        download(f"{server.url}/f.bin", dest, sha256=_sha(data), progress=False)
        assert dest.read_bytes() == data
        server.cut_once.add("/f.bin")  # cut on every try: the part stays for the next run
        dest.unlink()
        with pytest.raises(DownloadError, match="interrupted 1 times.*kept: run again to resume"):
            download(f"{server.url}/f.bin", dest, sha256=_sha(data), retries=0, progress=False)
        assert dest.with_name("f.bin.part").stat().st_size == len(data) // 2


def test_404_is_reported_and_the_next_source_is_tried(mini_sources, tmp_path):
    manifest_path, served = mini_sources
    manifest = pack.load_manifest(manifest_path)
    first, second = (_path_of(s["url"]) for s in manifest.file(TITLES).sources)  # pinned commit, later commit
    only_second = {k: v for k, v in served.items() if k != first}
    with FileServer(only_second) as server:
        statuses = {s.path: s for s in pack.fetch_pack(tmp_path / "a", manifest, _options(server))}
        assert statuses[TITLES].status == "ok" and statuses[TITLES].origin == server.url + second
        assert server.requests_for(first) == [None]  # 404, then the next source
    missing = _path_of(manifest.file("extra/skillskape/train.csv").sources[0]["url"])
    no_file = {k: v for k, v in served.items() if "/SkillSkape/train.csv" not in k}
    with FileServer(no_file) as server:
        statuses = {s.path: s for s in pack.fetch_pack(tmp_path / "b", manifest, _options(server))}
    assert statuses["extra/skillskape/train.csv"].status == "failed"
    assert f"HTTP 404 Not Found for {server.url}{missing} (extra/skillskape/train.csv)" in statuses[
        "extra/skillskape/train.csv"].detail


def test_pack_url_serves_a_copy_of_the_pack(mini_sources, tmp_path):
    manifest_path, _ = mini_sources
    manifest = pack.load_manifest(manifest_path)
    copy = {"/uwe-data/" + urllib.parse.quote(e.path): (MINI_DATA / e.path).read_bytes()
            for e in manifest.files if e.kind != "pack_doc"}
    with FileServer(copy) as server:
        options = pack.FetchOptions(pack_url=f"{server.url}/uwe-data", progress=False, backoff=0.0)
        statuses = pack.fetch_pack(tmp_path / "d", manifest, options)
    assert all(s.status == "ok" for s in statuses)
    assert all(s.origin.startswith("pack_url:") for s in statuses if manifest.file(s.path).kind != "pack_doc")


def test_assembled_files_name_the_official_download_when_it_is_missing(mini_sources, tmp_path):
    manifest_path, served = mini_sources
    manifest = pack.load_manifest(manifest_path)
    with FileServer(served) as server:
        statuses = {s.path: s for s in pack.fetch_pack(tmp_path / "d", manifest, _options(server))}
    failed = statuses["esco/v1.2.0/skills_en.csv"]
    assert failed.status == "failed" and "esco_v120_zip=" in failed.detail and "esco.ec.europa.eu" in failed.detail
    wrong = tmp_path / "wrong.zip"
    wrong.write_bytes(_zip({"skills_en.csv": b"conceptType,conceptUri,skillType,reuseLevel,preferredLabel,"
                            b"altLabels,description\nK,u1,s,r,a,,d\n"}))
    with FileServer(served) as server:
        statuses = {s.path: s for s in pack.fetch_pack(tmp_path / "d", manifest,
                                                       _options(server, esco_v120_zip=str(wrong)))}
    assert "has counts {'rows': 1, 'alt_labels': 0}" in statuses["esco/v1.2.0/skills_en.csv"].detail


def test_offline_verification_names_missing_and_changed_files(mini_sources, tmp_path):
    manifest_path, served = mini_sources
    manifest = pack.load_manifest(manifest_path)
    out = tmp_path / "d"
    with FileServer(served) as server:
        pack.fetch_pack(out, manifest, _options(server))
    (out / TITLES).write_bytes(b"changed\n")
    (out / JOB_SKILL_VAL).unlink()
    status = {s.path: s.status for s in pack.verify_pack(out, manifest)}
    assert status[TITLES] == "mismatch" and status[JOB_SKILL_VAL] == "missing"
    with pytest.raises(pack.DataError, match="does not exist: run `make data`"):
        pack.verify_pack(tmp_path / "nowhere", manifest)


def _cli(*overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("fetch", overrides=["progress=false", "retries=1", *overrides])
    return run_reporting_user_errors("fetch", lambda: fetch_run(cfg))


def test_cli_hub_skillmatch_only_when_allowed(mini_sources, tmp_path, capsys, monkeypatch):
    manifest_path, served = mini_sources
    monkeypatch.delenv("UWE_ALLOW_HUB", raising=False)
    out = tmp_path / "d"
    zip_path = _official_zip(tmp_path)
    with FileServer(served) as server:
        result = _cli(f"paths.data_dir={out}", f"manifest={manifest_path}", f"mirror={server.url}",
                      f"esco_v120_zip='{zip_path}'")
    printed = capsys.readouterr().out
    assert "SkillSim: skipped" in printed and not (out / "workbench/skillsim").exists()
    n_splits = len(json.loads(manifest_path.read_text())["task_sizes"])
    assert f"all {n_splits} task splits have the pack's sizes" in printed  # rebuilt files: every split checked
    assert result["skillsim"].startswith("skipped")
    with pytest.raises(TaskUnavailable):
        get_task("SkillSim").load("test", out)
    # with the hub allowed (here a local folder in the hub layout stands in for TechWolf/SkillMatch-1K)
    monkeypatch.setenv("UWE_ALLOW_HUB", "1")
    result = _cli(f"paths.data_dir={out}", f"manifest={manifest_path}", f"hub_dataset={SKILLMATCH}",
                  f"esco_v120_zip='{zip_path}'")
    assert result["skillsim"].startswith(f"fetched from {SKILLMATCH}")
    val, test = (get_task("SkillSim").load(split, out) for split in ("val", "test"))
    reference = tmp_path / "ref"
    writable_pack(reference)
    (reference / "workbench/skillsim").mkdir()
    shutil.copy(SKILLMATCH / "test.csv", reference / "workbench/skillsim/test.csv")
    expected = get_task("SkillSim").load("test", reference)
    assert (test.queries, test.labels, test.targets) == (expected.queries, expected.labels, expected.targets)
    assert val.n_queries + test.n_queries > 0
    assert "present" in _cli(f"paths.data_dir={out}", f"manifest={manifest_path}", "offline=true")["skillsim"]


def test_cli_errors_are_one_line(mini_sources, tmp_path, capsys):
    manifest_path, served = mini_sources
    with FileServer({}) as server, pytest.raises(SystemExit) as exit_:
        _cli(f"paths.data_dir={tmp_path / 'd'}", f"manifest={manifest_path}", f"mirror={server.url}")
    assert exit_.value.code == 2
    archive = _path_of(pack.load_manifest(manifest_path).archives["onet-29.2-text"]["url"])  # 4 members here
    assert server.requests_for(archive) == [None], "a failed archive is not requested again per member"
    err = capsys.readouterr()
    assert "[fetch] FAILED extra/skillskape/train.csv: HTTP 404 Not Found for" in err.out
    assert err.err.strip().startswith("[fetch] error: ") and "files are missing or wrong" in err.err
    assert len(err.err.strip().splitlines()) == 1


def test_python_m_offline_flag(tmp_path):
    """The real entry point: ``--offline`` is a flag, a bad pack is exit status 2 with one line."""
    command = [sys.executable, "-m", "uwe_lightning.data.fetch", "--offline", f"paths.data_dir={tmp_path}"]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO_DIR, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "[fetch] verifying" in proc.stdout and "MISSING README.md" in proc.stdout
    assert proc.stderr.strip().splitlines()[-1].startswith("[fetch] error: ")


def test_shipped_manifest_covers_the_pack():
    manifest = pack.load_manifest()
    paths = {entry.path for entry in manifest.files}
    assert set(DATA_FILES) <= paths  # every file a task or the protocol reads
    assert len(paths) == len(manifest.files) == manifest.meta["n_files"]
    for entry in manifest.files:
        assert len(entry.sha256) == 64 and entry.size > 0 and entry.sources
        for source in entry.sources:
            assert set(source) & {"url", "archive", "official", "package"}
            if "url" in source:
                assert source["url"].startswith("https://raw.githubusercontent.com/")
            if "archive" in source:
                assert source["archive"] in manifest.archives
            if "package" in source:
                assert _sha((pack.PACK_DOCS_DIR / source["package"]).read_bytes()) == entry.sha256
        assert entry.byte_identical == (entry.kind in ("copy", "archive_member"))
    assert {e.path for e in manifest.files if e.kind == "assembled"} == {
        "esco/v1.2.0/skills_en.csv", "esco/v1.2.0/occupationSkillRelations_en.csv"}


@pytest.mark.data
def test_real_pack_matches_the_shipped_hashes(real_data_dir):
    statuses = pack.verify_pack(real_data_dir)
    assert [s.path for s in statuses if s.status != "ok"] == []
    assert len(statuses) == 45


@pytest.mark.slow
@pytest.mark.data
def test_shipped_manifest_is_what_the_pack_gives(real_data_dir):
    proc = subprocess.run([sys.executable, "experiments/data/make_data_manifest.py", "--pack", str(real_data_dir),
                           "--check"], capture_output=True, text=True, cwd=REPO_DIR, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_default_data_dir_is_the_user_cache_where_no_pack_is_beside(tmp_path, monkeypatch):
    from uwe_lightning import paths

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("UWE_DATA_DIR", raising=False)
    monkeypatch.setattr(paths, "REPO_DIR", tmp_path / "checkout")  # no ../shared/uwe-data beside it
    assert paths.default_data_dir() == tmp_path / "cache" / "uwe_lightning" / "data"
    (tmp_path / "shared" / "uwe-data").mkdir(parents=True)
    assert paths.default_data_dir() == tmp_path / "shared" / "uwe-data"
    monkeypatch.setenv("UWE_DATA_DIR", str(tmp_path / "mine"))
    assert paths.default_data_dir() == tmp_path / "mine"  # UWE_DATA_DIR still wins
    with pytest.raises(pack.DataError, match=r"Build it with `make data`"):
        paths.resolve_data_dir(tmp_path / "absent")


def test_a_wider_source_is_trimmed_to_the_pack_columns(mini_sources, tmp_path):
    """ESCO v1.0.x occupations: SOURCE.md says "columns trimmed"; a source with more columns gives the pack's bytes."""
    manifest_path, served = mini_sources
    manifest = pack.load_manifest(manifest_path)
    entry = manifest.file("esco/v1.0.x/occupations_en.csv")
    rows = list(csv.reader(io.StringIO((MINI_DATA / entry.path).read_text(), newline="")))
    wide = io.StringIO()
    csv.writer(wide, lineterminator="\r\n").writerows([[*row[:3], "x" if i else "hiddenLabels", *row[3:]]
                                                          for i, row in enumerate(rows)])
    path = _path_of(entry.sources[0]["url"])
    with FileServer({**served, path: wide.getvalue().encode()}) as server:
        statuses = {s.path: s for s in pack.fetch_pack(tmp_path / "d", manifest, _options(server))}
    assert statuses[entry.path].status == "ok"
    assert (tmp_path / "d" / entry.path).read_bytes() == (MINI_DATA / entry.path).read_bytes()
    assert not (tmp_path / "d" / pack.DOWNLOADS_DIR).exists()
