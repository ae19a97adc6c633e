"""``python -m uwe_lightning.data.fetch [--offline] [--hub] [key=value ...]``: build or verify the data pack.

Without ``--offline`` every file of the pack manifest (:mod:`uwe_lightning.data.pack`) that is missing or wrong
in ``paths.data_dir`` is obtained from its sources (resumable, atomic, sha256-checked); ``--offline`` only
verifies. ``--hub`` (or ``UWE_ALLOW_HUB=1``) also loads SkillMatch-1K into ``workbench/skillsim/test.parquet`` so
that SkillSim becomes available; without it SkillSim is reported as skipped and everything else works. When a
file was rebuilt from an official download (not byte-identical by design), every task split is rebuilt and its
size compared with the pack's (``check_tasks``). One summary line per outcome; a problem is a one-line error
naming the file and the URL, exit status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from uwe_lightning.cli.errors import hydra_entry_point, run_reporting_user_errors
from uwe_lightning.data.pack import FetchOptions, FileStatus, Manifest, fetch_pack, load_manifest, verify_pack
from uwe_lightning.io import ConfigError, DataError, atomic_write_path, atomic_write_text
from uwe_lightning.paths import CONF_DIR, default_data_dir
from uwe_lightning.workbench.dataset import TaskUnavailable
from uwe_lightning.workbench.registry import get_task
from uwe_lightning.workbench.tasks.skillsim import (
    SKILLMATCH_COLUMNS,
    SKILLMATCH_LOCAL_DIR,
    read_skillmatch_hub,
    read_skillmatch_local,
)

FLAGS = {"--offline": "offline=true", "--hub": "hub=true"}


def take_flags(argv: list[str] | None = None) -> None:
    """``--offline`` / ``--hub`` as Hydra overrides (Hydra itself rejects unknown ``--`` arguments)."""
    argv = sys.argv if argv is None else argv
    for i, arg in enumerate(argv):
        if arg in FLAGS:
            argv[i] = FLAGS[arg]


def truthy(value) -> bool:
    """A config flag that may come from the environment (``UWE_ALLOW_HUB=1``)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", "", "none", "null"):
        return False
    raise ConfigError(f"hub={value!r}: expected true/false (or UWE_ALLOW_HUB=1)")


def fetch_skillmatch(data_dir: Path, dataset: str, cache_dir: str | None = None) -> str:
    """SkillMatch-1K (hub split ``test``) into ``<data_dir>/workbench/skillsim/test.parquet``, the layout the
    SkillSim task reads; a copy already there is kept. Returns what happened, in words."""
    present = read_skillmatch_local(data_dir)
    if present is not None:
        return f"present ({present[1]})"
    try:
        frame = read_skillmatch_hub(dataset, cache_dir)
    except TaskUnavailable as err:
        raise DataError(str(err)) from None
    target = data_dir / SKILLMATCH_LOCAL_DIR / "test.parquet"
    with atomic_write_path(target, suffix=".parquet") as tmp:
        frame[list(SKILLMATCH_COLUMNS)].to_parquet(tmp, index=False)
    atomic_write_text(target.with_name("SOURCE.md"), f"# SkillMatch-1K\n\nSplit `test` of hub dataset `{dataset}`, "
                      "loaded with `datasets.load_dataset` by `python -m uwe_lightning.data.fetch --hub`; columns "
                      f"{', '.join(SKILLMATCH_COLUMNS)}. Not part of the checksummed pack.\n")
    return f"fetched from {dataset} ({len(frame):,} pairs) into {target}"


def check_task_sizes(data_dir: Path, manifest: Manifest) -> list[str]:
    """Every task split the manifest has a size for, rebuilt from ``data_dir``; the ones whose (queries, targets)
    differ from the pack's."""
    import uwe_lightning.protocol  # noqa: F401  (registers the protocol's task variants)

    differ = []
    for key, expected in manifest.task_sizes.items():
        name, split = key.rsplit("/", 1)
        dataset = get_task(name).load(split, data_dir)
        if [dataset.n_queries, dataset.n_targets] != list(expected):
            differ.append(f"{key}: {dataset.n_queries:,} x {dataset.n_targets:,}, the pack {expected[0]:,} x "
                          f"{expected[1]:,}")
    return differ


def summary(statuses: list[FileStatus], manifest: Manifest) -> str:
    kinds = {entry.path: entry.kind for entry in manifest.files}
    ok = [s for s in statuses if s.status == "ok"]
    by_kind = {kind: sum(kinds[s.path] == kind for s in ok) for kind in ("copy", "archive_member", "pack_doc",
                                                                        "assembled")}
    text = (f"{len(ok)}/{len(statuses)} files match the pack's sha256 ({by_kind['copy'] + by_kind['archive_member']}"
            f" byte-identical copies of public sources, {by_kind['assembled']} assembled, {by_kind['pack_doc']} "
            "pack docs)")
    rebuilt = [s for s in statuses if s.status == "rebuilt"]
    return text + (f"; {len(rebuilt)} rebuilt from an official download" if rebuilt else "")


def run(cfg: DictConfig) -> dict:
    data_dir = Path(cfg.paths.data_dir).expanduser() if cfg.paths.data_dir else default_data_dir()
    manifest = load_manifest(cfg.manifest)
    offline = truthy(cfg.offline)
    print(f"[fetch] {'verifying' if offline else 'building'} {data_dir}", flush=True)
    if offline:
        statuses = verify_pack(data_dir, manifest)
    else:
        options = FetchOptions(mirror=cfg.mirror, pack_url=cfg.pack_url, esco_v120_zip=cfg.esco_v120_zip,
                               timeout=float(cfg.timeout), retries=int(cfg.retries), progress=bool(cfg.progress),
                               keep_downloads=bool(cfg.keep_downloads))
        statuses = fetch_pack(data_dir, manifest, options)
    for status in statuses:
        if not status.good:
            print(f"[fetch] {status.status.upper()} {status.path}: {status.detail}", flush=True)
        elif status.status == "rebuilt":
            print(f"[fetch] rebuilt {status.path} from {status.origin}", flush=True)
    print(f"[fetch] {summary(statuses, manifest)}", flush=True)
    skillsim = "skipped (SkillMatch-1K comes from a model hub: pass --hub or set UWE_ALLOW_HUB=1)"
    if truthy(cfg.hub) and not offline:
        skillsim = fetch_skillmatch(data_dir, str(cfg.hub_dataset))
    elif (present := read_skillmatch_local(data_dir) if data_dir.is_dir() else None) is not None:
        skillsim = f"present ({present[1]})"
    print(f"[fetch] SkillSim: {skillsim}", flush=True)
    bad = [s for s in statuses if not s.good]
    if bad:
        raise DataError(f"{len(bad)} of {len(statuses)} files are missing or wrong in {data_dir} (listed above); "
                        + ("run without --offline to fetch them" if offline else "each line names the URLs tried"))
    check = str(cfg.check_tasks).lower()
    if check == "true" or (check == "auto" and any(s.status == "rebuilt" for s in statuses)):
        differ = check_task_sizes(data_dir, manifest)
        if differ:
            raise DataError(f"task sizes differ from the pack's: {'; '.join(differ)}")
        print(f"[fetch] all {len(manifest.task_sizes)} task splits have the pack's sizes", flush=True)
    return {"data_dir": str(data_dir), "statuses": statuses, "skillsim": skillsim}


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="fetch")
def _main(cfg: DictConfig) -> None:
    run_reporting_user_errors("fetch", lambda: run(cfg))


_entry = hydra_entry_point(_main)


def main() -> None:
    """``--offline`` / ``--hub`` become Hydra overrides, then Hydra runs."""
    take_flags()
    _entry()
