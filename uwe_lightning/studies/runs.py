"""Finding, loading and grouping the runs of a sweep.

A run directory (one per Hydra job, see :mod:`uwe_lightning.training.run`) holds ``run_info.json``
(``config``: the resolved config as plain data; ``summary``: written when the run ends) and ``results.json``
(the test evaluation), read in percent whatever the run's age (:mod:`uwe_lightning.workbench.metric_names`). A sweep is read back by the config keys whose values differ between its finished
runs: those are what the sweep varied. ``seed`` is the replicate axis; paths, output directories, Hydra's node
and run-control flags differ between runs without being part of the design, so they never group.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uwe_lightning.io import ConfigError
from uwe_lightning.paths import RUN_INFO_FILE
from uwe_lightning.workbench.metric_names import in_percent
from uwe_lightning.workbench.report import RESULTS_FILE

REPLICATE_KEY = "seed"
#: Keys that differ between runs of one design without being a factor of it.
RUN_CONTROL_KEYS = frozenset({REPLICATE_KEY, "resume", "overwrite"})
LABEL_KEYS = frozenset({"task_name"})  # the experiment's name: runs of two experiments with one config pool
NOT_A_FACTOR_PARTS = frozenset({"hydra", "paths", "logger"})  # logger: names, tags, where logs go
PATH_LIKE_NAMES = frozenset({"dir", "dirpath", "path", "save_dir", "default_root_dir"})


class _Absent:
    """A key that a run's config does not have (``loss.tau`` is a number for InfoNCE, a dict for MTM)."""

    def __repr__(self) -> str:
        return "<absent>"


ABSENT = _Absent()


@dataclass(frozen=True)
class Run:
    """A finished run: its directory, config (nested and flattened to dotted keys) and results."""

    path: Path
    config: dict[str, Any]
    flat: dict[str, Any]
    results: dict[str, Any]

    @property
    def seed(self) -> Any:
        return self.flat.get(REPLICATE_KEY)


@dataclass(frozen=True)
class Skipped:
    """A run directory that is not (yet) a finished run, and why."""

    path: Path
    reason: str


@dataclass
class Group:
    """The runs that share one value of every grouping key (their seeds are the replicates)."""

    values: dict[str, Any]
    runs: list[Run] = field(default_factory=list)

    @property
    def label(self) -> str:
        if not self.values:
            return "all runs"
        if len(self.values) == 1:
            return format_value(next(iter(self.values.values())))
        return ", ".join(f"{key}={format_value(value)}" for key, value in self.values.items())


@dataclass
class Grouping:
    """How a sweep's runs split: the grouping keys, the keys that change along with them, and the groups."""

    keys: list[str]
    derived: list[str]
    groups: list[Group]


# ----------------------------------------------------------------------------------------------------------
# Discovery and loading
# ----------------------------------------------------------------------------------------------------------


def natural_key(path: Path) -> list[Any]:
    """Sort ``2`` before ``10`` (Hydra numbers multirun jobs 0, 1, ..., 10)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def is_run_dir(path: Path) -> bool:
    """A run's directory: it has run_info.json or results.json, or is a Hydra job directory (``.hydra/``)."""
    return (path / RUN_INFO_FILE).is_file() or (path / RESULTS_FILE).is_file() or (path / ".hydra").is_dir()


def _walk(path: Path, found: list[Path]) -> None:
    if is_run_dir(path):
        found.append(path)
        return  # a run's own subfolders (checkpoints/, best_model/) are not runs
    try:
        children = sorted((c for c in path.iterdir() if c.is_dir() and not c.name.startswith(".")),
                          key=natural_key)
    except PermissionError:
        return
    for child in children:
        _walk(child, found)


def find_run_dirs(inputs: Sequence[str | Path]) -> list[Path]:
    """Every run directory under ``inputs`` (multirun or run directories, or their files), once each."""
    if not inputs:
        raise ConfigError("no input: give a multirun directory or one or more run directories")
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_file() and path.name in (RUN_INFO_FILE, RESULTS_FILE):
            path = path.parent
        if not path.is_dir():
            raise ConfigError(f"{item}: no such directory; give a multirun directory or run directories")
        _walk(path, found)
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def _read_json(path: Path) -> tuple[Any, str | None]:
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"unreadable {path.name} ({type(err).__name__}: {err})"


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> dotted leaf keys (lists stay values: ``data.graphs`` -> ``["J"]``).

    >>> flatten({"loss": {"name": "mtm", "tau": {"J": 0.05}}, "data": {"graphs": ["J"]}})
    {'loss.name': 'mtm', 'loss.tau.J': 0.05, 'data.graphs': ['J']}
    """
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def load_run(path: Path) -> Run | Skipped:
    """The finished run in ``path``, or why it is not one (unfinished, skipped, or without test results)."""
    if not (path / RUN_INFO_FILE).is_file():
        return Skipped(path, f"no {RUN_INFO_FILE} (the run never started, or was killed before writing it)")
    info, error = _read_json(path / RUN_INFO_FILE)
    if error:
        return Skipped(path, error)
    if not isinstance(info, dict) or not isinstance(info.get("config"), dict):
        return Skipped(path, f"{RUN_INFO_FILE} has no config")
    if info.get("command") == "evaluate":
        return Skipped(path, "an evaluation of a model (python -m uwe_lightning.evaluate), not a training run")
    summary = info.get("summary")
    if not isinstance(summary, dict):
        return Skipped(path, f"unfinished: {RUN_INFO_FILE} has no summary (still running, or stopped)")
    if summary.get("skipped"):
        return Skipped(path, f"skipped run: {summary['skipped']}")
    if not (path / RESULTS_FILE).is_file():
        return Skipped(path, f"no {RESULTS_FILE} (no test evaluation: test.tasks empty, or stopped before)")
    results, error = _read_json(path / RESULTS_FILE)
    if error:
        return Skipped(path, error)
    if not isinstance(results, dict) or not isinstance(results.get("tasks"), dict) \
            or not isinstance(results.get("macro"), dict):
        return Skipped(path, f"{RESULTS_FILE} has no 'tasks' / 'macro' results")
    # an older run's results.json holds fractions: converted here, so every study reads percent
    return Run(path=path, config=info["config"], flat=flatten(info["config"]), results=in_percent(results))


def load_runs(paths: Iterable[Path]) -> tuple[list[Run], list[Skipped]]:
    runs: list[Run] = []
    skipped: list[Skipped] = []
    for path in paths:
        loaded = load_run(path)
        (runs if isinstance(loaded, Run) else skipped).append(loaded)
    return runs, skipped


# ----------------------------------------------------------------------------------------------------------
# What the sweep varied
# ----------------------------------------------------------------------------------------------------------


def canonical(value: Any) -> str:
    """A hashable, order-independent text of a config value (lists and dicts included)."""
    return "<absent>" if value is ABSENT else json.dumps(value, sort_keys=True, default=str)


def format_value(value: Any) -> str:
    """A config value as a table label.

    >>> [format_value(v) for v in (["J"], None, 0.10, True, "mtm")]
    ['[J]', 'null', '0.1', 'true', 'mtm']
    """
    if value is ABSENT:
        return "(unset)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _not_a_factor(key: str, runs: Sequence[Run]) -> bool:
    """Seed, run control, the experiment's name, logger settings, paths and output directories, Hydra's node, and
    keys that only follow the seed."""
    parts = key.split(".")
    if key in RUN_CONTROL_KEYS or key in LABEL_KEYS or parts[0] in NOT_A_FACTOR_PARTS:
        return True
    last = parts[-1]
    if last in PATH_LIKE_NAMES or last.endswith(("_dir", "_path")):
        return True
    for run in runs:
        value, out_dir = run.flat.get(key), run.flat.get("paths.output_dir")
        if isinstance(value, str) and isinstance(out_dir, str) and out_dir and out_dir in value:
            return True  # a path inside the run's own directory
    seeds = [run.seed for run in runs]
    return None not in seeds and all(run.flat.get(key, ABSENT) == run.seed for run in runs)  # e.g. data.seed


def varying_keys(runs: Sequence[Run]) -> list[str]:
    """Config keys (config order) whose values differ between ``runs``, factors of the design only."""
    keys = list(dict.fromkeys(key for run in runs for key in run.flat))
    varying = [k for k in keys if len({canonical(run.flat.get(k, ABSENT)) for run in runs}) > 1]
    return [k for k in varying if not _not_a_factor(k, runs)]


def _determined_by(key: str, by: Sequence[str], runs: Sequence[Run]) -> bool:
    seen: dict[tuple[str, ...], str] = {}
    for run in runs:
        cause = tuple(canonical(run.flat.get(k, ABSENT)) for k in by)
        value = canonical(run.flat.get(key, ABSENT))
        if seen.setdefault(cause, value) != value:
            return False
    return True


def grouping_keys(runs: Sequence[Run]) -> tuple[list[str], list[str]]:
    """(grouping keys, keys that change along with them) of the varied keys.

    Choosing ``scorer=maxsim`` also changes ``scorer.tau``, ``loss=infonce`` also ``loss.tau``/``loss.alpha``:
    a key whose value follows from the keys kept so far (``*.name`` keys first) is reported, not grouped by.
    """
    varying = varying_keys(runs)
    ordered = sorted(varying, key=lambda k: (not k.endswith(".name"), varying.index(k)))
    kept: list[str] = []
    derived: list[str] = []
    for key in ordered:
        (derived if kept and _determined_by(key, kept, runs) else kept).append(key)
    kept.sort(key=varying.index)
    return kept, derived


def group_runs(runs: Sequence[Run]) -> Grouping:
    """Runs grouped by the grouping keys; groups in the order their first run was found (the sweep's)."""
    keys, derived = grouping_keys(runs)
    groups: dict[tuple[str, ...], Group] = {}
    for run in runs:
        values = {k: run.flat.get(k, ABSENT) for k in keys}
        ident = tuple(canonical(v) for v in values.values())
        groups.setdefault(ident, Group(values=values)).runs.append(run)
    return Grouping(keys=keys, derived=derived, groups=list(groups.values()))


def first_seen(items: Iterable[Iterable[str]]) -> list[str]:
    """The distinct names of several sequences, in the order they first appear."""
    return list(dict.fromkeys(name for seq in items for name in seq))
