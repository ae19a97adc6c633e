"""What every registered task builds, as digests, and what a tiny model scores on it: the golden record that
``tests/test_task_identity.py`` holds the task files to, so a refactor of them cannot change a result unseen.

Per task and split: the sizes and a SHA-256 digest of the queries, targets, labels, exclude and meta (in their
order; the data folder's path written as ``<data>``). Equal digests mean every model scores equal numbers. On the
mini pack also MAP / RP@10 / n_queries of the tiny BERT (:mod:`tests.helpers.models`). After an intended change
of what a task builds, write the record again and commit it with the change, saying why in the message::

    UWE_DATA_DIR=/path/to/uwe-data .venv/bin/python -m tests.helpers.task_digests --write

``--tiny-real 50`` prints the tiny BERT's metrics on the real pack instead (50 queries per task and split): run it
on two versions of the code to compare them beyond the digests.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.helpers.paths import FIXTURES, MINI_DATA
from uwe_lightning.workbench.dataset import SPLITS, RankingDataset, TaskUnavailable
from uwe_lightning.workbench.registry import get_task, task_names

RECORDS = FIXTURES / "task_digests"
#: The tiny model's evaluation on the mini pack: this many queries per task and split (a subsample of the larger).
TINY_MAX_QUERIES = 5
FIELDS = ("queries", "targets", "labels", "exclude", "meta")


def _digest(value: object, data_dir: Path) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str).replace(str(data_dir), "<data>")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def dataset_record(ds: RankingDataset, data_dir: Path) -> dict[str, object]:
    """Sizes and per-field digests of one split."""
    return {"n_queries": ds.n_queries, "n_targets": ds.n_targets,
            **{name: _digest(getattr(ds, name), data_dir) for name in FIELDS}}


def recorded_tasks() -> list[str]:
    """Every registered task but ``edges`` (it reads a user's file, not the pack)."""
    import uwe_lightning  # noqa: F401  (registers the protocol's variants too)

    return [name for name in task_names() if name != "edges"]


def task_records(data_dir: Path) -> dict[str, dict[str, object]]:
    """``"<task>/<split>"`` -> :func:`dataset_record`, or ``{"unavailable": reason}``, or ``{"raises": message}``."""
    records: dict[str, dict[str, object]] = {}
    for name in recorded_tasks():
        for split in SPLITS:
            try:
                records[f"{name}/{split}"] = dataset_record(get_task(name).load(split, data_dir), data_dir)
            except TaskUnavailable as err:
                records[f"{name}/{split}"] = {"unavailable": str(err).replace(str(data_dir), "<data>")}
            except ValueError as err:  # e.g. Skill2Job@open/val on the mini pack: no held-out title at all
                records[f"{name}/{split}"] = {"raises": str(err).replace(str(data_dir), "<data>")}
    return records


def tiny_metrics(model_dir: Path, data_dir: Path, records: dict[str, dict[str, object]],
                 max_queries: int = TINY_MAX_QUERIES) -> dict[str, dict[str, float]]:
    """``"<task>/<split>"`` -> MAP, RP@10 and n_queries of the tiny BERT (mean scorer) on ``data_dir``, for the
    splits that ``records`` (:func:`task_records`) say load."""
    from uwe_lightning.ranking.ranker import Ranker
    from uwe_lightning.workbench.runner import evaluate_ranker

    ranker = Ranker.from_pretrained(str(model_dir), scorer="mean")
    metrics: dict[str, dict[str, float]] = {}
    for split in SPLITS:
        tasks = [name for name in recorded_tasks() if "n_queries" in records[f"{name}/{split}"]]
        result = evaluate_ranker(ranker, tasks, split, data_dir, max_queries=max_queries)
        for name, row in result["tasks"].items():
            metrics[f"{name}/{split}"] = {key: row[key] for key in ("map", "rp@10", "n_queries")}
    return metrics


@contextmanager
def mini_pack_with_skillsim() -> Iterator[Path]:
    """The mini pack plus the SkillMatch stand-in at ``workbench/skillsim/test.csv`` (SkillSim's local copy)."""
    with tempfile.TemporaryDirectory() as tmp:
        pack = Path(tmp) / "uwe-data-mini"
        shutil.copytree(MINI_DATA, pack)
        (pack / "workbench" / "skillsim").mkdir()
        shutil.copy(FIXTURES / "skillmatch" / "test.csv", pack / "workbench" / "skillsim" / "test.csv")
        yield pack


def _write(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Print or --write the golden task records.")
    parser.add_argument("--write", action="store_true", help=f"write them under {RECORDS}")
    parser.add_argument("--tiny-real", type=int, metavar="N", default=None,
                        help="print only the tiny BERT's metrics on the real pack, N queries per task and split")
    args = parser.parse_args()
    from tests.helpers.models import build_tiny_model
    from uwe_lightning.esco import clear_cache
    from uwe_lightning.paths import default_data_dir

    if args.tiny_real:
        real = default_data_dir()
        with tempfile.TemporaryDirectory() as tmp:
            metrics = tiny_metrics(build_tiny_model(Path(tmp)), real, task_records(real), args.tiny_real)
        print(json.dumps(metrics, indent=1, sort_keys=True))
        return
    records = {}
    with mini_pack_with_skillsim() as pack, tempfile.TemporaryDirectory() as tmp:
        clear_cache()
        tasks = task_records(pack)
        records["mini"] = {"tasks": tasks, "tiny": tiny_metrics(build_tiny_model(Path(tmp)), pack, tasks)}
    clear_cache()
    real = default_data_dir()
    if (real / "README.md").is_file():
        records["real"] = {"tasks": task_records(real)}
    for name, record in records.items():
        if args.write:
            _write(RECORDS / f"{name}.json", record)
        else:
            print(json.dumps({name: record}, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
