"""``python -m uwe_lightning.evaluate model=minilm split=test``: WorkBench for any model (Hydra, conf/evaluate.yaml)."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from uwe_lightning.cli.errors import hydra_entry_point, run_reporting_user_errors
from uwe_lightning.io import atomic_copy
from uwe_lightning.model.pretrained import ModelSpec, UWEModel
from uwe_lightning.paths import CONF_DIR
from uwe_lightning.ranking.ranker import Ranker
from uwe_lightning.workbench.report import keep_previous, write_results
from uwe_lightning.workbench.runner import EncoderRankingModel, check_max_queries, evaluate


def build_ranking_model(cfg: DictConfig):
    """The model named by ``cfg.model`` (+ ``cfg.scorer``) wrapped for the WorkBench runner.

    Without ``scorer=...`` a saved UWE model is evaluated with the scorer it was trained with (its ``uwe.json``),
    a backbone with mean pooling. ``query_backend=onnx`` encodes the queries with the model's ONNX export.
    """
    spec: ModelSpec = hydra.utils.instantiate(cfg.model)
    if spec.kind == "lexical":
        from uwe_lightning.model.lexical import TfidfRankingModel

        return TfidfRankingModel()
    scorer = cfg.get("scorer")
    model = UWEModel.from_pretrained(
        str(spec.backbone), scorer=scorer.name if scorer else None, tau=scorer.tau if scorer else None,
        max_length=cfg.max_length,
        model_dir=cfg.paths.model_dir,
    )
    backend = cfg.get("query_backend") or "torch"
    ranker = Ranker.from_model(model, batch_size=cfg.batch_size, device=cfg.device, model_id=spec.name,
                               query_backend=backend)
    suffix = "" if backend == "torch" else f"+{backend}-queries"
    return EncoderRankingModel(ranker, name=f"{spec.name}/{model.scorer.name}{suffix}")


def run(cfg: DictConfig) -> dict:
    """Evaluate the configured model; write results.json / results.md into ``cfg.paths.output_dir``.

    Results already in the output or ``publish`` directory are kept under their modification time.
    """
    check_max_queries(cfg.max_queries)  # before the model loads
    model = build_ranking_model(cfg)
    results = evaluate(
        model, tasks=list(cfg.tasks), split=cfg.split, data_dir=cfg.paths.data_dir,
        max_queries=cfg.max_queries, seed=cfg.seed, block_size=cfg.block_size, show_progress=cfg.show_progress,
    )
    results["config"] = OmegaConf.to_container(cfg, resolve=False)
    out_dir = Path(cfg.paths.output_dir)
    json_path, md_path = write_results(results, out_dir, title=f"WorkBench {cfg.split}: {model.name}")
    print(md_path.read_text())
    if cfg.publish:
        publish(Path(cfg.publish), (json_path, md_path))
    return results


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
