"""uwe_lightning: Unified Work Embeddings (UWE) and the WorkBench benchmark on PyTorch Lightning + Hydra.

The main names, from the layers below (data -> model -> losses -> training; WorkBench beside them; the open
protocol above both; entry points in :mod:`uwe_lightning.cli`)::

    import uwe_lightning as uwe
    ranker = uwe.Ranker.from_pretrained("minilm", scorer="softmax")   # or a trained run's best_model/
    model = uwe.UWEModel.from_pretrained("minilm"); model.save_pretrained("my-model")
    uwe.list_tasks()                                                    # WorkBench tasks and variants
    results = uwe.evaluate(uwe.EncoderRankingModel(ranker), tasks=["JobNorm"], split="val")
    val_map = uwe.WorkBenchMAP()                                        # a torchmetrics Metric for your own module

Importing the package registers every task (the seven WorkBench tasks and the open protocol's variants) and
the schema of ``conf/train.yaml`` (so ``hydra.compose`` works after ``import uwe_lightning``).
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import uwe_lightning.protocol  # noqa: F401  (registers the open protocol's task variants)
import uwe_lightning.training.config  # noqa: F401  (registers train.yaml's schema with Hydra)
from uwe_lightning.io import DataError
from uwe_lightning.workbench.dataset import RankingDataset, TaskUnavailable
from uwe_lightning.workbench.registry import Task, get_task, list_tasks, register_task

#: Exported names that pull in torch / transformers / lightning: imported on first use, so that
#: ``python -m uwe_lightning.rank`` does not pay for Lightning and ``list_tasks()`` stays fast.
_LAZY = {
    "BipartiteGraph": "uwe_lightning.data.graphs",
    "SkillVocabulary": "uwe_lightning.data.graphs",
    "EdgeFileSource": "uwe_lightning.data.edges",
    "UWEDataModule": "uwe_lightning.data.datamodule",
    "GraphLoss": "uwe_lightning.losses",
    "build_loss": "uwe_lightning.losses",
    "Encoder": "uwe_lightning.model.encoder",
    "TokenEmbeddings": "uwe_lightning.model.encoder",
    "UWEModel": "uwe_lightning.model.pretrained",
    "ScorerSpec": "uwe_lightning.model.scoring",
    "get_scorer": "uwe_lightning.model.scoring",
    "OpenProtocolSource": "uwe_lightning.protocol",
    "build_open_protocol": "uwe_lightning.protocol",
    "EncodedTexts": "uwe_lightning.ranking.packed",
    "Ranker": "uwe_lightning.ranking.ranker",
    "UWEModule": "uwe_lightning.training.module",
    "EncoderRankingModel": "uwe_lightning.workbench.runner",
    "evaluate": "uwe_lightning.workbench.runner",
    "WorkBenchMAP": "uwe_lightning.workbench.retrieval",
    "WorkBenchRPrecision": "uwe_lightning.workbench.retrieval",
    "WorkBenchRetrieval": "uwe_lightning.workbench.retrieval",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'uwe_lightning' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


try:
    __version__ = version("uwe_lightning")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "BipartiteGraph",
    "DataError",
    "EdgeFileSource",
    "EncodedTexts",
    "EncoderRankingModel",
    "Encoder",
    "GraphLoss",
    "OpenProtocolSource",
    "Ranker",
    "RankingDataset",
    "ScorerSpec",
    "SkillVocabulary",
    "Task",
    "TaskUnavailable",
    "TokenEmbeddings",
    "UWEDataModule",
    "UWEModel",
    "UWEModule",
    "WorkBenchMAP",
    "WorkBenchRPrecision",
    "WorkBenchRetrieval",
    "__version__",
    "build_loss",
    "build_open_protocol",
    "evaluate",
    "get_scorer",
    "get_task",
    "list_tasks",
    "register_task",
]
