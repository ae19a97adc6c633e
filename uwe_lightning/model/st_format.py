"""The sentence-transformers files of a saved UWE model, so that ``SentenceTransformer(dir)`` loads it exactly.

A saved model directory is a Hugging Face model plus ``uwe.json``; these files make it a classic
sentence-transformers model as well (the format sentence-transformers 3 to 6 load without guessing):

- ``modules.json``: Transformer -> mean Pooling -> Normalize, i.e. our ``mean`` scorer's embedding;
- ``sentence_bert_config.json``: ``max_seq_length`` = the token limit we really use at inference (the
  backbone's position limit unless ``max_length`` was set), so long texts are cut where ours are;
- ``1_Pooling/config.json``, ``2_Normalize/``;
- ``config_sentence_transformers.json``: cosine similarity, the library versions, and a ``uwe`` block (scorer,
  tau, format) that tells a reader the model's own scorer.

``format="pylate"`` writes the PyLate (ColBERT) variant instead, for ``maxsim`` models: Transformer -> an identity
``Dense`` (PyLate always projects), no query/document prefixes, no query expansion, query and document length =
our token limit and an empty skiplist, so that PyLate's MaxSim divided by the query length is our ``maxsim``.

sentence-transformers gives the mean-pooled embedding; a model trained with a token-level scorer (``softmax``,
``maxsim``, ``softmax_ymean``) ranks with that scorer only through :class:`~uwe_lightning.ranking.ranker.Ranker`
or :class:`~uwe_lightning.model.pretrained.UWEModel` (the model card says so).
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

from uwe_lightning.io import strict_json

MODULES_FILE = "modules.json"
ST_CONFIG_FILE = "sentence_bert_config.json"
ST_MODEL_CONFIG_FILE = "config_sentence_transformers.json"
POOLING_DIR = "1_Pooling"
NORMALIZE_DIR = "2_Normalize"
DENSE_DIR = "1_Dense"
FORMATS = ("sentence-transformers", "pylate")

#: The three modules of the classic format, in order (the type paths every release since 2.0 resolves).
MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": POOLING_DIR, "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": NORMALIZE_DIR, "type": "sentence_transformers.models.Normalize"},
]


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def pooling_config(hidden_size: int) -> dict[str, Any]:
    """Mean pooling over the attended tokens (special tokens included), as our ``mean`` scorer pools.

    >>> pooling_config(384)["pooling_mode_mean_tokens"], pooling_config(384)["word_embedding_dimension"]
    (True, 384)
    """
    return {
        "word_embedding_dimension": int(hidden_size),
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
        "include_prompt": True,
    }


def model_config(uwe: dict[str, Any]) -> dict[str, Any]:
    """``config_sentence_transformers.json``: cosine similarity, versions (of what is installed) and ``uwe``.

    >>> cfg = model_config({"uwe_format": 1, "scorer": "softmax", "tau": 0.1})
    >>> cfg["similarity_fn_name"], cfg["uwe"]["scorer"], cfg["prompts"]
    ('cosine', 'softmax', {})
    """
    versions = {name: v for name, v in (("sentence_transformers", _version("sentence-transformers")),
                                        ("transformers", _version("transformers")),
                                        ("pytorch", _version("torch"))) if v}
    return {
        "__version__": versions,
        "model_type": "SentenceTransformer",
        "prompts": {},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
        "uwe": {key: uwe.get(key) for key in ("uwe_format", "scorer", "tau", "max_length")},
    }


def pylate_config(uwe: dict[str, Any], max_length: int) -> dict[str, Any]:
    """The PyLate keys that make its ColBERT scoring our ``maxsim`` (see the module docstring).

    >>> cfg = pylate_config({"scorer": "maxsim"}, 128)
    >>> cfg["query_prefix"], cfg["do_query_expansion"], cfg["skiplist_words"], cfg["query_length"]
    ('', False, [], 128)
    """
    return {**model_config(uwe), "similarity_fn_name": "MaxSim", "query_prefix": "", "document_prefix": "",
            "query_length": int(max_length), "document_length": int(max_length),
            "do_query_expansion": False, "attend_to_expansion_tokens": False, "skiplist_words": []}


def write_sentence_transformers_files(
    model_dir: str | Path, hidden_size: int, max_seq_length: int, uwe: dict[str, Any],
    format: str = "sentence-transformers",
) -> list[Path]:
    """Write the sentence-transformers (or PyLate) files into ``model_dir`` (a directory being staged).

    Args:
        model_dir: the saved model's directory (weights and tokenizer already there).
        hidden_size: the backbone's embedding width.
        max_seq_length: the token limit used at inference (what ``Ranker`` cuts at).
        uwe: the content of ``uwe.json`` (scorer, tau, ...), copied into the ``uwe`` block.
        format: ``sentence-transformers`` (mean pooling + normalize) or ``pylate`` (identity Dense, MaxSim).
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    out = Path(model_dir)
    st_config = {"max_seq_length": int(max_seq_length), "do_lower_case": False}  # the tokenizer lower-cases
    if format == "pylate":
        written = {
            out / MODULES_FILE: [MODULES[0], {"idx": 1, "name": "1", "path": DENSE_DIR,
                                              "type": "sentence_transformers.models.Dense"}],
            out / DENSE_DIR / "config.json": {"in_features": int(hidden_size), "out_features": int(hidden_size),
                                              "bias": False,
                                              "activation_function": "torch.nn.modules.linear.Identity"},
            out / ST_MODEL_CONFIG_FILE: pylate_config(uwe, max_seq_length),
        }
    else:
        written = {
            out / MODULES_FILE: MODULES,
            out / POOLING_DIR / "config.json": pooling_config(hidden_size),
            out / ST_MODEL_CONFIG_FILE: model_config(uwe),
        }
    written[out / ST_CONFIG_FILE] = st_config
    for path, content in written.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(strict_json(content, indent=2) + "\n", encoding="utf-8")
    if format == "pylate":
        import torch
        from safetensors.torch import save_file

        save_file({"linear.weight": torch.eye(int(hidden_size))}, str(out / DENSE_DIR / "model.safetensors"))
    else:
        (out / NORMALIZE_DIR).mkdir(exist_ok=True)
    return list(written)
