"""What one training step holds: the sampled skills and texts (:class:`StepSample`) and the tokenised batch the
model sees (:class:`UWEBatch`); see :mod:`uwe_lightning.data.datamodule` for how they are built."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor


@dataclass
class GraphBatch:
    text_inputs: dict[str, Tensor]  # this rank's shard of the graph's texts, tokenised: [n_G on this rank, L]
    pos_mask: Tensor  # bool [S, N_G]: graph edge between batch skill i and batch text j (the whole batch)
    pair_index: Tensor  # long [N_G]: row of the skill text j was sampled for (the whole batch)

    @property
    def num_texts(self) -> int:
        """Texts of the graph in the whole (global) batch."""
        return int(self.pair_index.shape[0])


@dataclass
class UWEBatch:
    skill_inputs: dict[str, Tensor]  # this rank's shard of the skills: [s on this rank, L]
    graphs: dict[str, GraphBatch]  # keys among "J", "V", "A" (only the enabled graphs with a text this step)
    step: int
    num_skills: int = -1  # skills in the whole batch (S); -1: unsharded, the rows of skill_inputs
    shard: tuple[int, int] = (0, 1)  # (rank, world size) the inputs were tokenised for

    def __post_init__(self) -> None:
        if self.num_skills < 0:
            self.num_skills = int(self.skill_inputs["input_ids"].shape[0])

    @property
    def num_texts(self) -> int:
        """Skills plus texts of every graph in the whole batch (what one step encodes over all ranks)."""
        return self.num_skills + sum(part.num_texts for part in self.graphs.values())


@dataclass
class GraphSample:
    """One graph's part of a step before tokenisation (for inspection and tests)."""

    text_ids: np.ndarray  # [N_G] text indices in the graph
    pair_index: np.ndarray  # [N_G] batch row of the skill each text was sampled for
    texts: list[str]  # model inputs (augmented for V)
    pos_mask: np.ndarray  # bool [S, N_G]
    context_ids: np.ndarray  # [N_G] graph text index of the augmentation sentence, -1 = none
    context_is_prefix: np.ndarray  # bool [N_G]


@dataclass
class StepSample:
    step: int
    skills: np.ndarray  # [S] vocabulary indices, distinct
    skill_texts: list[str]
    graphs: dict[str, GraphSample]
