"""WorkRB bridge: a UWE model (any scorer) as a WorkRB model, WorkRB's ESCO from the pack, WorkRB as a runner.

WorkRB (``pip install workrb``, a dev dependency) is the authors' benchmark runner: 21 tasks (WorkBench's,
MELO, MELS, multilingual ESCO splits, graded tasks, SkillSkape / SkillXL extraction, ...). Three pieces:

- :class:`UWEWorkRBModel`: a ``workrb.models.base.ModelInterface`` over a
  :class:`~uwe_lightning.ranking.ranker.Ranker` (registered in WorkRB's model registry as ``UWEModel``), so
  every scorer works, the token-level ones included, with the Ranker's bucketed scoring; the last target space
  is kept encoded (Job2Skill and SkillNorm share the skill vocabulary).
- :func:`link_esco`: WorkRB reads ESCO from ``<cache>/esco/<version>/<language dir>/{skills, occupations,
  occupationSkillRelations}_en.csv`` and downloads it when absent; offline, the pack's CSVs are symlinked
  there (no copies). ``<cache>`` is ``appdirs.user_cache_dir("wteb")``, i.e. ``$XDG_CACHE_HOME/wteb``, and the
  language directory is whatever ``Path / Language.EN`` gives (``Language.EN`` on Python 3.11).
- :func:`evaluate_with_workrb`: WorkRB tasks by their WorkRB name or our task name, an optional fixed query
  subset (the same rule as WorkBench's ``max_queries``), ``workrb.evaluate``, and the numbers in our
  ``results.json`` layout. A task whose data cannot be loaded (no hub) is reported unavailable, with why.

Offline, the pack gives WorkRB's ESCOJob2SkillRanking / ESCOSkill2JobRanking test and ESCOSkillNormRanking
val and test; every other task (and the Job2Skill / Skill2Job val split, hub dataset
TechWolf/vacancy-job-to-skill) needs the Hugging Face hub. Set ``HF_HUB_OFFLINE=1`` offline, or each hub task
retries for ~25 s before failing.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import appdirs
import torch
from workrb import evaluate as workrb_evaluate
from workrb.models.base import ModelInterface
from workrb.registry import TaskRegistry, list_available_tasks, register_model
from workrb.tasks.abstract.base import Task as WorkRBTask
from workrb.tasks.abstract.ranking_base import RankingDataset as WorkRBDataset
from workrb.tasks.abstract.ranking_base import RankingTask
from workrb.types import Language, ModelInputType

from uwe_lightning.io import ConfigError, DataError
from uwe_lightning.paths import data_file, resolve_data_dir
from uwe_lightning.ranking.cache import texts_sha256
from uwe_lightning.ranking.packed import EncodedTexts
from uwe_lightning.ranking.ranker import Ranker
from uwe_lightning.workbench.metrics import macro_average
from uwe_lightning.workbench.runner import check_max_queries, subsample_indices

#: WorkRB's ESCO version -> the pack folder that has its three files.
PACK_ESCO_DIRS: dict[str, str] = {"1.2.0": "esco/v1.2.0", "1.1.0": "esco/v1.1.0"}
ESCO_FILE_STEMS = ("skills", "occupations", "occupationSkillRelations")
#: Our WorkBench task names -> the WorkRB task that implements it (``tasks=[Job2Skill]``: either runner).
TASK_ALIASES: dict[str, str] = {
    "Job2Skill": "ESCOJob2SkillRanking",
    "Skill2Job": "ESCOSkill2JobRanking",
    "SkillNorm": "ESCOSkillNormRanking",
    "JobNorm": "JobBERTJobNormRanking",
    "SkillSim": "SkillMatch1kSkillSimilarityRanking",
    "SkillExtr-H": "HouseSkillExtractRanking",
    "SkillExtr-T": "TechSkillExtractRanking",
}
#: Reported for every ranking task, besides its own defaults (the graded tasks add nDCG).
RANKING_METRICS = ("map", "rp@10", "mrr")


# ----------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------


@register_model("UWEModel")
class UWEWorkRBModel(ModelInterface):
    """A UWE model (any scorer) for WorkRB: ``workrb.evaluate(UWEWorkRBModel("minilm", "maxsim"), ...)``.

    Args mirror :meth:`Ranker.from_pretrained` (``model``: a saved UWE model, a backbone name, a HF directory
    or hub id; ``scorer=None``: the model's ``uwe.json`` scorer, else mean); ``kw`` go to the Ranker. WorkRB's
    queries are the Ranker's query side, its targets the target side, whatever their input types.
    """

    def __init__(self, model: str = "minilm", scorer: str | None = None, tau: float | None = None,
                 block_size: int = 1024, **kw: Any) -> None:
        ranker = kw.pop("ranker", None) or Ranker.from_pretrained(model, scorer=scorer, tau=tau, **kw)
        self.ranker = ranker.exact()  # WorkRB's numbers are the exact scorer's, as WorkBench's
        self.block_size = block_size
        self._space_key: str | None = None
        self._space: EncodedTexts | None = None

    @classmethod
    def from_ranker(cls, ranker: Ranker, block_size: int = 1024) -> UWEWorkRBModel:
        """Wrap an existing Ranker (its encoder, scorer, token limit and device); nothing is reloaded."""
        return cls(ranker=ranker, block_size=block_size)

    @property
    def name(self) -> str:
        # WorkRB puts the name into file paths (rankings/<name>/): keep it to one path segment.
        raw = f"UWE-{Path(self.ranker.model_id).name or 'model'}-{self.ranker.spec.name}"
        return re.sub(r"[^A-Za-z0-9._-]+", "_", raw).strip("_")

    @property
    def description(self) -> str:
        spec = self.ranker.spec
        return (f"Unified Work Embeddings ({self.ranker.model_id}) ranked with the {spec.name} scorer "
                f"(tau={spec.tau}) through uwe_lightning's Ranker")

    @property
    def citation(self) -> str | None:
        return ("@article{de2025unified, title={Unified Work Embeddings: Contrastive Learning of a "
                "Bidirectional Multi-task Ranker}, author={De Lange, Matthias and Decorte, Jens-Joris and "
                "Van Hautte, Jeroen}, journal={arXiv preprint arXiv:2511.07969}, year={2025}}")

    @property
    def classification_label_space(self) -> list[str] | None:
        return None  # no classification head: classification tasks rank their label texts

    def _targets(self, targets: list[str]) -> EncodedTexts:
        """The encoded target space; the last one is kept (WorkRB's ESCO tasks share the skill vocabulary)."""
        key = texts_sha256(targets)
        if key != self._space_key:
            self._space, self._space_key = None, None  # free the old space before encoding the new one
            self._space, self._space_key = self.ranker.encode(targets, "target"), key
        return self._space

    def _compute_rankings(self, queries: list[str], targets: list[str],
                          query_input_type: ModelInputType | None = None,
                          target_input_type: ModelInputType | None = None) -> torch.Tensor:
        """Scores ``[len(queries), len(targets)]`` (fp32, CPU): the full matrix WorkRB's metrics sort."""
        space = self._targets(list(targets))
        encoded = self.ranker.encode(list(queries), "query")
        out = torch.empty((len(queries), len(targets)), dtype=torch.float32)
        for start, block in self.ranker.score_blocks(encoded, space, block_size=self.block_size):
            out[start : start + block.shape[0]] = block.cpu()
        return out

    def _compute_classification(self, texts: list[str], targets: list[str], input_type: ModelInputType,
                                target_input_type: ModelInputType | None = None) -> torch.Tensor:
        return self._compute_rankings(texts, targets, input_type, target_input_type or input_type)


# ----------------------------------------------------------------------------------------------------------
# ESCO from the data pack, in WorkRB's cache layout
# ----------------------------------------------------------------------------------------------------------


def workrb_cache_dir() -> Path:
    """The cache WorkRB reads now: ``appdirs.user_cache_dir("wteb")`` (``$XDG_CACHE_HOME/wteb`` on Linux)."""
    return Path(appdirs.user_cache_dir("wteb"))


def esco_cache_dir(version: str = "1.2.0", language: str = "en",
                   cache_dir: str | os.PathLike | None = None) -> Path:
    """Where WorkRB's ``ESCO(version, language)`` looks for its CSVs, built with WorkRB's own expression."""
    base = Path(cache_dir) if cache_dir is not None else workrb_cache_dir()
    return base / "esco" / version / Language(language)


def link_esco(data_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
              versions: Sequence[str] = tuple(PACK_ESCO_DIRS), language: str = "en") -> list[Path]:
    """Symlink the pack's ESCO CSVs into WorkRB's cache layout; returns the links. Idempotent.

    ``cache_dir``: the ``wteb`` directory (default :func:`workrb_cache_dir`; WorkRB itself always reads that
    one, so another directory needs ``XDG_CACHE_HOME`` pointed at its parent). Every source file is checked
    before anything is linked (a missing one is named); a link to elsewhere is replaced; a real file in the
    way (e.g. WorkRB's own download) is an error, never overwritten.
    """
    unknown = [v for v in versions if v not in PACK_ESCO_DIRS]
    if unknown:
        raise ConfigError(f"ESCO version(s) {unknown} are not in the data pack; it has "
                          f"{sorted(PACK_ESCO_DIRS)}")
    if language != "en":
        raise ConfigError(f"the data pack has English ESCO files only, got language={language!r}")
    root = resolve_data_dir(data_dir)
    plan = [(data_file(root, f"{PACK_ESCO_DIRS[v]}/{stem}_{language}.csv").resolve(),
             esco_cache_dir(v, language, cache_dir) / f"{stem}_{language}.csv")
            for v in versions for stem in ESCO_FILE_STEMS]
    for source, link in plan:
        if link.is_symlink():
            if link.resolve() == source:
                continue
        elif link.exists():
            raise DataError(f"{link} exists and is not a link to the pack ({source}): remove it, or keep "
                            "WorkRB's own file and skip linking (workrb.link_esco=false)")
        link.parent.mkdir(parents=True, exist_ok=True)
        staging = link.with_name(f".{link.name}.{os.getpid()}.link")
        staging.unlink(missing_ok=True)
        staging.symlink_to(source)
        os.replace(staging, link)  # atomic: a reader sees the old link or the new one
    return [link for _, link in plan]


# ----------------------------------------------------------------------------------------------------------
# WorkRB as a runner
# ----------------------------------------------------------------------------------------------------------


def workrb_task_names() -> list[str]:
    """Every task WorkRB registers (its own class names)."""
    return sorted(list_available_tasks())


def resolve_task_names(names: Sequence[str]) -> dict[str, str]:
    """Requested name -> WorkRB task class name; an unknown name fails in one line listing the known ones."""
    known = workrb_task_names()
    resolved = {name: TASK_ALIASES.get(name, name) for name in names}
    unknown = [name for name, cls in resolved.items() if cls not in known]
    if unknown:
        raise ConfigError(f"unknown WorkRB task(s) {unknown}; known: {known} "
                          f"(or our names {sorted(TASK_ALIASES)})")
    return resolved


def keep_queries(task: WorkRBTask, choose: Callable[[list[str]], list[int] | None]) -> dict[str, int]:
    """Keep, in each dataset of ``task``, the query rows ``choose(query_texts)`` returns (None: all).

    Returns dataset id -> its number of queries before. Targets (and their order) are unchanged, so metrics of
    the kept queries are exactly those of the full run.
    """
    before: dict[str, int] = {}
    for dataset_id, ds in list(task.datasets.items()):
        before[dataset_id] = len(ds.query_texts)
        rows = choose(list(ds.query_texts))
        if rows is None:
            continue
        relevance = None if ds.target_relevance is None else [ds.target_relevance[i] for i in rows]
        task.datasets[dataset_id] = WorkRBDataset(
            [ds.query_texts[i] for i in rows], [ds.target_indices[i] for i in rows], ds.target_space,
            dataset_id=dataset_id, target_relevance=relevance,
        )
    return before


def build_tasks(names: Sequence[str], split: str, languages: Sequence[str] = ("en",),
                max_queries: int | None = None, seed: int = 0) -> tuple[dict[str, WorkRBTask], dict[str, str],
                                                                        dict[str, dict[str, int]]]:
    """``(tasks, unavailable reasons, queries per dataset before subsetting)`` by requested name."""
    check_max_queries(max_queries)
    tasks, unavailable, sizes = {}, {}, {}
    for name, cls in resolve_task_names(names).items():
        try:
            task = TaskRegistry.create(cls, languages=list(languages), split=split)
        except Exception as err:  # WorkRB's loaders raise anything when a hub or file is missing
            unavailable[name] = f"{cls}: {type(err).__name__}: {' '.join(str(err).split())}"[:500]
            continue
        if not task.dataset_ids:
            unavailable[name] = f"{cls}: no dataset for languages {list(languages)} / split {split}"
            continue
        if isinstance(task, RankingTask):  # a classification task is evaluated whole
            sizes[name] = keep_queries(task, lambda texts: subsample_indices(len(texts), max_queries, seed))
        tasks[name] = task
    return tasks, unavailable, sizes


def evaluate_with_workrb(model: UWEWorkRBModel, tasks: Sequence[str], split: str = "test",
                         output_dir: str | os.PathLike = ".", languages: Sequence[str] = ("en",),
                         max_queries: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Run ``workrb.evaluate`` on ``tasks``; WorkRB's own files go to ``<output_dir>/workrb/``.

    Returns our results layout (``tasks``: every ranking task's metrics per task and dataset, WorkRB's
    defaults plus map / rp@10 / mrr; ``classification``: WorkRB's classification tasks, evaluated whole;
    ``unavailable``; ``macro`` over WorkRB's task groups), ready for
    :func:`~uwe_lightning.workbench.report.write_results`.
    """
    t0 = time.perf_counter()
    built, unavailable, sizes = build_tasks(tasks, split, languages, max_queries, seed)
    load_seconds = time.perf_counter() - t0
    per_task: dict[str, dict[str, Any]] = {}
    classification: dict[str, dict[str, Any]] = {}
    groups: dict[str, str] = {}
    workrb_summary: dict[str, Any] = {}
    if built:
        metrics = {t.name: list(dict.fromkeys([*t.default_metrics, *RANKING_METRICS]))
                   for t in built.values() if isinstance(t, RankingTask)}
        results = workrb_evaluate(model, list(built.values()), output_folder=str(Path(output_dir) / "workrb"),
                                  metrics=metrics, force_restart=True)
        workrb_summary = {"model_name": results.metadata.model_name,
                          "seconds": round(results.metadata.total_evaluation_time, 2)}
        for name, task in built.items():
            for dataset_id, result in results.task_results[task.name].datasetid_results.items():
                key = name if len(task.dataset_ids) == 1 else f"{name}/{dataset_id}"
                values = {m: float(v) if isinstance(v, int | float) else v
                          for m, v in result.metrics_dict.items()}
                row = {**values,
                       "seconds": round(result.evaluation_time, 3), "workrb_task": type(task).__name__,
                       "dataset_id": dataset_id}
                if not isinstance(task, RankingTask):
                    classification[key] = row
                    continue
                ds = task.datasets[dataset_id]
                per_task[key] = {**row, "n_queries": len(ds.query_texts), "n_targets": len(ds.target_space),
                                 "n_queries_total": sizes[name][dataset_id]}
                groups[key] = task.task_group.value
    empty = {"map": None, "rp@10": None, "covers": [], "groups": {}}
    macro = macro_average(per_task, groups) if per_task else empty
    macro["not_covered"] = sorted(unavailable)
    return {
        "runner": "workrb",
        "model": model.name,
        "split": split,
        "languages": list(languages),
        "tasks": per_task,
        "classification": classification,
        "unavailable": unavailable,
        "no_queries": {},
        "macro": macro,
        "max_queries": max_queries,
        "workrb": workrb_summary,
        "seconds": {"load": round(load_seconds, 2), "total": round(time.perf_counter() - t0, 2)},
    }


__all__ = [
    "UWEWorkRBModel", "build_tasks", "esco_cache_dir", "evaluate_with_workrb", "keep_queries",
    "link_esco", "resolve_task_names", "workrb_cache_dir", "workrb_task_names",
]
