"""``python -m uwe_lightning.evaluate model=minilm split=test``: WorkBench for any model (Hydra, conf/evaluate.yaml).

``runner=workrb`` evaluates the same model with WorkRB's tasks and metrics instead (:mod:`uwe_lightning.
integrations.workrb`); the results files have the same layout.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from uwe_lightning.cli.errors import hydra_entry_point, run_reporting_user_errors
from uwe_lightning.cli.loading import model_spec, ranker_from_config
from uwe_lightning.io import ConfigError, atomic_copy
from uwe_lightning.paths import CONF_DIR
from uwe_lightning.workbench.report import keep_previous, write_results
from uwe_lightning.workbench.runner import EncoderRankingModel, check_max_queries, evaluate

RUNNERS = ("workbench", "workrb")


def build_ranking_model(cfg: DictConfig):
    """The model named by ``cfg.model`` (+ ``cfg.scorer``) wrapped for the WorkBench runner.

    Without ``scorer=...`` a saved UWE model is evaluated with the scorer it was trained with (its ``uwe.json``),
    a backbone with mean pooling. ``query_backend=onnx`` encodes the queries with the model's ONNX export.
    """
    spec = model_spec(cfg)
    if spec.kind == "lexical":
        from uwe_lightning.model.lexical import TfidfRankingModel

        return TfidfRankingModel()
    ranker = ranker_from_config(cfg, "evaluate", spec)
    backend = ranker.query_backend
    suffix = "" if backend == "torch" else f"+{backend}-queries"
    return EncoderRankingModel(ranker, name=f"{spec.name}/{ranker.spec.name}{suffix}")


def run(cfg: DictConfig) -> dict:
    """Evaluate the configured model; write results.json / results.md into ``cfg.paths.output_dir``.

    Results already in the output or ``publish`` directory are kept under their modification time.
    """
    check_max_queries(cfg.max_queries)  # before the model loads
    runner = cfg.get("runner", "workbench")
    if runner not in RUNNERS:
        raise ConfigError(f"runner must be one of {list(RUNNERS)}, got {runner!r} "
                          "(runner=workrb: WorkRB's tasks and metrics)")
    out_dir = Path(cfg.paths.output_dir)
    if runner == "workrb":
        results, title = run_workrb(cfg, out_dir)
    else:
        model = build_ranking_model(cfg)
        results = evaluate(
            model, tasks=list(cfg.tasks), split=cfg.split, data_dir=cfg.paths.data_dir,
            max_queries=cfg.max_queries, seed=cfg.seed, block_size=cfg.block_size,
            show_progress=cfg.show_progress,
        )
        title = f"WorkBench {cfg.split}: {model.name}"
    results["config"] = OmegaConf.to_container(cfg, resolve=False)
    json_path, md_path = write_results(results, out_dir, title=title)
    print(md_path.read_text())
    if cfg.publish:
        publish(Path(cfg.publish), (json_path, md_path))
    return results


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
    results = bridge.evaluate_with_workrb(
        bridge.UWEWorkRBModel.from_ranker(model.ranker, block_size=cfg.block_size), list(cfg.tasks),
        split=cfg.split, output_dir=out_dir, languages=list(cfg.workrb.languages),
        max_queries=cfg.max_queries, seed=cfg.seed,
    )
    return results, f"WorkRB {cfg.split}: {model.name}"


def publish(dest: Path, files: tuple[Path, ...]) -> list[Path]:
    """Copy ``files`` into ``dest`` atomically; a file of the same name there is kept, not overwritten."""
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for path in files:
        target = dest / path.name
        keep_previous(target)  # logs the rename
        copied.append(atomic_copy(path, target))
    return copied


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="evaluate")
def _main(cfg: DictConfig) -> None:
    run_reporting_user_errors("evaluate", lambda: run(cfg))


main = hydra_entry_point(_main)
