"""WorkBench evaluation entry point (Hydra): ``python -m uwe_lightning.evaluate model=minilm split=test``."""

from __future__ import annotations

import shutil
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from uwe_lightning.paths import CONF_DIR


def build_ranking_model(cfg: DictConfig):
    """The model named by ``cfg.model`` (+ ``cfg.scorer``) wrapped for the WorkBench runner."""
    if cfg.model.kind == "lexical":
        from uwe_lightning.model.lexical import TfidfRankingModel

        return TfidfRankingModel()
    if cfg.model.kind != "encoder":
        raise ValueError(f"model.kind must be 'encoder' or 'lexical', got {cfg.model.kind!r}")
    from uwe_lightning.model.backbones import resolve_backbone
    from uwe_lightning.ranking.ranker import Ranker
    from uwe_lightning.workbench.runner import EncoderRankingModel

    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    path = resolve_backbone(str(cfg.model.backbone), cfg.paths.model_dir)
    ranker = Ranker.from_pretrained(
        path, scorer=cfg.scorer.name, tau=cfg.scorer.tau, batch_size=cfg.batch_size,
        max_length=cfg.max_length, device=device, model_id=cfg.model.name,
    )
    return EncoderRankingModel(ranker, name=f"{cfg.model.name}/{cfg.scorer.name}")


def run(cfg: DictConfig) -> dict:
    """Evaluate the configured model; write results.json / results.md into ``cfg.paths.output_dir``."""
    from uwe_lightning.workbench.runner import evaluate, write_results

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
        dest = Path(cfg.publish)
        dest.mkdir(parents=True, exist_ok=True)
        for path in (json_path, md_path):
            shutil.copy2(path, dest / path.name)
    return results


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
