"""A tiny BERT + WordPiece tokenizer built on the spot: a complete Hugging Face model directory (config,
weights, tokenizer) of a 2-layer, 32-dim BERT whose vocabulary covers every lowercase letter as a word piece,
so any English text tokenises."""

from __future__ import annotations

import string
from pathlib import Path

import torch

_WORDS = ["the", "and", "of", "to", "in", "for", "with", "a", "an", "data", "python", "java", "sql", "manage", "team", "lead", "develop", "software", "engineer", "nurse", "care", "patient", "teacher", "teach", "sales", "marketing", "customer", "service", "analyse", "report", "cook", "food", "chef", "drive", "truck", "driver", "build", "construction", "safety", "plan", "project", "manager", "skills", "job", "title", "sentence"]


def build_tiny_model(path: Path, hidden: int = 32, layers: int = 2, seed: int = 0, dropout: float = 0.1) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    letters = list(string.ascii_lowercase + string.digits)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + letters + [f"##{c}" for c in letters]
    vocab += [w for w in dict.fromkeys(_WORDS) if w not in vocab] + list(string.punctuation)
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(path / "vocab.txt"), do_lower_case=True, model_max_length=128)
    tokenizer.save_pretrained(path)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    BertModel(config).save_pretrained(path)
    return path
