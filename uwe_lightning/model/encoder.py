"""The shared bi-encoder: one Hugging Face transformer that returns token embeddings with their masks.

Queries and targets go through the same weights; whatever a scorer does with the tokens (mean pooling,
MaxSim, soft late interaction) happens in :mod:`uwe_lightning.model.scoring`, never here.
"""

from __future__ import annotations

import inspect
import json
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.utils.checkpoint
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from uwe_lightning.integrity import check_records
from uwe_lightning.io import DataError, ModelNotFoundError
from uwe_lightning.model.backbones import resolve_backbone, what_works
from uwe_lightning.paths import resolve_cache_dir


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
        """Drop the leading and trailing columns that are padding in every row (cheaper scoring, same scores).

        Both ends, because a left-padding tokenizer puts the padding first: cutting at the longest row's
        length would drop real tokens of a subset of a left-padded batch.
        """
        used = self.mask.any(0).nonzero() if len(self) else self.mask.new_zeros((0, 1))
        if used.numel() == 0:
            return TokenEmbeddings(self.embeddings[:, :0], self.mask[:, :0])
        first, last = int(used[0]), int(used[-1]) + 1
        return TokenEmbeddings(self.embeddings[:, first:last], self.mask[:, first:last])

    @staticmethod
    def pad_cat(parts: Sequence[TokenEmbeddings]) -> TokenEmbeddings:
        """Concatenate along the batch, right-padding each part to the widest one (any padding inside a part,
        left or right, stays where its mask says: every scorer reads the mask, never the position)."""
        width = max(p.embeddings.shape[1] for p in parts)
        emb, mask = [], []
        for p in parts:
            extra = width - p.embeddings.shape[1]
            emb.append(nn.functional.pad(p.embeddings, (0, 0, 0, extra)))
            mask.append(nn.functional.pad(p.mask, (0, extra), value=False))
        return TokenEmbeddings(torch.cat(emb), torch.cat(mask))


#: Three words every tokenizer of this project keeps whole: a collapsed model maps them to one embedding.
PROBE_TEXTS = ("nurse", "teacher", "driver")
#: Where a saved model records its files' sizes and sha256 (``UWEModel.save_pretrained``).
SAVED_CONFIG_FILE = "uwe.json"


def check_saved_files(path: str) -> None:
    """A saved model's weights and tokenizer files against the sizes and sha256 in its ``uwe.json`` (a plain
    Hugging Face or PyPI directory has none: the sanity probe still runs)."""
    config = Path(path) / SAVED_CONFIG_FILE
    if not config.is_file():
        return
    try:
        records = json.loads(config.read_text()).get("files")
    except (OSError, ValueError, AttributeError) as err:
        raise DataError(f"{config}: unreadable ({err}); copy or export the model again") from err
    if records:
        check_records(path, records, "model", "copy or export it again", resolve_cache_dir())


#: The JSON files of a saved model, in the order a loader reads them.
MODEL_JSON_FILES = ("config.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json")


def unreadable_json_file(model_dir: Path) -> Path | None:
    """The first JSON file of a model directory that does not parse (what a loader's error means), else None."""
    if not model_dir.is_dir():
        return None
    for name in MODEL_JSON_FILES:
        file = model_dir / name
        try:
            if file.is_file():
                json.loads(file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            return file
    return None


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
        """Load a backbone name, a model directory or a hub id (see :func:`resolve_backbone`).

        transformers' OSError (no hub, a hub id that does not exist, a directory without a model) becomes a
        :class:`~uwe_lightning.io.ModelNotFoundError` naming the value and what would work.
        """
        path = resolve_backbone(name_or_path, model_dir)
        check_saved_files(path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            backbone = AutoModel.from_pretrained(path, **kwargs)
        except OSError as err:
            where = ("from its directory" if Path(path).is_dir() else
                     "(not a directory here, and no reachable model hub has it)")
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ModelNotFoundError(
                f"model '{name_or_path}' could not be loaded {where}: {first} -- {what_works(model_dir)}"
            ) from err
        except Exception as err:  # a truncated safetensors file, a garbage tokenizer.json or config.json
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            broken = unreadable_json_file(Path(path))
            what = f"{broken} is not valid JSON" if broken else f"({path}) is damaged"
            raise DataError(f"model '{name_or_path}': {what}: {type(err).__name__}: {first[:200]} -- "
                            "copy or export the model again") from err
        encoder = cls(backbone, tokenizer, name=name_or_path)
        encoder.sanity_probe()
        return encoder.train(backbone.training)  # eval, as loaded: encode() restores this mode afterwards

    @torch.no_grad()
    def sanity_probe(self) -> None:
        """Refuse a model that cannot work, in one line: non-finite embeddings, or distinct words collapsing
        to one embedding (zeroed weights score every target 1.0). One forward of three words: milliseconds."""
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            batch = self.tokenizer(list(PROBE_TEXTS), padding=True, return_tensors="pt").to(self.device)
            hidden = self.backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
        finally:
            self.backbone.train(was_training)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = ((hidden * mask).sum(1) / mask.sum(1)).float()
        if not bool(torch.isfinite(pooled).all()):
            raise DataError(f"model '{self.name}' gives non-finite embeddings: its weights are damaged "
                            "(copy or export it again)")
        unit = nn.functional.normalize(pooled, dim=-1)
        cos = unit @ unit.T
        if bool((pooled.norm(dim=-1) < 1e-6).any()) or float(cos[~torch.eye(len(cos), dtype=torch.bool)].min()) > 0.9999:
            raise DataError(f"model '{self.name}' maps distinct words ({', '.join(PROBE_TEXTS)}) to one embedding: "
                            "its weights are damaged or zeroed (copy or export it again)")

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
        """Token embeddings with the attention mask as their mask; padding may be on either side.

        With left padding, models whose positions count from the first column (BERT-style absolute positions,
        rotary decoders) get ``position_ids`` counted from each row's first real token, so a text's
        embeddings do not depend on how much padding its batch has (as with right padding). RoBERTa-style
        models derive positions from the non-pad input ids themselves and get none; a backbone whose forward
        takes no ``position_ids`` (DistilBERT) keeps its own, so give it a right-padding tokenizer.
        """
        kwargs = {}
        if self._needs_position_ids(attention_mask):
            kwargs["position_ids"] = positions_from_mask(attention_mask)
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return TokenEmbeddings(out.last_hidden_state, attention_mask.bool())

    def enable_gradient_checkpointing(self) -> str:
        """Recompute each transformer layer's activations in backward instead of keeping them (training only).

        Transformers' own ``activation_checkpointing_enable`` (``gradient_checkpointing_enable`` before it was
        renamed; non-reentrant) where the model supports it, else
        (MPNet, the paper's backbone, in transformers 5) each layer of the backbone's layer list runs under
        :func:`torch.utils.checkpoint.checkpoint` (non-reentrant, RNG state preserved, so dropout is replayed).
        Weights and saved models are unchanged. Returns which of the two was used.
        """
        if getattr(self.backbone, "supports_gradient_checkpointing", False):
            non_reentrant = {"use_reentrant": False}
            if hasattr(self.backbone, "activation_checkpointing_enable"):  # its name from transformers 5.2x on
                self.backbone.activation_checkpointing_enable(activation_checkpointing_kwargs=non_reentrant)
            else:
                self.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=non_reentrant)
            return "transformers"
        lists = [m for m in self.backbone.modules() if isinstance(m, nn.ModuleList) and len(m)]
        layers = max(lists, key=len, default=None)
        if layers is None or len({type(m) for m in layers}) != 1:
            raise ValueError(f"backbone {type(self.backbone).__name__} has no list of layers to checkpoint")
        for layer in layers:
            layer.forward = types.MethodType(_checkpointed_forward, layer)
        return "layers"

    def _needs_position_ids(self, attention_mask: torch.Tensor) -> bool:
        if not bool((~attention_mask[:, 0].bool()).any()):
            return False  # no row starts with padding: default positions are right
        return self.counts_positions_from_mask()

    def counts_positions_from_mask(self) -> bool:
        """Whether left-padded rows need ``position_ids`` from the mask (see :meth:`forward`); the ONNX export
        always passes them then, since they equal the default positions on every real token of a right-padded
        row."""
        if getattr(self.backbone.config, "model_type", "") in _POSITIONS_FROM_INPUT_IDS:
            return False
        return "position_ids" in inspect.signature(self.backbone.forward).parameters

    @torch.inference_mode()
    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 128,
        max_length: int | None = None,
        show_progress: bool = False,
        desc: str = "encode",
        side: str = "target",
    ) -> list[torch.Tensor]:
        """Token embeddings of each text (``[n_tokens, H]``, padding removed), in input order, on CPU.

        ``side`` (query / target) is accepted for the encoder interface and ignored: a backbone embeds a text
        the same way on both sides (see :mod:`~uwe_lightning.model.st_encoder` for one that does not).

        The texts are tokenised once, then batched sorted by token count (not characters: "C++" and
        "Ångström" have few characters and many tokens), so that a batch's padding stays small; the caller
        keeps one entry per distinct text (see :class:`uwe_lightning.workbench.runner.EncoderRankingModel`).
        """
        if not texts:
            return []
        was_training = self.training
        self.eval()
        ids = self.tokenizer(list(texts), truncation=True, max_length=max_length or self.model_max_length(),
                             padding=False, return_attention_mask=False)["input_ids"]
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]), reverse=True)
        out: list[torch.Tensor | None] = [None] * len(texts)
        for start in _progress(range(0, len(order), batch_size), show_progress, desc, len(order), batch_size):
            idx = order[start : start + batch_size]
            input_ids, attention_mask = self.pad_batch([ids[i] for i in idx])
            with _autocast(self.device):
                tok = self(input_ids.to(self.device), attention_mask.to(self.device))
            emb, mask = tok.embeddings.float().cpu(), tok.mask.cpu()
            for row, i in enumerate(idx):
                out[i] = emb[row][mask[row]].clone()  # the real tokens in order, wherever the padding is
        self.train(was_training)
        return out  # type: ignore[return-value]

    def pad_batch(self, ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)`` of token id lists, padded with the pad id on the tokenizer's side."""
        width = max(len(row) for row in ids)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        for row, values in enumerate(ids):
            cols = slice(width - len(values), width) if left else slice(0, len(values))
            input_ids[row, cols] = torch.tensor(values, dtype=torch.long)
            mask[row, cols] = 1
        return input_ids, mask


def _checkpointed_forward(self: nn.Module, *args, **kwargs):
    """A layer's own forward, under activation checkpointing while training with gradients."""
    forward = type(self).forward
    if self.training and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(forward, self, *args, use_reentrant=False, **kwargs)
    return forward(self, *args, **kwargs)


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids counted from each row's first real token (padding before it gets 0)."""
    return (attention_mask.long().cumsum(1) - 1).clamp_min(0)


#: Model types that compute position ids from the input ids (skipping pad tokens) when none are given.
_POSITIONS_FROM_INPUT_IDS = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "mpnet", "camembert",
                                       "data2vec-text", "longformer", "ibert", "luke", "markuplm"})


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
