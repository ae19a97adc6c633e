"""``python -m uwe_lightning.evaluate model=minilm split=test``: WorkBench for any model (Hydra, conf/evaluate.yaml).

Your own held-out edges: ``'tasks=[edges]' edges.file=heldout.csv edges.skill_vocab=skills.csv``, with
``'baselines=[popularity,tfidf]' popularity.edges=train.csv`` scored beside the model (docs/how-to/own-graph.md).

``runner=workrb`` evaluates the same model with WorkRB's tasks and metrics instead (:mod:`uwe_lightning.
integrations.workrb`); the results files have the same layout.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from uwe_lightning.cli.errors import hydra_entry_point, refuse_added_keys, run_reporting_user_errors
from uwe_lightning.cli.loading import model_spec, ranker_from_config
from uwe_lightning.io import ConfigError, atomic_copy, atomic_write_json, make_dirs
from uwe_lightning.paths import CONF_DIR, RUN_INFO_FILE
from uwe_lightning.training.jobrecord import accept_run
from uwe_lightning.training.provenance import plain_config
from uwe_lightning.training.summary import pct
from uwe_lightning.workbench.metric_names import LABELS, MACRO, METRICS, UNIT, UNIT_KEY, in_percent
from uwe_lightning.workbench.popularity import PopularityRankingModel
from uwe_lightning.workbench.registry import get_task
from uwe_lightning.workbench.report import keep_previous, write_results
from uwe_lightning.workbench.runner import EncoderRankingModel, check_max_queries, evaluate

RUNNERS = ("workbench", "workrb")
#: ``model.edges=open`` / ``popularity.edges=open``: the popularity prior of the open protocol's training graph J.
OPEN_PROTOCOL = "open"


def build_ranking_model(cfg: DictConfig):
    """The model named by ``cfg.model`` (+ ``cfg.scorer``) wrapped for the WorkBench runner.

    Without ``scorer=...`` a saved UWE model is evaluated with the scorer it was trained with (its ``uwe.json``),
    a backbone with mean pooling. ``query_backend=onnx`` encodes the queries with the model's ONNX export.
    """
    spec = model_spec(cfg)
    if spec.kind == "lexical":
        from uwe_lightning.model.lexical import TfidfRankingModel

        return TfidfRankingModel()
    if spec.kind == "popularity":
        return popularity_model(spec.edges, spec.skill_vocab, cfg)
    ranker = ranker_from_config(cfg, "evaluate", spec)
    backend = ranker.query_backend
    suffix = "" if backend == "torch" else f"+{backend}-queries"
    return EncoderRankingModel(ranker, name=f"{spec.name}/{ranker.spec.name}{suffix}")


def run(cfg: DictConfig) -> dict:
    """Evaluate the configured model; write results.json / results.md into ``cfg.paths.output_dir``.

    Results already in the output or ``publish`` directory are kept under their modification time. Ends with
    a short summary table on the console (:func:`evaluation_summary`), also written into ``run_info.json``.
    """
    started = time.perf_counter()
    check_max_queries(cfg.max_queries)  # before the model loads
    runner = cfg.get("runner", "workbench")
    if runner not in RUNNERS:
        raise ConfigError(f"runner must be one of {list(RUNNERS)}, got {runner!r} "
                          "(runner=workrb: WorkRB's tasks and metrics)")
    out_dir = Path(cfg.paths.output_dir)
    if runner == "workrb":
        results, title = run_workrb(cfg, out_dir)
    else:
        task_options = edges_task_options(cfg)  # a bad edges.file fails here, before any model loads
        baselines = [build_baseline(name, cfg) for name in cfg.get("baselines") or []]
        model = build_ranking_model(cfg)
        options = {"tasks": list(cfg.tasks), "split": cfg.split, "data_dir": cfg.paths.data_dir,
                   "max_queries": cfg.max_queries, "seed": cfg.seed, "block_size": cfg.block_size,
                   "show_progress": cfg.show_progress, "task_options": task_options,
                   "ties": cfg.get("ties")}
        results = evaluate(model, **options)
        if baselines:
            results["baselines"] = {b.name: evaluate(b, **options) for b in baselines}
        title = f"WorkBench {cfg.split}: {model.name}"
        accept_run(cfg)  # the run is accepted: its record goes beside its results (a refusal writes none)
    results["config"] = OmegaConf.to_container(cfg, resolve=False)
    results = in_percent(results)  # the run's record: scores in percent (metric_names)
    json_path, md_path = write_results(results, out_dir, title=title)
    print(md_path.read_text())
    written = [json_path, md_path]
    if cfg.publish:
        written += publish(Path(cfg.publish), (json_path, md_path))
    summary = evaluation_summary(results, time.perf_counter() - started, [str(p) for p in written])
    keep_previous(out_dir / RUN_INFO_FILE)  # an earlier evaluation into the same directory keeps its record
    atomic_write_json(out_dir / RUN_INFO_FILE, {"command": "evaluate", "config": plain_config(cfg),
                                                "summary": summary})
    print(summary_table(summary, out_dir), flush=True)
    return results


def evaluation_summary(results: dict[str, Any], wall_s: float, written: list[str]) -> dict[str, Any]:
    """What an evaluation produced: MAP / RP@10 per task and the macro average (percent), wall time, encoding
    throughput (distinct texts / s), peak memory and the files written."""
    seconds = results.get("seconds") or {}
    n_texts, encode_s = seconds.get("n_distinct_texts"), seconds.get("encode_distinct_texts")
    import torch

    memory = ({"peak_gpu_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}
              if torch.cuda.is_available() and torch.cuda.max_memory_allocated() else
              {"peak_cpu_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)})
    return {
        UNIT_KEY: UNIT,
        "model": results.get("model"), "split": results.get("split"), "max_queries": results.get("max_queries"),
        "tasks": {task: {m: row.get(m) for m in METRICS} | {"n_queries": row.get("n_queries")}
                  for task, row in (results.get("tasks") or {}).items()},
        MACRO: {m: (results.get("macro") or {}).get(m) for m in METRICS},
        "not_scored": sorted([*(results.get("unavailable") or {}), *(results.get("no_queries") or {})]),
        "wall_s": round(wall_s, 1),
        "n_distinct_texts": n_texts,
        "texts_per_s": round(n_texts / encode_s, 1) if n_texts and encode_s else None,
        **memory,
        "written": written,
    }


def summary_table(summary: dict[str, Any], out_dir: Path) -> str:
    """The console table at the end of ``evaluate``."""
    width = max([len(t) for t in summary["tasks"]] + [len(MACRO)])
    lines = [f"evaluation summary: {out_dir}", f"  model    {summary['model']} ({summary['split']} split"
             + (f", at most {summary['max_queries']} queries per task)" if summary.get("max_queries") else ")"),
             f"  {'task':<{width}}  " + "  ".join(f"{LABELS[m]:>8}" for m in METRICS)]
    for task, row in summary["tasks"].items():
        lines.append(f"  {task:<{width}}  " + "  ".join(f"{pct(row.get(m)):>8}" for m in METRICS))
    lines.append(f"  {MACRO:<{width}}  " + "  ".join(f"{pct(summary[MACRO].get(m)):>8}" for m in METRICS))
    if summary["not_scored"]:
        lines.append(f"  not scored: {', '.join(summary['not_scored'])} (see results.md)")
    rate = f", {summary['texts_per_s']} texts/s encoded" if summary.get("texts_per_s") else ""
    memory = (f"{summary['peak_gpu_allocated_gib']} GiB GPU" if "peak_gpu_allocated_gib" in summary
              else f"{summary.get('peak_cpu_rss_gib')} GiB CPU RSS")
    lines.append(f"  time     {summary['wall_s']:.1f} s wall ({summary.get('n_distinct_texts') or 0:,} distinct "
                 f"texts{rate}); peak memory {memory}")
    lines.append(f"  written  {', '.join(summary['written'])}, {RUN_INFO_FILE}")
    return "\n".join(lines)


def edges_task_options(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """Options of the ``edges`` task (your held-out edge file), checked before any model loads."""
    if "edges" not in list(cfg.tasks):
        return {}
    edges = cfg.get("edges") or {}
    file = edges.get("file")
    if not file:
        raise ConfigError("tasks=[edges] needs edges.file=<held-out edge file, columns skill,text> and "
                          "edges.skill_vocab=<your skills, columns uri,label>")
    options = {"file": str(file), "skill_vocab": str(edges.get("skill_vocab")),
               "on_unknown": str(edges.get("on_unknown", "error"))}
    get_task("edges", **options).load(cfg.split, cfg.paths.data_dir)  # bad path / column / skill: one line
    return {"edges": options}


def popularity_model(edges: Any, skill_vocab: str | None, cfg: DictConfig) -> PopularityRankingModel:
    """The popularity prior of ``edges`` (a file or a list of files) over ``skill_vocab`` (default: the
    ``edges`` task's vocabulary)."""
    files = [] if edges is None else [str(edges)] if isinstance(edges, str) else [str(f) for f in edges]
    if files == [OPEN_PROTOCOL]:  # WorkBench: the open protocol's TRAINING graph J (its held-out titles removed)
        from uwe_lightning.protocol.build import OpenProtocolSource

        vocab_, graphs = OpenProtocolSource(cfg.paths.data_dir).load(["J"])
        return PopularityRankingModel.from_graph(graphs["J"], vocab_)
    vocab = skill_vocab or (cfg.get("edges") or {}).get("skill_vocab") or "esco-v1.2.0"
    return PopularityRankingModel.from_edges(files, str(vocab), cfg.paths.data_dir)


def build_baseline(name: str, cfg: DictConfig):
    """A baseline evaluated beside the model: ``tfidf`` or ``popularity`` (``popularity.edges``)."""
    if name == "tfidf":
        from uwe_lightning.model.lexical import TfidfRankingModel

        return TfidfRankingModel()
    if name == "popularity":
        pop = cfg.get("popularity") or {}
        return popularity_model(pop.get("edges"), pop.get("skill_vocab"), cfg)
    raise ConfigError(f"baselines: unknown baseline {name!r}; known: ['popularity', 'tfidf']")


def run_workrb(cfg: DictConfig, out_dir: Path) -> tuple[dict, str]:
    """The configured model through WorkRB (``runner=workrb``); task names are checked before it loads."""
    try:
        from uwe_lightning.integrations import workrb as bridge
    except ImportError as err:
        if (err.name or "").split(".")[0] != "workrb":
            raise
        raise ConfigError(f"runner=workrb needs the workrb package ({err}): pip install workrb") from err
    bridge.resolve_task_names(list(cfg.tasks))
    if cfg.workrb.link_esco:
        bridge.link_esco(cfg.paths.data_dir, versions=[str(v) for v in cfg.workrb.esco_versions])
    model = build_ranking_model(cfg)
    if not isinstance(model, EncoderRankingModel):
        raise ConfigError("runner=workrb needs a neural model (model=minilm, mpnet or trained); "
                          "model=tfidf is WorkBench-only (WorkRB has its own TfIdfModel)")
    accept_run(cfg)  # WorkRB writes into the run directory from here on
    results = bridge.evaluate_with_workrb(
        bridge.UWEWorkRBModel.from_ranker(model.ranker, block_size=cfg.block_size), list(cfg.tasks),
        split=cfg.split, output_dir=out_dir, languages=list(cfg.workrb.languages),
        max_queries=cfg.max_queries, seed=cfg.seed,
    )
    return results, f"WorkRB {cfg.split}: {model.name}"


def publish(dest: Path, files: tuple[Path, ...]) -> list[Path]:
    """Copy ``files`` into ``dest`` atomically; a file of the same name there is kept, not overwritten."""
    make_dirs(dest)
    copied = []
    for path in files:
        target = dest / path.name
        keep_previous(target)  # logs the rename
        copied.append(atomic_copy(path, target))
    return copied


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="evaluate")
def _main(cfg: DictConfig) -> None:
    def checked_run():
        refuse_added_keys("evaluate")
        return run(cfg)

    run_reporting_user_errors("evaluate", checked_run)


main = hydra_entry_point(_main)
