"""Two-process (gloo, CPU) data-parallel steps of the real UWEModule, compared with one process on the whole batch.

:func:`run_cases` spawns ``world`` processes; each builds the same tiny module and the same global step, takes its
shard (the dataset's ``shard``), runs one step through ``torch.nn.parallel.DistributedDataParallel`` (as Lightning's
``ddp`` strategy does) and rank 0 saves its loss and every parameter gradient (DDP's averaged gradient).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tests.helpers.paths import EDGES
from uwe_lightning.data.datamodule import UWETrainDataset
from uwe_lightning.data.edges import load_edges
from uwe_lightning.data.graphs import load_vocabulary
from uwe_lightning.losses import GraphLoss
from uwe_lightning.training.module import UWEModule, seed_step

EDGE_FILES = {"J": EDGES / "J.csv", "V": EDGES / "V.jsonl", "A": EDGES / "A.tsv"}


@dataclass(frozen=True)
class Case:
    """One training step to compare: loss, scorer, the data step, and the memory options."""

    loss: str
    scorer: str
    step: int
    grad_cache: int | None = None  # mini-batch size in texts (None: off)
    backbone_checkpointing: bool = False
    dropout: bool = False
    sparse_a: bool = False  # graph A with one edge: a step where A has one text leaves rank 1's A shard empty


def make_module(model_dir: Path, case: Case) -> UWEModule:
    tau = 0.05 if case.loss == "infonce" else None
    loss = GraphLoss(case.loss, tau=tau, alpha=None if case.loss != "infonce" else {"J": 1, "V": 1, "A": 1})
    module = UWEModule(
        str(model_dir), scorer=case.scorer, loss=loss, max_steps=10, score_chunk_size=2,
        grad_cache=case.grad_cache is not None, grad_cache_size=case.grad_cache or 1,
        backbone_checkpointing=case.backbone_checkpointing,
    )
    if not case.dropout:
        for m in module.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0
    return module


def make_dataset(model_dir: Path, shard: tuple[int, int] = (0, 1), sparse_a: Path | None = None) -> UWETrainDataset:
    from transformers import AutoTokenizer

    vocab = load_vocabulary(EDGES / "vocab.csv")
    files = {**EDGE_FILES, **({"A": sparse_a} if sparse_a else {})}
    graphs = {g: load_edges(str(path), vocab, g) for g, path in files.items()}
    return UWETrainDataset(vocab, graphs, skills_per_step=5, max_length=24, augment_p=0.5, seed=0,
                           tokenizer=AutoTokenizer.from_pretrained(str(model_dir)), shard=shard)


class StepLoss(nn.Module):
    """What Lightning's DDP wrapper runs: the module's loss for a batch (forward goes through DDP)."""

    def __init__(self, module: UWEModule) -> None:
        super().__init__()
        self.module = module

    def forward(self, batch) -> torch.Tensor:
        scores, pos_masks, pair_index = self.module.graph_scores(batch)
        return self.module.loss_fn(scores, pos_masks, pair_index)[0]


def step_result(model_dir: Path, case: Case, shard: tuple[int, int], sparse_a: Path | None, ddp: bool) -> dict:
    """Loss and parameter gradients of one step of ``case`` on this process's shard."""
    torch.manual_seed(0)
    module = make_module(model_dir, case)
    batch = make_dataset(model_dir, shard, sparse_a if case.sparse_a else None).batch(case.step)
    seed_step(0, case.step, shard[0])
    model = StepLoss(module)
    if ddp:
        model = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    loss = model(batch)
    loss.backward()
    grads = {n: (p.grad.clone() if p.grad is not None else None) for n, p in module.named_parameters()}
    return {"loss": float(loss.detach()), "grads": grads,
            "shard_sizes": {g: int(part.text_inputs["input_ids"].shape[0]) for g, part in batch.graphs.items()}}


def _worker(rank: int, world: int, port: int, model_dir: str, sparse_a: str, cases: list[Case], out: str) -> None:
    import torch.distributed as dist

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        results = [step_result(Path(model_dir), case, (rank, world), Path(sparse_a), ddp=True) for case in cases]
        torch.save(results, f"{out}.rank{rank}")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cases(model_dir: Path, sparse_a: Path, cases: list[Case], out: Path, world: int = 2) -> list[list[dict]]:
    """Every case on ``world`` gloo processes; returns each rank's results."""
    import torch.multiprocessing as mp

    # fork: the children inherit the imported torch / transformers (a spawn re-imports them: ~10 s more each)
    mp.start_processes(_worker, args=(world, free_port(), str(model_dir), str(sparse_a), cases, str(out)),
                       nprocs=world, join=True, start_method="fork")
    return [torch.load(f"{out}.rank{r}", weights_only=False) for r in range(world)]
