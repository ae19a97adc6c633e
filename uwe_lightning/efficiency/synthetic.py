"""Synthetic target spaces of any size, made from a real encoded one, written straight into a mapped file.

Why synthetic: encoding a million real texts takes hours on 2 CPU cores, and what the 1M-target run measures
(memory, latency, the prefilter's recall) needs token embeddings with a real model's geometry, not real texts.
Each synthetic text copies the tokens of a random text of the base space (a real target space encoded by the
model), replaces each token with probability ``swap`` by a random token of the whole base space, and adds
Gaussian noise of ``noise`` times the token's RMS component; its length is its base text's. So synthetic texts
are near-duplicates of real ones with foreign words mixed in: targets crowd around every query (a hard case for a
prefilter), and the pooled vector and the token-level score disagree where the swapped tokens matter.

The file is a prepared space (:func:`uwe_lightning.ranking.fast.prepared_writer`, fp16 unit tokens by length,
pooled vectors for a prefilter), written tile by tile in bounded memory; texts are numbered in length order, so
that the file's order is the identity.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from uwe_lightning.ranking.fast import DEFAULT_TILE_TOKENS, FORMAT_VERSION, prepared_writer
from uwe_lightning.ranking.packed import EncodedTexts


def synthetic_name(base_digest: str, n: int, seed: int, swap: float, noise: float) -> str:
    """A file name naming everything the file depends on (a changed parameter, or another version of the
    prepared-space format, is another file: a file left by an older layout is never reopened)."""
    key = json.dumps({"base": base_digest, "n": n, "seed": seed, "swap": swap, "noise": noise, "v": 1,
                      "format": FORMAT_VERSION})
    return f"synthetic-{n}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors"


def write_synthetic(path: str | Path, base: EncodedTexts, n: int, seed: int = 0, swap: float = 0.3,
                    noise: float = 0.1, tile_tokens: int = DEFAULT_TILE_TOKENS) -> Path:
    """Write ``n`` synthetic texts made from ``base`` (token level) to ``path`` (atomically)."""
    if base.pooled:
        raise ValueError("a synthetic space is made from a token-level base space")
    gen = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(base), (n,), generator=gen)
    lengths = base.lengths[picks]
    order = torch.sort(lengths, stable=True).indices
    picks, lengths = picks[order], lengths[order]  # text i is the i-th shortest: the file's order is the identity
    total_base = base.tokens.shape[0]
    with prepared_writer(path, lengths, base.hidden_size, pooled=False, model_id=base.model_id,
                         with_pooled_vectors=True, tile_tokens=tile_tokens) as writer:
        for length, start, stop in writer.spans:
            rows, _ = base.token_rows(picks[start:stop])
            tokens = base.tokens[rows].float()
            swapped = torch.rand(rows.numel(), generator=gen) < swap
            if bool(swapped.any()):
                donors = torch.randint(0, total_base, (int(swapped.sum()),), generator=gen)
                tokens[swapped] = base.tokens[donors].float()
            rms = tokens.pow(2).mean(1, keepdim=True).sqrt()
            tokens += noise * rms * torch.randn(tokens.shape, generator=gen)
            writer.write(tokens)
            writer.write_pooled(start, tokens.view(stop - start, length, -1).mean(1))
    return Path(path)
