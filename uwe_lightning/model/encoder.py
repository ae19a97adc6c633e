"""The shared bi-encoder: one Hugging Face transformer that returns token embeddings with their masks.

Queries and targets go through the same weights; whatever a scorer does with the tokens (mean pooling,
MaxSim, soft late interaction) happens in :mod:`uwe_lightning.model.scoring`, never here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from uwe_lightning.model.backbones import resolve_backbone


@dataclass
class TokenEmbeddings:
    """Padded token embeddings ``[B, L, H]`` and a boolean mask ``[B, L]`` (True = real token)."""

    embeddings: torch.Tensor
    mask: torch.Tensor

    def __post_init__(self) -> None:
        if self.mask.dtype != torch.bool:
            self.mask = self.mask.bool()
        if self.embeddings.shape[:2] != self.mask.shape:
            raise ValueError(f"embeddings {tuple(self.embeddings.shape)} and mask {tuple(self.mask.shape)} differ")

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    def __getitem__(self, index: slice | torch.Tensor) -> TokenEmbeddings:
        return TokenEmbeddings(self.embeddings[index], self.mask[index])

    def to(self, device: torch.device | str) -> TokenEmbeddings:
        return TokenEmbeddings(self.embeddings.to(device), self.mask.to(device))

    def trimmed(self) -> TokenEmbeddings:
        """Drop trailing columns that are padding in every row (cheaper scoring, same scores)."""
        width = int(self.mask.sum(1).max().item()) if len(self) else 0
        return TokenEmbeddings(self.embeddings[:, :width], self.mask[:, :width])

    @staticmethod
    def pad_cat(parts: Sequence[TokenEmbeddings]) -> TokenEmbeddings:
        """Concatenate along the batch, right-padding each part to the widest one."""
        width = max(p.embeddings.shape[1] for p in parts)
        emb, mask = [], []
        for p in parts:
            extra = width - p.embeddings.shape[1]
            emb.append(nn.functional.pad(p.embeddings, (0, 0, 0, extra)))
            mask.append(nn.functional.pad(p.mask, (0, extra), value=False))
        return TokenEmbeddings(torch.cat(emb), torch.cat(mask))


class Encoder(nn.Module):
    """A transformer backbone plus its tokenizer; ``forward`` gives :class:`TokenEmbeddings`.

    ``max_length`` caps tokens during training (the paper uses 64); ``None`` means the model's own limit,
    which is what inference uses.
    """

    def __init__(self, backbone: nn.Module, tokenizer: PreTrainedTokenizerBase, name: str = "") -> None:
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.name = name

    @classmethod
    def from_pretrained(cls, name_or_path: str, model_dir: str | None = None, **kwargs) -> Encoder:
        path = resolve_backbone(name_or_path, model_dir)
        tokenizer = AutoTokenizer.from_pretrained(path)
        backbone = AutoModel.from_pretrained(path, **kwargs)
        return cls(backbone, tokenizer, name=name_or_path)

    @property
    def hidden_size(self) -> int:
        return int(self.backbone.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def model_max_length(self) -> int:
        limit = getattr(self.backbone.config, "max_position_embeddings", 512)
        # RoBERTa-style models (MPNet) reserve two positions for the padding offset.
        if getattr(self.backbone.config, "model_type", "") in {"mpnet", "roberta", "xlm-roberta"}:
            limit -= 2
        return int(min(limit, self.tokenizer.model_max_length))

    def tokenize(self, texts: Sequence[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
        return self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=max_length or self.model_max_length(),
            return_tensors="pt",
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TokenEmbeddings:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        return TokenEmbeddings(out.last_hidden_state, attention_mask.bool())

    @torch.inference_mode()
    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 128,
        max_length: int | None = None,
        show_progress: bool = False,
        desc: str = "encode",
    ) -> list[torch.Tensor]:
        """Token embeddings of each text (``[n_tokens, H]``, padding removed), in input order, on CPU.

        Texts are batched sorted by length so that padding stays small; the caller keeps one entry per
        distinct text (see :class:`uwe_lightning.workbench.runner.EmbeddingCache`).
        """
        was_training = self.training
        self.eval()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        out: list[torch.Tensor | None] = [None] * len(texts)
        for start in _progress(range(0, len(order), batch_size), show_progress, desc, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = self.tokenize([texts[i] for i in idx], max_length)
            batch = {k: v.to(self.device) for k, v in batch.items()}
            with _autocast(self.device):
                tok = self(batch["input_ids"], batch["attention_mask"])
            emb = tok.embeddings.float().cpu()
            lengths = tok.mask.sum(1).tolist()
            for row, i in enumerate(idx):
                out[i] = emb[row, : lengths[row]].clone()
        self.train(was_training)
        return out  # type: ignore[return-value]


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _progress(it: range, show: bool, desc: str, total_items: int, batch_size: int) -> Iterator[int]:
    if not show:
        yield from it
        return
    from tqdm.auto import tqdm

    with tqdm(total=total_items, desc=desc, unit="text", mininterval=5.0) as bar:
        for start in it:
            yield start
            bar.update(min(batch_size, total_items - start))
