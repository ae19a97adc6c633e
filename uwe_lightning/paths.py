"""Where the data pack, the local model cache and derived caches live; a missing one is named.

The data pack is never copied into the project: it is found through ``UWE_DATA_DIR`` (or a config value),
falling back to ``../shared/uwe-data`` next to the checkout where that exists, else to the user cache directory
``$XDG_CACHE_HOME/uwe_lightning/data`` (``~/.cache/uwe_lightning/data``), where ``make data`` builds it from its
public sources. The model cache (assembled by
``make models``) is found through ``UWE_MODEL_DIR``, falling back to ``<repo>/models``.
"""

from __future__ import annotations

import os
from pathlib import Path

from uwe_lightning.integrity import checked_file
from uwe_lightning.io import DataError

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
CONF_DIR = PACKAGE_DIR / "conf"
#: What a training run records about itself, in its run directory (written by ``training.provenance``).
RUN_INFO_FILE = "run_info.json"
PROGRESS_FILE = "progress.json"  # a running job's step and time (training.callbacks.RunProgress)
#: The index of a derived data directory (an unpacked offline bundle's ``data/``): the open protocol's graphs
#: and the WorkBench splits as compact files, read in place of the raw pack (``uwe_lightning.offline``).
DERIVED_INDEX_FILE = "uwe-derived.json"
#: The index of WorkBench published as ``datasets`` tables (:mod:`uwe_lightning.workbench.tables`).
PUBLISHED_INDEX_FILE = "workbench-datasets.json"

#: Every file a WorkBench task or the open training protocol reads, with what provides it.
DATA_FILES: dict[str, str] = {
    "esco/v1.2.0/skills_en.csv": "ESCO v1.2.0 skills (Job2Skill/Skill2Job/SkillNorm, training vocabulary)",
    "esco/v1.2.0/occupations_en.csv": "ESCO v1.2.0 occupations (Job2Skill/Skill2Job test)",
    "esco/v1.2.0/occupationSkillRelations_en.csv": "ESCO v1.2.0 occupation-skill relations",
    "esco/v1.1.0/skills_en.csv": "ESCO v1.1.0 skills (SkillExtract target space)",
    "esco/v1.0.x/occupations_en.csv": "ESCO v1.0.x occupations (JobNorm target space)",
    "workbench/jobnorm/titles.csv": "JobNorm validation (JobBERT evaluation dataset)",
    "workbench/jobnorm/titles.test.csv": "JobNorm test (JobBERT evaluation dataset)",
    "workbench/job2skill_val/job_skill_val.parquet": "Job2Skill/Skill2Job validation (workrb vacancies)",
    "workbench/skill_extraction/house_validation_annotations.csv": "SkillExtr-H validation (SkillSpan)",
    "workbench/skill_extraction/house_test_annotations.csv": "SkillExtr-H test (SkillSpan)",
    "workbench/skill_extraction/tech_validation_annotations.csv": "SkillExtr-T validation (SkillSpan)",
    "workbench/skill_extraction/tech_test_annotations.csv": "SkillExtr-T test (SkillSpan)",
    "extra/skillskape/train.csv": "SkillSkape train sentences (open training protocol, V graph)",
    "extra/onet-29.2/Occupation Data.txt": "O*NET 29.2 occupations (target space of the zero-shot O*NET tasks)",
    "extra/onet-29.2/Alternate Titles.txt": "O*NET 29.2 alternate titles (ONET-JobNorm queries)",
    "extra/onet-29.2/Technology Skills.txt": "O*NET 29.2 technology skills (ONET-Occ2Tech / ONET-Tech2Occ)",
    "extra/onet-29.2/Task Statements.txt": "O*NET 29.2 task statements (ONET-Task2Occ queries)",
}


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/uwe_lightning`` (default ``~/.cache/uwe_lightning``)."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base).expanduser() if base else Path.home() / ".cache") / "uwe_lightning"


def default_data_dir() -> Path:
    """``UWE_DATA_DIR`` if set, else ``../shared/uwe-data`` beside the repository if it exists, else
    ``<user cache>/data`` (what ``make data`` fills)."""
    env = os.environ.get("UWE_DATA_DIR")
    if env:
        return Path(env).expanduser()
    beside = REPO_DIR.parent / "shared" / "uwe-data"
    return beside if beside.is_dir() else user_cache_dir() / "data"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Return the data directory, failing clearly when it does not exist."""
    path = Path(data_dir).expanduser() if data_dir else default_data_dir()
    if not path.is_dir():
        raise DataError(
            f"data directory {path} does not exist. Build it with `make data` (python -m "
            "uwe_lightning.data.fetch), or set UWE_DATA_DIR (or `paths.data_dir=...`) to a uwe-data pack "
            "(docs/how-to/data.md, 'Getting the data')."
        )
    return path


def _data_dir_holding(data_dir: str | os.PathLike | None, index_file: str) -> Path | None:
    try:
        root = resolve_data_dir(data_dir)
    except DataError:
        return None
    return root if (root / index_file).is_file() else None


def derived_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """The data directory if it is a derived one (holds :data:`DERIVED_INDEX_FILE`), else None."""
    return _data_dir_holding(data_dir, DERIVED_INDEX_FILE)


def published_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """The data directory if it holds WorkBench as ``datasets`` tables (:data:`PUBLISHED_INDEX_FILE`), else None."""
    return _data_dir_holding(data_dir, PUBLISHED_INDEX_FILE)


def data_file(data_dir: str | os.PathLike | None, relpath: str) -> Path:
    """Path of one file of the data pack, its bytes checked against the pack's manifest
    (:mod:`uwe_lightning.integrity`); a missing or damaged file is named together with what it provides."""
    root = resolve_data_dir(data_dir)
    path = root / relpath
    if not path.is_file():
        what = DATA_FILES.get(relpath, "a file of the uwe-data pack")
        if (root / DERIVED_INDEX_FILE).is_file():
            raise DataError(f"{root} is a derived data directory (an unpacked offline bundle: the open protocol's "
                            f"graphs and the WorkBench splits only); {relpath} ({what}) needs the raw uwe-data pack")
        raise DataError(f"missing data file {path} ({what}). Is {root} a complete uwe-data pack?")
    return checked_file(root, relpath, resolve_cache_dir())


def _project_or_user_dir(name: str) -> Path:
    """``<repo>/<name>`` in a source checkout, ``~/.cache/uwe_lightning/<name>`` for an installed package."""
    if (REPO_DIR / "pyproject.toml").is_file():
        return REPO_DIR / name
    return user_cache_dir() / name.lstrip(".")


def default_model_dir() -> Path:
    """``UWE_MODEL_DIR`` if set, else ``<repo>/models`` (filled by ``make models``)."""
    env = os.environ.get("UWE_MODEL_DIR")
    return Path(env).expanduser() if env else _project_or_user_dir("models")


def default_cache_dir() -> Path:
    """``UWE_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/uwe_lightning/cache`` (target-space caches, derived data,
    verified-file stamps): never inside the checkout, wherever a command runs from."""
    env = os.environ.get("UWE_CACHE_DIR")
    return Path(env).expanduser() if env else user_cache_dir() / "cache"


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The configured cache directory (``paths.cache_dir``), else :func:`default_cache_dir`."""
    return Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
