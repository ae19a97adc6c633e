"""``python -m uwe_lightning.publish out=DIR ['tasks=[Job2Skill,JobNorm]'] ['splits=[val]'] [paths.data_dir=PACK]``.

Writes WorkBench's task splits as ``datasets`` tables (:mod:`uwe_lightning.workbench.publish`): read one with
``datasets.load_from_disk("DIR/JobNorm/test")``, evaluate on all with ``evaluate paths.data_dir=DIR``. Composes
``conf/publish.yaml`` with Hydra's compose API (no run directory: the tables go where ``out`` says).
"""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from uwe_lightning.cli.errors import compose_main
from uwe_lightning.io import ConfigError
from uwe_lightning.paths import CONF_DIR
from uwe_lightning.workbench.dataset import SPLITS
from uwe_lightning.workbench.publish import publish_workbench
from uwe_lightning.workbench.registry import task_names
from uwe_lightning.workbench.runner import WORKBENCH_TASKS

TOOL = "publish"
USAGE = ("usage: python -m uwe_lightning.publish out=DIR ['tasks=[NAME,NAME]'] ['splits=[val,test]'] "
         "[paths.data_dir=PACK]\n"
         f"  tasks: default the seven WorkBench subtasks; any of {', '.join(task_names())}\n"
         "  paths.data_dir: default $UWE_DATA_DIR (the data pack the splits are built from)\n\n"
         "Convention: Hydra overrides (key=value) composed without a run directory: the tables are written where\n"
         "out= says.")


def _names(value: object) -> list[str]:
    """A list option given as ``[a,b]`` or as one name (``splits=val``)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in OmegaConf.to_container(value)]


def run(argv: list[str]) -> dict:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("publish", overrides=argv)
    if not cfg.out:
        raise ConfigError("out: give a new directory, e.g. `python -m uwe_lightning.publish out=workbench-datasets`")
    tasks = _names(cfg.tasks) or list(WORKBENCH_TASKS)
    splits = _names(cfg.splits) or list(SPLITS)
    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise ConfigError(f"splits={','.join(bad)}: WorkBench has the splits {list(SPLITS)}")
    out = str(cfg.out)
    index = publish_workbench(out, tasks, splits, cfg.paths.data_dir or None)
    written = {k: v for k, v in index["splits"].items() if "unavailable" not in v}
    for key, entry in index["splits"].items():
        what = (f"unavailable: {entry['unavailable']}" if "unavailable" in entry
                else f"{entry['queries']} queries, {entry['targets']} targets")
        print(f"[{TOOL}] {key}: {what}")
    print(f"[{TOOL}] wrote {len(written)} splits to {out} (datasets.load_from_disk('{out}/<task>/"
          f"<split>'); evaluate on them with paths.data_dir={out})")
    return index


def main(argv: list[str] | None = None) -> dict:
    return compose_main(TOOL, USAGE, run, argv)
