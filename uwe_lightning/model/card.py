"""The model card (``README.md``) of a saved UWE model: what it is, how to load it, where it came from.

Written by :meth:`~uwe_lightning.model.pretrained.UWEModel.save_pretrained` from ``uwe.json``; the training run
rewrites it with the test results once the exported model has been tested. The metadata block is
``huggingface_hub``'s :class:`~huggingface_hub.ModelCardData` (what the Hub and sentence-transformers index:
``base_model``, ``license``, ``datasets``, ``tags``, ``pipeline_tag``, ``library_name``, ``language`` and a
``model-index`` holding only the numbers this run measured), rendered through
:meth:`huggingface_hub.ModelCard.from_template`; ``ModelCard.load(<dir>/README.md)`` reads it back. The card
names no local path: a backbone is its hub id or its directory's name.
"""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import Any

CARD_FILE = "README.md"

#: The paper's setup, for the card's "deviations" list (paper section 5 and Appendix A).
PAPER_BACKBONE = "sentence-transformers/all-mpnet-base-v2"
PAPER_SKILLS_PER_STEP = 512

_TOKEN_LEVEL = {
    "maxsim": "MaxSim late interaction (each query token's best-matching target token, averaged)",
    "softmax": "two-sided soft late interaction (softmax-weighted token matches, both directions, temperature tau)",
    "softmax_ymean": "soft late interaction against the mean-pooled target (temperature tau)",
}

#: The card's body below the metadata block (jinja2, through ``ModelCard.from_template``).
_TEMPLATE = "---\n{{ card_data }}\n---\n\n{{ body }}\n"

#: An absolute POSIX or home path (``/a/b``, ``~/a``) or a Windows one (``C:\\a``); the card never shows one.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])(?:~/|[A-Za-z]:\\|/)(?:[^\s/\\`'\"|),]+[/\\])+([^\s/\\`'\"|),]*)")


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


def without_local_paths(text: str) -> str:
    """``text`` with every absolute path cut to its last component (a card is published; this machine's
    directories are nobody's business and wrong on the next one).

    >>> without_local_paths("put test.csv into /work/shared/uwe-data/workbench/skillsim, or ~/x/y.ckpt; J/V/A")
    'put test.csv into skillsim, or y.ckpt; J/V/A'
    """
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1) or "<dir>", text)


def backbone_label(prov: dict[str, Any]) -> str:
    """The backbone as a card names it: its hub id, else its directory's (or hub id's) last component.

    >>> backbone_label({"backbone": "/home/me/models/my-encoder"})
    'my-encoder'
    >>> backbone_label({"backbone": "minilm", "base_model": "sentence-transformers/all-MiniLM-L6-v2"})
    'sentence-transformers/all-MiniLM-L6-v2'
    """
    if prov.get("base_model"):
        return str(prov["base_model"])
    backbone = prov.get("backbone")
    return PurePath(str(backbone)).name if backbone else "a backbone not recorded in uwe.json"


def card_data(config: dict[str, Any], evaluations: list[dict[str, Any]] | None = None, pylate: bool = False):
    """The card's metadata (:class:`huggingface_hub.ModelCardData`) for a model whose ``uwe.json`` is
    ``config``; ``evaluations``: the measured test rows, scores in percent (:func:`uwe_lightning.workbench.report.model_index_rows`),
    which become the ``model-index``. Only what the run recorded goes in; a field it cannot know is left out."""
    from huggingface_hub import EvalResult, ModelCardData

    prov = dict(config.get("provenance") or {})
    data = dict(prov.get("training_data") or {})
    esco = bool(data.get("esco", True))  # models saved before this field was recorded were trained on ESCO
    scorer = config.get("scorer", "mean")
    tags = ["uwe_lightning", "unified-work-embeddings", "sentence-transformers", "sentence-similarity",
            *(["esco"] if esco else []), "skills", "job-titles",
            *(["ColBERT", "PyLate"] if pylate else []), *(["late-interaction"] if scorer != "mean" else [])]
    results = []
    for row in evaluations or []:
        for metric, name in (("map", "MAP"), ("rp@10", "RP@10")):
            if row.get(metric) is None:
                continue
            results.append(EvalResult(
                task_type="sentence-similarity", task_name=f"{row['task']} ({row['what']})",
                dataset_type=row["dataset_type"], dataset_name=f"{row['benchmark']} {row['task']}",
                dataset_config=row["task"], dataset_split=row["split"], dataset_args=row.get("args") or None,
                metric_type=metric, metric_name=f"{name} (%)", metric_value=round(float(row[metric]), 2),  # rows in percent
            ))
    datasets = [d["hub_id"] for d in prov.get("datasets") or [] if d.get("hub_id")]
    return ModelCardData(
        base_model=prov.get("base_model") or None,
        license=prov.get("license") or None,
        datasets=datasets or None,
        language=["en"],
        library_name="PyLate" if pylate else "sentence-transformers",
        pipeline_tag="sentence-similarity",
        tags=tags,
        model_name=model_name(config) if results else None,
        eval_results=results or None,
    )


def model_name(config: dict[str, Any]) -> str:
    """``UWE <backbone> (<scorer>)``: the model-index name (the Hub requires one beside results).

    >>> model_name({"scorer": "softmax", "provenance": {"backbone": "minilm", "base_model": "org/mini"}})
    'UWE mini (softmax)'
    """
    prov = dict(config.get("provenance") or {})
    return f"UWE {backbone_label(prov).rsplit('/', 1)[-1]} ({config.get('scorer', 'mean')})"


def render_card(config: dict[str, Any], test_markdown: str | None = None, pylate: bool = False,
                evaluations: list[dict[str, Any]] | None = None) -> str:
    """The card (metadata block + markdown) for a model whose ``uwe.json`` is ``config``; ``test_markdown``: its
    test table; ``evaluations``: the same results as ``model-index`` rows; ``pylate``: the directory is in
    PyLate's (ColBERT) format.

    >>> card = render_card({"scorer": "softmax", "tau": 0.1, "provenance": {"backbone": "minilm", "step": 600}})
    >>> "scorer: `softmax`" in card and "mean-pooled approximation" in card
    True
    """
    from huggingface_hub import ModelCard

    body = without_local_paths("\n".join(_body(config, test_markdown, pylate)))
    card = ModelCard.from_template(card_data(config, evaluations, pylate), template_str=_TEMPLATE, body=body)
    return str(card).rstrip("\n") + "\n"


def _val_score(val: dict[str, Any]) -> str:
    """The selection score: percent (``val/macro/map``), or a fraction in a model saved before scores were percent
    (``val/macro_map``)."""
    return f"{val['value']:.4f}" if str(val.get("name", "")).endswith("_map") else f"{val['value']:.2f} %"


def _body(config: dict[str, Any], test_markdown: str | None, pylate: bool) -> list[str]:
    scorer, tau = config.get("scorer", "mean"), config.get("tau")
    prov = dict(config.get("provenance") or {})
    val = prov.get("val_metric") or {}
    token_level = scorer != "mean"
    data = dict(prov.get("training_data") or {})
    vocab = dict(data.get("vocabulary") or {})
    esco = bool(data.get("esco", True))
    skills = "ESCO skills" if esco else f"the skills of the vocabulary `{vocab.get('name', 'custom')}`"
    checkpoint = prov.get("source_checkpoint")
    lines = [
        f"# {model_name(config)}",
        "",
        f"A unified work encoder: one encoder for job titles, vacancy sentences and {skills}, fine-tuned from "
        f"{_value(backbone_label(prov))} with uwe_lightning (Unified Work Embeddings) to rank skills for jobs, "
        "jobs for skills, and to normalise and extract skills.",
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
        "ranker = Ranker.from_pretrained(\"<this dir or hub id>\")  # the model's own scorer (uwe.json)",
        "space = ranker.index([\"Python\", \"nursing\", \"drive a truck\"])",
        "scores, ids = ranker.rank([\"data engineer\"], space, k=2)",
        "UWEModel.from_pretrained(\"<this dir or hub id>\").score([\"data engineer\"], [\"Python\"])",
        "```",
        *(["```python",
           "from pylate import models  # pip install 'uwe_lightning[pylate]'",
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
        "WorkRB (`pip install 'uwe_lightning[workrb]'`), with this model's own scorer:",
        "```python",
        "import workrb",
        "from uwe_lightning.integrations.workrb import UWEWorkRBModel",
        "model = UWEWorkRBModel(\"<this dir>\")",
        "workrb.evaluate(model, tasks=[...])  # or: python -m uwe_lightning.evaluate runner=workrb "
        "model=trained model.backbone=<this dir>",
        "```",
        "",
        "## Training",
        *training_lines(prov),
        f"- exported step: {_value(prov.get('step'))}"
        + (f", selected on {_value(val.get('name'))} = {_val_score(val)}" if val.get("value") is not None else ""),
        f"- source checkpoint: {_value(PurePath(str(checkpoint)).name if checkpoint else None)}",
        f"- uwe_lightning format: {_value(config.get('uwe_format'))}",
        *training_data_lines(data),
        *dataset_lines(prov.get("datasets") or []),
        "",
        *deviation_lines(prov, esco),
    ]
    if test_markdown:
        lines += [f"## Test results ({'WorkBench' if esco else 'held-out edges of the training graph'})", "",
                  "Measured by this training run on the exported model (the `model-index` above holds the same "
                  "numbers, in %).", "", test_markdown.strip(), ""]
    lines += [
        "## Limits",
        ("- English only, ESCO skill vocabulary (1.2.0); other taxonomies need re-indexing and were not tested."
         if esco else f"- Trained on a custom vocabulary ({vocab.get('skills', '?')} skills); not evaluated on "
         "ESCO / WorkBench unless a table above says so."),
        ("- Numbers depend on the evaluation protocol (open-protocol splits); see the uwe_lightning docs." if esco
         else "- Numbers are on texts held out of the training graph (no held-out text's edge was trained on)."),
        "- A model trained at CPU scale (few steps, small batches) is a research artefact, not a product model.",
        "",
    ]
    return lines


def training_lines(prov: dict[str, Any]) -> list[str]:
    """The training configuration in words: backbone, data protocol, loss, steps, skills per step.

    >>> training_lines({"backbone": "minilm", "training": {"loss": "mtm", "steps": 600, "skills_per_step": 64}})[2]
    '- loss: `mtm`; 600 steps of 64 skills each'
    """
    train = dict(prov.get("training") or {})
    lines = [f"- backbone: {_value(backbone_label(prov))}", f"- training data protocol: {_value(prov.get('data'))}"]
    if train:
        steps = f"{train['steps']:,} steps" if train.get("steps") is not None else "steps not recorded"
        per = f" of {train['skills_per_step']:,} skills each" if train.get("skills_per_step") else ""
        lines.append(f"- loss: {_value(train.get('loss'))}; {steps}{per}")
        extra = [f"{k.replace('_', ' ')} `{train[k]}`" for k in ("lr", "warmup_ratio", "max_length", "sampling",
                                                                   "seed") if train.get(k) is not None]
        if extra:
            lines.append("- " + ", ".join(extra))
    return lines


def dataset_lines(datasets: list[dict[str, Any]]) -> list[str]:
    """The public sources the training data was built from, each with its origin and license.

    >>> dataset_lines([{"name": "SkillSkape", "hub_id": "jjzha/skillskape", "license": "MIT"}])
    ['- source: SkillSkape (`jjzha/skillskape`), license: MIT']
    """
    return [f"- source: {d['name']}" + (f" (`{d['hub_id']}`)" if d.get("hub_id") else "")
            + (f", license: {d['license']}" if d.get("license") else "") for d in datasets]


def deviation_lines(prov: dict[str, Any], esco: bool) -> list[str]:
    """Where this model's training differs from the paper's, as far as the run recorded it.

    >>> print(deviation_lines({"base_model": "sentence-transformers/all-MiniLM-L6-v2"}, True)[2])
    - backbone `sentence-transformers/all-MiniLM-L6-v2` instead of the paper's `sentence-transformers/all-mpnet-base-v2`
    """
    train = dict(prov.get("training") or {})
    lines = ["## Deviations from the paper", ""]
    if prov.get("base_model") != PAPER_BACKBONE:
        lines.append(f"- backbone {_value(backbone_label(prov))} instead of the paper's `{PAPER_BACKBONE}`")
    if not esco:
        lines.append("- trained on a custom graph, not on the paper's ESCO-grounded data")
    elif "OpenProtocol" in str(prov.get("data", "")):
        lines.append("- the open protocol: training data built only from the public sources above, not the paper's "
                     "104k scraped vacancies, LLM-generated titles, synthetic sentences and paraphrases (not "
                     "public); the full SkillNorm test is replaced by SkillNorm@heldout")
    if train.get("skills_per_step") and int(train["skills_per_step"]) != PAPER_SKILLS_PER_STEP:
        lines.append(f"- {train['skills_per_step']:,} skills per step instead of the paper's {PAPER_SKILLS_PER_STEP}")
    if len(lines) == 2:
        lines.append("- none recorded")
    return [*lines, ""]


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
