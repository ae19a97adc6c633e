"""The model card (``README.md``) of a saved UWE model: what it is, how to load it, where it came from.

Written by :meth:`~uwe_lightning.model.pretrained.UWEModel.save_pretrained` from ``uwe.json``; the training run
rewrites it with the test table once the exported model has been tested. The YAML front matter is what model
hubs index (library, pipeline, tags).
"""

from __future__ import annotations

from typing import Any

CARD_FILE = "README.md"

_TOKEN_LEVEL = {
    "maxsim": "MaxSim late interaction (each query token's best-matching target token, averaged)",
    "softmax": "two-sided soft late interaction (softmax-weighted token matches, both directions, temperature tau)",
    "softmax_ymean": "soft late interaction against the mean-pooled target (temperature tau)",
}


def _value(value: Any) -> str:
    return "-" if value is None else f"`{value}`"


def scorer_text(scorer: str, tau: float | None) -> str:
    """One sentence on how the model scores a (query, target) pair.

    >>> scorer_text("mean", None)
    'cosine of the mean-pooled token embeddings (`mean`)'
    >>> scorer_text("softmax", 0.1)[:40]
    'two-sided soft late interaction (softmax'
    """
    if scorer == "mean":
        return "cosine of the mean-pooled token embeddings (`mean`)"
    what = _TOKEN_LEVEL.get(scorer, f"scorer `{scorer}`")
    return f"{what} (`{scorer}`" + (f", tau = {tau:g})" if tau is not None else ")")


def render_card(config: dict[str, Any], test_markdown: str | None = None, pylate: bool = False) -> str:
    """The card's markdown for a model whose ``uwe.json`` is ``config``; ``test_markdown``: its test table;
    ``pylate``: the directory is in PyLate's (ColBERT) format.

    >>> card = render_card({"scorer": "softmax", "tau": 0.1, "provenance": {"backbone": "minilm", "step": 600}})
    >>> "scorer: `softmax`" in card and "mean-pooled approximation" in card
    True
    """
    scorer, tau = config.get("scorer", "mean"), config.get("tau")
    prov = dict(config.get("provenance") or {})
    val = prov.get("val_metric") or {}
    token_level = scorer != "mean"
    data = dict(prov.get("training_data") or {})
    vocab = dict(data.get("vocabulary") or {})
    esco = bool(data.get("esco", True))  # models saved before this field was recorded were trained on ESCO
    skills = "ESCO skills" if esco else f"the skills of the vocabulary `{vocab.get('name', 'custom')}`"
    lines = [
        "---",
        f"library_name: {'PyLate' if pylate else 'sentence-transformers'}",
        "pipeline_tag: sentence-similarity",
        f"tags: [uwe_lightning, unified-work-embeddings, {'esco, ' if esco else ''}skills, job-titles, "
        "sentence-transformers]",
        "language: [en]",
        "---",
        "",
        f"# UWE model ({prov.get('backbone', 'unknown backbone')})",
        "",
        f"A unified work encoder: one encoder for job titles, vacancy sentences and {skills}, trained with "
        "uwe_lightning (Unified Work Embeddings) to rank skills for jobs, jobs for skills, and to normalise and "
        "extract skills.",
        "",
        "## Scoring",
        f"- scorer: `{scorer}`" + (f", tau: `{tau:g}`" if tau is not None else ""),
        f"- how it scores a pair: {scorer_text(scorer, tau)}",
        f"- inference token limit: {_value(config.get('max_length')) if config.get('max_length') else 'the backbone limit'}"
        f"; trained with {_value(config.get('train_max_length'))} tokens per text",
        "",
        "## Load it",
        "```python",
        "from uwe_lightning import Ranker, UWEModel",
        "ranker = Ranker.from_pretrained(\"<this dir>\")          # the model's own scorer (uwe.json)",
        "space = ranker.index([\"Python\", \"nursing\", \"drive a truck\"])",
        "scores, ids = ranker.rank([\"data engineer\"], space, k=2)",
        "UWEModel.from_pretrained(\"<this dir>\").score([\"data engineer\"], [\"Python\"])",
        "```",
        *(["```python",
            "from pylate import models",
            "model = models.ColBERT(\"<this dir>\")  # MaxSim; divide by the query length to get our maxsim",
            "```",
            "PyLate settings written for exact parity: identity projection, no prefixes, no query expansion, "
            "query and document length = our token limit, empty skiplist."] if pylate else
          ["```python",
           "from sentence_transformers import SentenceTransformer",
           "SentenceTransformer(\"<this dir>\").encode([\"data engineer\"])  # mean pooling + normalize, cosine",
           "```"]),
        ("" if pylate else
         "sentence-transformers gives the **mean-pooled approximation** of this model: its scorer "
         f"`{scorer}` works on token embeddings, which only `Ranker` / `UWEModel` (or a late-interaction "
         "library) use. Rank with `Ranker` to get the numbers below."
         if token_level else
         "sentence-transformers gives exactly this model's embeddings (mean pooling + normalize, cosine)."),
        "",
        "## Where it came from",
        f"- backbone: {_value(prov.get('backbone'))}",
        f"- training data protocol: {_value(prov.get('data'))}",
        f"- exported step: {_value(prov.get('step'))}"
        + (f", selected on {_value(val.get('name'))} = {val['value']:.4f}" if val.get("value") is not None else ""),
        f"- source checkpoint: {_value(prov.get('source_checkpoint'))}",
        f"- uwe_lightning format: {_value(config.get('uwe_format'))}",
        *training_data_lines(data),
        "",
    ]
    if test_markdown:
        lines += [f"## Test results ({'WorkBench' if esco else 'held-out edges of the training graph'})", "",
                  test_markdown.strip(), ""]
    lines += [
        "## Limits",
        ("- English only, ESCO skill vocabulary (1.2.0); other taxonomies need re-indexing and were not tested."
         if esco else f"- Trained on a custom vocabulary ({vocab.get('skills', '?')} skills); not evaluated on "
         "ESCO / WorkBench unless a table above says so."),
        ("- Numbers depend on the evaluation protocol (open-protocol splits); see the uwe_lightning README." if esco
         else "- Numbers are on texts held out of the training graph (no held-out text's edge was trained on)."),
        "- A model trained at CPU scale (few steps, small batches) is a research artefact, not a product model.",
        "",
    ]
    return "\n".join(lines)


def training_data_lines(data: dict[str, Any]) -> list[str]:
    """The vocabulary and per-graph edge counts a model was trained on (and held out), as card lines.

    >>> training_data_lines({"vocabulary": {"name": "skills", "skills": 3}, "graphs": {"J": {"texts": 2, "edges": 4}}})
    ['- skill vocabulary: `skills` (3 skills)', '- graph J: 2 texts, 4 edges']
    """
    if not data:
        return []
    vocab = data.get("vocabulary") or {}
    lines = [f"- skill vocabulary: `{vocab.get('name')}` ({vocab.get('skills', 0):,} skills)"]
    lines += [f"- graph {name}: {g.get('texts', 0):,} texts, {g.get('edges', 0):,} edges"
              for name, g in (data.get("graphs") or {}).items()]
    lines += [f"- held out for {split}: {g.get('texts', 0):,} texts, {g.get('edges', 0):,} edges"
              for split, g in (data.get("heldout") or {}).items()]
    return lines
