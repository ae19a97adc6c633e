"""Any sentence-transformers model as an encoder of this project (``model=sentence_transformers``).

The generalist rows of the paper's Table 2 (Qwen3-Embedding, EmbeddingGemma, ...) are sentence-transformers
models whose own pooling (last-token, CLS, mean), normalisation and prompts (a query instruction, document
prompts) are part of the model. This adapter keeps all of that by calling ``encode_query`` for queries and
``encode_document`` for targets, and hands the ranker one vector per text (a length-1 "token" sequence), so the
``mean`` scorer's cosine is exactly the model's cosine similarity; caching, bucketing and WorkBench work
unchanged. Token-level scorers need token embeddings and are refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from uwe_lightning.io import ModelNotFoundError, require

SIDES = ("query", "target")


class SentenceTransformerEncoder(nn.Module):
    """A ``SentenceTransformer`` seen through the :class:`~uwe_lightning.model.encoder.Encoder` interface.

    Args:
        model: the loaded ``SentenceTransformer``.
        name: what it was loaded by (a directory or hub id).
        query_prompt / target_prompt: a prompt string that replaces the model's own for that side (``None``:
            the model's ``query`` / ``document`` prompt, if it defines one).
    """

    def __init__(self, model: Any, name: str, query_prompt: str | None = None,
                 target_prompt: str | None = None) -> None:
        super().__init__()
        self.backbone = model  # the name Encoder uses: parameters, .to(), fingerprints
        self.name = name
        self.prompts = {"query": query_prompt, "target": target_prompt}

    @property
    def hidden_size(self) -> int:
        getter = getattr(self.backbone, "get_embedding_dimension", None) or \
            self.backbone.get_sentence_embedding_dimension
        return int(getter())

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def model_max_length(self) -> int:
        return int(self.backbone.max_seq_length)

    def prompt_for(self, side: str) -> str | None:
        """The prompt text the model prepends on ``side`` (``None``: none)."""
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {side!r}")
        if self.prompts[side] is not None:
            return self.prompts[side] or None  # "": no prompt
        own = getattr(self.backbone, "prompts", {}) or {}
        return own.get("query" if side == "query" else "document") or None

    @property
    def side_dependent(self) -> bool:
        """Whether a text embeds differently as a query and as a target (then it is embedded once per side)."""
        return self.prompt_for("query") != self.prompt_for("target")

    @property
    def cache_tag(self) -> str:
        """Part of the target-space cache key: the target-side prompt changes the cached embeddings."""
        prompt = self.prompt_for("target") or ""
        return "st-target-prompt:" + hashlib.sha256(prompt.encode()).hexdigest()[:16]

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int = 128, max_length: int | None = None,
               show_progress: bool = False, desc: str = "encode", side: str = "target") -> list[torch.Tensor]:
        """One ``[1, H]`` embedding per text, with the model's own pooling, normalisation and ``side``'s prompt."""
        if max_length is not None and max_length != self.backbone.max_seq_length:
            self.backbone.max_seq_length = int(max_length)
        encode = self.backbone.encode_query if side == "query" else self.backbone.encode_document
        prompt = self.prompts[side]
        vectors = encode(list(texts), batch_size=batch_size, show_progress_bar=show_progress,
                         convert_to_tensor=True, **({"prompt": prompt} if prompt is not None else {}))
        vectors = vectors.float().cpu()
        return [v.unsqueeze(0) for v in vectors]


def load_sentence_transformer(name_or_path: str, query_prompt: str | None = None,
                              target_prompt: str | None = None, device: str | None = None
                              ) -> SentenceTransformerEncoder:
    """Load a sentence-transformers model from a directory (or a hub id, where a hub is reachable)."""
    SentenceTransformer = require("sentence_transformers", "model=sentence_transformers").SentenceTransformer
    try:
        model = SentenceTransformer(str(name_or_path), device=device or "cpu")
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelNotFoundError(
            f"model.name='{name_or_path}' could not be loaded as a sentence-transformers model: {first} -- give a "
            "directory holding one (modules.json), or a hub id where a hub is reachable"
        ) from err
    return SentenceTransformerEncoder(model.eval(), str(name_or_path), query_prompt, target_prompt)
