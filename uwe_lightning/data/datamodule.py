"""Skill-centred training batches for the many-to-many InfoNCE loss (paper section 4, Appendix A).

Each step samples ``skills_per_step`` DISTINCT skills uniformly from the vocabulary and, for every enabled
graph G (J, V, A), one neighbour text per sampled skill, uniformly among its neighbours in G: up to
S + |G| * S texts (512 + 3 * 512 = 2,048 in the paper, where every skill has a neighbour in every graph).
Choices this module makes explicit:

* A skill without a neighbour in G contributes no text to G, so N_G may be < S; its row of ``pos_mask``
  is all False and the loss skips it. A graph with no text at all in a step is absent from
  ``UWEBatch.graphs``. (Open protocol, 512 skills: ~361 J and ~252 A texts; ``experiments/data/batch_counts.py``.)
* ``sampling="per_graph"``: the uniform draw is topped up, per graph, with skills that graph covers until S of
  the step's skills have a neighbour in it, one text each (S texts per graph); the added skills are rows of
  every graph (each ``pos_mask`` spans all rows). With full coverage it adds nothing: the rule above.
* ``pos_mask[i, j]`` is the GRAPH edge between batch skill i and batch text j, for every pair, not only the
  sampled one: a text sampled twice, or a job title linked to two batch skills, is a positive of each of
  them and never a false negative.
* Sentence augmentation on V (paper Appendix A, after Decorte et al. 2025): with probability ``augment_p``
  a V text gets, as prefix or suffix (50/50), a V sentence of a skill NOT in the batch that has no edge to
  any batch skill, so ``pos_mask`` stays exact. The added sentence only gets the token room the real
  sentence leaves within ``max_length`` (cut at a token boundary, keeping the part next to the real
  sentence), so truncation never cuts the real sentence; with no room left, the text is not augmented.
* Randomness is a pure function of (seed, step): ``numpy.random.default_rng([seed, step])``. A resumed run
  continues the same stream: ``set_start_step(step)`` (or the checkpointed datamodule state, see
  :meth:`UWEDataModule.state_dict`) starts the dataset at that step, and DataLoader workers split the steps
  round-robin, which keeps their order.
* Controls for cross-task transfer (:mod:`uwe_lightning.data.controls`, issue 29): ``alignment="shuffled"``
  rewires every graph at random with every skill's and every text's degree kept (seeded by ``seed``);
  ``skill_holdout=f`` holds a degree-stratified share f of the skills out of training (seeded by
  ``holdout_seed``, the same for every training seed): their edges are dropped and they are never drawn.
* Tokenisation happens in the dataset, i.e. inside DataLoader workers.
* Data parallel (``trainer=ddp``): every rank samples the same global step (the sampling is cheap and a pure
  function of (seed, step), so the global batch does not depend on the world size) and tokenises only its
  contiguous shard of the skills and of each graph's texts (:func:`~uwe_lightning.data.sampling.shard_bounds`);
  the positive masks and pair indices stay global. A rank's shard of a graph may be empty (no rows).

This module is over 400 lines: the dataset and the data module define one batch stream together (sampling,
resume state, the controls' skill pool); split apart, each would have to re-state the other's half.
"""

from __future__ import annotations

import math
import os
import signal
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from uwe_lightning.data.batch import GraphBatch, GraphSample, StepSample, UWEBatch
from uwe_lightning.data.controls import (
    ALIGNMENTS,
    hold_out_skills,
    holdout_split,
    shuffle_graphs,
    total_degree,
)
from uwe_lightning.data.graphs import GRAPHS, BipartiteGraph, SkillVocabulary
from uwe_lightning.data.sampling import (
    AUTO_SAMPLING,
    SAMPLINGS,
    augment_texts,
    choose_sampling,
    sample_contexts,
    sample_neighbors,
    sample_per_graph,
    shard_bounds,
    step_rng,
)
from uwe_lightning.io import ConfigError

AUGMENTED_GRAPH = "V"


class GraphSource(Protocol):
    """Where a run's graphs come from; the ``source`` node of the ``data`` config instantiates one."""

    def load(self, graphs: Sequence[str]) -> tuple[SkillVocabulary, dict[str, BipartiteGraph]]:
        """The skill vocabulary and the named graphs over it."""

    def task_options(self) -> dict[str, dict[str, Any]]:
        """Options of the evaluation tasks that must match this data (``get_task(name, **options)``)."""

    def describe(self) -> dict[str, Any]:
        """What the source is, for ``run_info.json``."""


__all__ = ["GraphBatch", "GraphSample", "StepSample", "UWEBatch", "UWEDataModule", "UWETrainDataset"]

# ---------------------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------------------


class UWETrainDataset(IterableDataset):
    """The stream of training steps ``start_step, start_step + 1, ...`` (up to ``num_steps``, or forever).

    Worker ``w`` of ``W`` yields the steps ``start_step + w + k * W``; the DataLoader interleaves its workers
    round-robin, so the stream order is the step order whatever ``num_workers``.
    """

    def __init__(
        self,
        vocab: SkillVocabulary,
        graphs: Mapping[str, BipartiteGraph],
        skills_per_step: int = 512,
        max_length: int = 64,
        augment_p: float = 0.8,
        seed: int = 0,
        num_steps: int | None = None,
        start_step: int = 0,
        tokenizer=None,
        sampling: str = "skill_uniform",
        shard: tuple[int, int] = (0, 1),
        skill_pool: np.ndarray | None = None,
    ) -> None:
        if sampling not in SAMPLINGS:
            raise ConfigError(f"data.sampling must be one of {list(SAMPLINGS)}, got {sampling!r}")
        if not 0 < skills_per_step <= len(vocab):
            raise ConfigError(f"data.skills_per_step={skills_per_step} must be in [1, {len(vocab)}] (the vocabulary "
                              f"{vocab.name} has {len(vocab)} skills): set data.skills_per_step={min(64, len(vocab))}")
        if skill_pool is not None and skills_per_step > len(skill_pool):
            raise ConfigError(f"data.skills_per_step={skills_per_step} is more than the {len(skill_pool)} skills left "
                              "for training by data.skill_holdout: lower one of them")
        if not 0.0 <= augment_p <= 1.0:
            raise ValueError(f"augment_p={augment_p} must be in [0, 1]")
        for name, graph in graphs.items():
            if graph.n_skills != len(vocab):
                raise ValueError(f"graph {name} has {graph.n_skills} skills, the vocabulary {len(vocab)}")
        self.vocab = vocab
        self.graphs = dict(graphs)
        self.skills_per_step = skills_per_step
        self.max_length = max_length
        self.augment_p = augment_p
        self.seed = seed
        self.num_steps = num_steps
        self.start_step = start_step
        self.tokenizer = tokenizer
        self.sampling = sampling
        self.shard = shard
        self.skill_pool = None if skill_pool is None else np.asarray(skill_pool, dtype=np.int64)

    # No ``__len__`` on purpose: Lightning would treat ``num_steps - start_step`` as the epoch length and, on a
    # resume (which restores its own batch counter), end the "epoch" early and restart the stream. Training
    # length is the trainer's ``max_steps``; the stream itself stops at ``num_steps``.

    def sample(self, step: int) -> StepSample:
        """The skills and texts of ``step`` (deterministic in (seed, step)), before tokenisation."""
        rng = step_rng(self.seed, step)
        if self.skill_pool is None:
            skills = rng.choice(len(self.vocab), size=self.skills_per_step, replace=False).astype(np.int64)
        else:  # a skill holdout: only the training skills are ever drawn
            skills = self.skill_pool[rng.choice(self.skill_pool.size, size=self.skills_per_step, replace=False)]
        drawn: dict[str, np.ndarray] | None = None
        if self.sampling == "per_graph":
            skills, drawn = sample_per_graph(self.graphs, skills, rng)
        samples = {}
        for name, graph in self.graphs.items():
            if drawn is None:
                text_ids, rows = sample_neighbors(graph, skills, rng)
            else:
                text_ids, picked = sample_neighbors(graph, skills[drawn[name]], rng)
                rows = drawn[name][picked]
            texts = [graph.texts[t] for t in text_ids]
            contexts = np.full(text_ids.size, -1, dtype=np.int64)
            prefix = np.zeros(text_ids.size, dtype=bool)
            if name == AUGMENTED_GRAPH and self.augment_p > 0 and text_ids.size:
                chosen = rng.random(text_ids.size) < self.augment_p
                prefix = (rng.random(text_ids.size) < 0.5) & chosen
                contexts[chosen] = sample_contexts(graph, skills, int(chosen.sum()), rng)
                context_texts = [graph.texts[c] if c >= 0 else None for c in contexts]
                augmented = augment_texts(texts, context_texts, prefix, self.tokenizer, self.max_length)
                changed = np.array([new != old for new, old in zip(augmented, texts, strict=True)], dtype=bool)
                contexts[~changed] = -1
                prefix &= changed
                texts = augmented
            samples[name] = GraphSample(
                text_ids=text_ids,
                pair_index=rows,
                texts=texts,
                pos_mask=graph.has_edge(skills[:, None], text_ids[None, :]),
                context_ids=contexts,
                context_is_prefix=prefix,
            )
        return StepSample(step, skills, [self.vocab.labels[s] for s in skills], samples)

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        if self.tokenizer is None:
            raise RuntimeError("no tokenizer: pass tokenizer=... to UWEDataModule or call set_tokenizer(tok)")
        if not texts:  # an empty shard (data parallel): no rows, no columns
            empty = torch.zeros((0, 0), dtype=torch.long)
            return {"input_ids": empty, "attention_mask": empty.clone()}
        encoded = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def local(self, items: Sequence[str]) -> Sequence[str]:
        """This rank's contiguous shard of ``items`` (all of them in a single process)."""
        start, stop = shard_bounds(len(items), *self.shard)
        return items[start:stop]

    def batch(self, step: int) -> UWEBatch:
        """The global batch of ``step``, tokenised for this rank's shard (:attr:`shard`)."""
        sample = self.sample(step)
        graphs = {
            name: GraphBatch(
                text_inputs=self.tokenize(self.local(part.texts)),
                pos_mask=torch.from_numpy(part.pos_mask),
                pair_index=torch.from_numpy(part.pair_index),
            )
            for name, part in sample.graphs.items()
            if part.texts
        }
        return UWEBatch(skill_inputs=self.tokenize(self.local(sample.skill_texts)), graphs=graphs, step=step,
                        num_skills=len(sample.skill_texts), shard=tuple(self.shard))

    def steps(self) -> Iterator[int]:
        """This worker's steps."""
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        step = self.start_step + worker
        while self.num_steps is None or step < self.num_steps:
            yield step
            step += workers

    def __iter__(self) -> Iterator[UWEBatch]:
        for step in self.steps():
            yield self.batch(step)


def leave_signals_to_main(worker_id: int) -> None:
    """DataLoader workers ignore SIGTERM / SIGINT: the main process checkpoints the step and stops them.

    A scheduler (or ``pkill``, or Ctrl-C) signals the whole process group; a worker that died of it would turn a
    clean, resumable stop into a crashed job, and in a Hydra multirun into the next job starting. Lightning's own
    worker seeding (``seed_everything(workers=True)``) still runs.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if int(os.environ.get("PL_SEED_WORKERS", "0")):
        from lightning.fabric.utilities.seed import pl_worker_init_function

        pl_worker_init_function(worker_id)


def _identity(batch: UWEBatch) -> UWEBatch:
    return batch


# ---------------------------------------------------------------------------------------------------------
# DataModule
# ---------------------------------------------------------------------------------------------------------


class UWEDataModule(pl.LightningDataModule):
    """Training batches from a :class:`GraphSource`: the open protocol (``data=open``:
    :class:`~uwe_lightning.protocol.OpenProtocolSource`) or your own edge files (``data=edges``:
    :class:`~uwe_lightning.data.edges.EdgeFileSource`).

    ``num_steps=None`` gives an unbounded stream (training length = the trainer's ``max_steps``);
    :attr:`paper_num_steps` is the paper's length rule, one pass over the largest graph's edges. Validation
    and test are done on WorkBench by the training module/callback, so no val/test dataloaders exist here.
    """

    def __init__(
        self,
        source: GraphSource,
        tokenizer: str | None = None,
        skills_per_step: int = 512,
        graphs: Sequence[str] | None = GRAPHS,
        max_length: int = 64,
        augment_p: float = 0.8,
        num_steps: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        sampling: str = "skill_uniform",
        alignment: str = "aligned",
        skill_holdout: float | None = None,
        holdout_seed: int = 0,
    ) -> None:
        super().__init__()
        if sampling not in (*SAMPLINGS, AUTO_SAMPLING):
            raise ConfigError(f"data.sampling must be one of {[*SAMPLINGS, AUTO_SAMPLING]}, got {sampling!r}")
        if alignment not in ALIGNMENTS:
            raise ConfigError(f"data.alignment must be one of {list(ALIGNMENTS)}, got {alignment!r}")
        if skill_holdout is not None and not (isinstance(skill_holdout, (int, float)) and 0.0 < skill_holdout < 1.0):
            raise ConfigError(f"data.skill_holdout must be null or a fraction in (0, 1), got {skill_holdout!r}")
        if graphs is None:  # follow the source (data=edges: the graphs that have an edge file)
            graphs = source.available_graphs() if hasattr(source, "available_graphs") else GRAPHS
        graphs = list(graphs)
        if not graphs or len(set(graphs)) != len(graphs):
            raise ValueError(f"graphs must be a non-empty list of distinct names, got {graphs}")
        self.save_hyperparameters(ignore=["tokenizer", "source"], logger=False)  # loggers get the whole config
        self.source = source
        self.tokenizer_name = tokenizer if isinstance(tokenizer, (str, os.PathLike)) else None
        self.tokenizer = None if self.tokenizer_name is not None else tokenizer
        self.skills_per_step = skills_per_step
        self.graph_names = graphs
        self.max_length = max_length
        self.augment_p = augment_p
        self.num_steps = num_steps
        self.num_workers = num_workers
        self.seed = seed
        self.sampling = sampling
        self.alignment = alignment
        self.skill_holdout = None if skill_holdout is None else float(skill_holdout)
        self.holdout_seed = int(holdout_seed)
        self.held_out_skills: np.ndarray | None = None  # data.skill_holdout: the skills never trained on
        self.controls: dict[str, Any] = {}  # what the controls did (run_info.json)
        self._loaded_graphs: dict[str, BipartiteGraph] = {}  # the graphs as the source gave them
        self.start_step = 0
        self.shard = (0, 1)  # (rank, world size) whose shard of each step is tokenised
        self._next_step: int | None = None  # step after the last batch handed to the model
        self.vocab: SkillVocabulary | None = None
        self.graphs: dict[str, BipartiteGraph] = {}
        self.dataset: UWETrainDataset | None = None

    # -- configuration -----------------------------------------------------------------------------------

    def set_tokenizer(self, tokenizer) -> None:
        """Use this (Hugging Face) tokenizer, e.g. the encoder's, instead of loading one by name."""
        self.tokenizer = tokenizer
        if self.dataset is not None:
            self.dataset.tokenizer = tokenizer

    def set_start_step(self, step: int) -> None:
        """Start the stream at ``step`` (resume): the next dataloader yields step, step + 1, ..."""
        if step < 0:
            raise ValueError(f"start step must be >= 0, got {step}")
        self.start_step = int(step)
        self._next_step = None
        if self.dataset is not None:
            self.dataset.start_step = self.start_step

    def set_shard(self, rank: int, world: int) -> None:
        """Tokenise only the shard of process ``rank`` of ``world`` (data parallel); ``(0, 1)``: everything."""
        shard_bounds(0, rank, world)  # validates
        self.shard = (int(rank), int(world))
        if self.dataset is not None:
            self.dataset.shard = self.shard

    # -- Lightning hooks ---------------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        self.vocab, self.graphs = self.source.load(self.graph_names)
        skill_pool = self._apply_controls()
        self.sampling = choose_sampling(len(self.vocab), self.graphs, self.sampling)  # resolves "auto" (logged)
        if self.tokenizer is None and self.tokenizer_name is not None:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(str(self.tokenizer_name))
        self.dataset = UWETrainDataset(
            self.vocab,
            self.graphs,
            skills_per_step=self.skills_per_step,
            max_length=self.max_length,
            augment_p=self.augment_p,
            seed=self.seed,
            num_steps=self.num_steps,
            start_step=self.start_step,
            tokenizer=self.tokenizer,
            sampling=self.sampling,
            shard=self.shard,
            skill_pool=skill_pool,
        )

    def holdout_for(self, fraction: float) -> np.ndarray:
        """The held-out skills of a ``fraction`` holdout of this run's graphs as loaded (before any control):
        ``data.skill_holdout``'s split, also for a run that trains on every skill (to score it on the same
        seen / unseen halves)."""
        if self.vocab is None:
            self.setup("fit")
        assert self.vocab is not None
        return holdout_split(total_degree(self._loaded_graphs, len(self.vocab)), fraction, self.holdout_seed)

    def _apply_controls(self) -> np.ndarray | None:
        """Apply ``skill_holdout`` then ``alignment`` to the loaded graphs; the skills the sampler may draw."""
        assert self.vocab is not None
        self._loaded_graphs = dict(self.graphs)
        pool = None
        if self.skill_holdout is not None:
            self.held_out_skills = self.holdout_for(self.skill_holdout)
            self.graphs, pool, self.controls["skill_holdout"] = hold_out_skills(
                self.graphs, self.held_out_skills, len(self.vocab))
            self.controls["skill_holdout"].update(fraction=self.skill_holdout, seed=self.holdout_seed)
        if self.alignment == "shuffled":
            self.graphs, self.controls["alignment"] = shuffle_graphs(self.graphs, self.seed)
        return pool

    def train_dataloader(self) -> DataLoader:
        if self.dataset is None:
            self.setup("fit")
        assert self.dataset is not None
        if self.dataset.tokenizer is None:
            raise RuntimeError("UWEDataModule has no tokenizer: pass tokenizer=<name or path> or call set_tokenizer()")
        if self.num_workers > 0:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # forked workers + fast tokenizers
        self.dataset.start_step = self.start_step
        trainer = getattr(self, "trainer", None)
        if trainer is not None:  # every rank streams the same steps and tokenises its own shard of each
            self.set_shard(trainer.global_rank, trainer.world_size)
        return DataLoader(
            self.dataset,
            batch_size=None,
            num_workers=self.num_workers,
            collate_fn=_identity,
            persistent_workers=False,
            worker_init_fn=leave_signals_to_main if self.num_workers > 0 else None,
        )

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """Remember the step handed to the model (for :meth:`state_dict`); prefetched batches do not count."""
        if isinstance(batch, UWEBatch):
            self._next_step = batch.step + 1
        return batch

    def state_dict(self) -> dict:
        """Saved in Lightning checkpoints: where the stream resumes, and what defines it."""
        next_step = self._next_step if self._next_step is not None else self.start_step
        return {"next_step": next_step, "seed": self.seed, "skills_per_step": self.skills_per_step,
                "sampling": self.sampling, "alignment": self.alignment, "skill_holdout": self.skill_holdout}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the stream position (Lightning calls this before creating the train dataloader)."""
        for key, what in (("seed", "data seed"), ("sampling", "data.sampling"), ("alignment", "data.alignment"),
                          ("skill_holdout", "data.skill_holdout")):
            if state_dict.get(key, getattr(self, key)) != getattr(self, key):
                warnings.warn(f"checkpoint was trained with {what} {state_dict[key]}, this datamodule has {what} "
                              f"{getattr(self, key)}: the resumed run continues at the same step but with a "
                              "different batch stream", stacklevel=2)
        self.set_start_step(int(state_dict.get("next_step", 0)))

    # -- information -------------------------------------------------------------------------------------

    @property
    def paper_num_steps(self) -> int:
        """Steps for one pass over the largest graph's edges at ``skills_per_step`` (paper section 5)."""
        if not self.graphs:
            self.setup("fit")
        return math.ceil(max(g.n_edges for g in self.graphs.values()) / self.skills_per_step)

    def graph_report(self) -> dict[str, dict[str, Any]]:
        """Per graph: texts, edges, skills covered, and what loading dropped or merged (for logs and run_info)."""
        if not self.graphs:
            self.setup("fit")
        keys = ("rows", "dropped_unknown_skill", "merged_duplicate_edges", "extra_edges")
        return {name: {**graph.summary(), **{k: graph.meta[k] for k in keys if k in graph.meta}}
                for name, graph in self.graphs.items()}

    def graph_summary(self) -> dict[str, dict[str, int]]:
        if not self.graphs:
            self.setup("fit")
        return {name: graph.summary() for name, graph in self.graphs.items()}
