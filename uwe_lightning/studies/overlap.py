"""Label overlap between the training graphs and the evaluation splits (issue 29, part 2).

Cross-task transfer could come from shared strings rather than from the objective: an evaluation query or
target label that is (nearly) a training text. For every (training graph, evaluation task, split) this module
counts the evaluation query texts and target labels that have, among the graph's training texts:

* ``verbatim``: the same text after strip + case-fold (:func:`~uwe_lightning.data.graphs.normalize_text`);
* ``jaccard``: a token set with Jaccard similarity >= 0.8 (model-free; exact, by prefix filtering);
* ``cosine``: a zero-shot embedding with cosine >= 0.95 (the embedder is passed in: MiniLM for the study).

The graphs and splits are the ones a run trains and evaluates on: the open protocol's own build and task
loaders (:func:`~uwe_lightning.protocol.build_open_protocol`, :meth:`OpenProtocol.task`), nothing re-derived.
:func:`query_flags` gives, per task, which queries overlap any training text, so that an evaluation can be
scored on the overlapping and the non-overlapping queries apart (``views`` of
:func:`~uwe_lightning.workbench.runner.evaluate`; :func:`overlap_views`).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from uwe_lightning.data.graphs import normalize_text
from uwe_lightning.workbench.dataset import RankingDataset
from uwe_lightning.workbench.metric_names import in_percent

JACCARD_THRESHOLD = 0.8
COSINE_THRESHOLD = 0.95
CRITERIA = ("verbatim", "jaccard", "cosine")
_TOKEN = re.compile(r"\w+")

Embedder = Callable[[Sequence[str]], np.ndarray]  # texts -> L2-normalised float32 [n, d]


def tokens(text: str) -> frozenset[str]:
    """The token set of a text: word characters, case-folded.

    >>> sorted(tokens("Manage a Team, manage!"))
    ['a', 'manage', 'team']
    """
    return frozenset(_TOKEN.findall(text.casefold()))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """Token-set Jaccard similarity (1.0 for two empty sets).

    >>> round(jaccard(frozenset("ab"), frozenset("abc")), 4)
    0.6667
    """
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


class JaccardIndex:
    """Exact "is there a training text with token-set Jaccard >= t" by prefix filtering (AllPairs).

    Two sets with Jaccard >= t share a token among the first ``|A| - ceil(t |A|) + 1`` tokens of A in a fixed
    global order (rarest first), and their sizes lie within a factor t of each other; only those candidates
    are compared exactly.
    """

    def __init__(self, texts: Iterable[str], threshold: float = JACCARD_THRESHOLD) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"Jaccard threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.sets = list(dict.fromkeys(tokens(t) for t in texts))
        frequency = Counter(tok for s in self.sets for tok in s)
        self._rank = {tok: (n, tok) for tok, n in frequency.items()}
        self._postings: dict[str, list[int]] = defaultdict(list)
        for i, s in enumerate(self.sets):
            for tok in self._prefix(s):
                self._postings[tok].append(i)

    def _ordered(self, s: frozenset[str]) -> list[str]:
        return sorted(s, key=lambda tok: self._rank.get(tok, (0, tok)))  # unseen tokens first: rarest

    def _prefix(self, s: frozenset[str]) -> list[str]:
        return self._ordered(s)[: len(s) - math.ceil(self.threshold * len(s)) + 1]

    def has_match(self, text: str) -> bool:
        query = tokens(text)
        if not query:
            return False
        low, high = self.threshold * len(query), len(query) / self.threshold
        seen: set[int] = set()
        for tok in self._prefix(query):
            for i in self._postings.get(tok, ()):
                if i in seen:
                    continue
                seen.add(i)
                if low <= len(self.sets[i]) <= high and jaccard(query, self.sets[i]) >= self.threshold:
                    return True
        return False


def max_cosine(queries: np.ndarray, keys: np.ndarray, block: int = 2048) -> np.ndarray:
    """Per query row, the largest dot product with any key row (cosine for L2-normalised rows)."""
    if keys.shape[0] == 0:
        return np.full(queries.shape[0], -np.inf, dtype=np.float32)
    out = np.empty(queries.shape[0], dtype=np.float32)
    for start in range(0, queries.shape[0], block):
        out[start : start + block] = (queries[start : start + block] @ keys.T).max(axis=1)
    return out


class CachedEmbedder:
    """An :data:`Embedder` that embeds each distinct text once: vectors are kept per text in ``cache_dir``
    (one ``.npz`` chunk per call that met new texts), so lists that share texts share the work."""

    def __init__(self, embed: Embedder, cache_dir: str | Path, model_id: str) -> None:
        self.embed = embed
        self.cache_dir = Path(cache_dir) / model_id
        self._store: dict[str, np.ndarray] | None = None

    def _load(self) -> dict[str, np.ndarray]:
        if self._store is None:
            self._store = {}
            for chunk in sorted(self.cache_dir.glob("chunk-*.npz")) if self.cache_dir.is_dir() else []:
                with np.load(chunk, allow_pickle=False) as data:
                    self._store.update(zip(data["texts"].tolist(), data["vectors"], strict=True))
        return self._store

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        from uwe_lightning.io import atomic_write_path, make_dirs

        store = self._load()
        missing = list(dict.fromkeys(t for t in texts if t not in store))
        if missing:
            vectors = np.ascontiguousarray(self.embed(missing), dtype=np.float32)
            digest = hashlib.sha256("\0".join(missing).encode()).hexdigest()[:24]
            make_dirs(self.cache_dir)
            with atomic_write_path(self.cache_dir / f"chunk-{digest}.npz", suffix=".npz") as tmp, open(tmp, "wb") as fh:
                np.savez(fh, texts=np.array(missing, dtype=str), vectors=vectors)
            store.update(zip(missing, vectors, strict=True))
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([store[t] for t in texts])


def sentence_transformer_embedder(model_path: str | Path, batch_size: int = 128) -> Embedder:
    """Zero-shot embeddings of a sentence-transformers model directory (MiniLM), L2-normalised."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_path), device="cpu")

    def embed(texts: Sequence[str]) -> np.ndarray:
        return model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                            show_progress_bar=False)

    return embed


class TrainingSide:
    """The texts of one training graph, ready for the three overlap tests."""

    def __init__(self, name: str, texts: Sequence[str], embed: Embedder | None,
                 jaccard_threshold: float = JACCARD_THRESHOLD, cosine_threshold: float = COSINE_THRESHOLD) -> None:
        self.name = name
        self.texts = list(texts)
        self.normalized = {normalize_text(t) for t in self.texts}
        self.jaccard = JaccardIndex(self.texts, jaccard_threshold)
        self.cosine_threshold = cosine_threshold
        self.vectors = embed(self.texts) if embed is not None else None

    def flags(self, texts: Sequence[str], vectors: np.ndarray | None) -> dict[str, np.ndarray]:
        """Per criterion, a bool per text: does it have that kind of match among this graph's texts."""
        out = {
            "verbatim": np.fromiter((normalize_text(t) in self.normalized for t in texts), bool, len(texts)),
            "jaccard": np.fromiter((self.jaccard.has_match(t) for t in texts), bool, len(texts)),
        }
        if vectors is not None and self.vectors is not None:
            out["cosine"] = max_cosine(vectors, self.vectors) >= self.cosine_threshold
        return out


def _count(flags: np.ndarray) -> dict[str, Any]:
    n = int(flags.size)
    hits = int(flags.sum())
    return {"count": hits, "share": hits / n if n else None}


def overlap_table(
    graphs: Mapping[str, Sequence[str]],
    datasets: Mapping[tuple[str, str], RankingDataset],
    embed: Embedder | None = None,
    jaccard_threshold: float = JACCARD_THRESHOLD,
    cosine_threshold: float = COSINE_THRESHOLD,
    progress: Callable[[str], None] | None = None,
    cosine_max_queries: int | None = None,
) -> tuple[list[dict[str, Any]], dict[tuple[str, str], dict[str, Any]]]:
    """Rows (graph, task, split, side) with counts and shares per criterion, and per (task, split) the query
    flags against ALL graphs together (a query overlaps when any graph has a match): the input of
    :func:`overlap_views`. ``graphs``: graph name -> its training texts; ``datasets``: (task, split) -> split.
    ``cosine_max_queries``: the cosine test on the fixed random query subset of that size only (the WorkBench
    runner's subset with seed 0, the one a run tests on); its rows say ``n`` of the subset."""
    from uwe_lightning.workbench.runner import subsample_indices

    say = progress or (lambda message: None)
    sides = {}
    for name, texts in graphs.items():
        say(f"training graph {name}: {len(texts):,} texts")
        sides[name] = TrainingSide(name, texts, embed, jaccard_threshold, cosine_threshold)
    rows: list[dict[str, Any]] = []
    query_flags: dict[tuple[str, str], dict[str, Any]] = {}
    for (task, split), ds in datasets.items():
        for side, texts in (("query", ds.queries), ("target", ds.targets)):
            subset = subsample_indices(len(texts), cosine_max_queries, 0) if side == "query" else None
            cos_rows = np.arange(len(texts)) if subset is None else np.asarray(subset, dtype=np.int64)
            say(f"{task}/{split} {side} texts: {len(texts):,}" + ("" if subset is None else f" (cosine: {len(subset):,})"))
            union: dict[str, np.ndarray] = {}
            for name, graph in sides.items():
                flags = graph.flags(texts, None)
                counts = {c: _count(f) for c, f in flags.items()}
                if embed is not None:
                    cos_texts = [texts[i] for i in cos_rows]
                    flags["cosine"] = graph.flags(cos_texts, embed(cos_texts))["cosine"]
                    counts["cosine"] = {**_count(flags["cosine"]), "n": len(cos_texts)}
                rows.append({"graph": name, "task": task, "split": split, "side": side, "n": len(texts), **counts})
                for c, f in flags.items():
                    union[c] = f if c not in union else union[c] | f
            counts = {c: _count(f) for c, f in union.items()}
            if "cosine" in counts:
                counts["cosine"]["n"] = int(cos_rows.size)
            rows.append({"graph": "+".join(graphs), "task": task, "split": split, "side": side, "n": len(texts),
                         **counts})
            if side == "query":
                query_flags[(task, split)] = {"queries": list(texts), **union}
                if "cosine" in union:
                    query_flags[(task, split)]["cosine_queries"] = [texts[i] for i in cos_rows]
    return rows, query_flags


def overlap_views(flags: Mapping[str, Mapping[str, Any]], criterion: str = "jaccard",
                  ) -> dict[str, Callable[[str, RankingDataset], RankingDataset | None]]:
    """Views ``overlap:<criterion>`` / ``no_overlap:<criterion>`` for :func:`~uwe_lightning.workbench.runner.evaluate`: per task name,
    the queries that have / lack a match among the training texts. ``flags[task]`` holds ``queries`` (the
    split's query texts) and, per criterion, a bool per query (:func:`overlap_table`); a subsampled split is
    looked up by query text."""

    def view(want: bool) -> Callable[[str, RankingDataset], RankingDataset | None]:
        def restrict(task: str, ds: RankingDataset) -> RankingDataset | None:
            if task not in flags:
                return None
            queries = flags[task].get(f"{criterion}_queries", flags[task]["queries"])
            by_text = dict(zip(queries, flags[task][criterion], strict=True))
            if any(q not in by_text for q in ds.queries):
                raise ValueError(f"{task}: the {criterion} overlap flags do not cover every query evaluated "
                                 "(flags of another query subset?)")
            keep = [bool(by_text[q]) == want for q in ds.queries]
            return select_queries(ds, keep)

        return restrict

    return {f"overlap:{criterion}": view(True), f"no_overlap:{criterion}": view(False)}


def select_queries(ds: RankingDataset, keep: Sequence[bool]) -> RankingDataset:
    """The split with only the kept queries (targets unchanged)."""
    rows = [i for i, k in enumerate(keep) if k]
    return RankingDataset(ds.task, ds.split, [ds.queries[i] for i in rows], list(ds.targets),
                          [list(ds.labels[i]) for i in rows],
                          exclude=None if ds.exclude is None else [ds.exclude[i] for i in rows],
                          meta={**ds.meta})


def overlap_markdown(rows: Sequence[Mapping[str, Any]], command: str, criteria: Sequence[str] = CRITERIA) -> str:
    """The table as markdown: one line per (task, split, side, graph), share (count) per criterion."""
    present = [c for c in criteria if any(c in r for r in rows)]
    lines = [
        "# Label overlap: evaluation queries and targets among the training texts (issue 29, part 2)",
        "",
        f"Made by `{command}`.",
        "",
        "Share (count) of the evaluation texts that have a match among the graph's training texts: "
        "`verbatim` = equal after strip + case-fold; `jaccard` = token-set Jaccard >= "
        f"{JACCARD_THRESHOLD}; `cosine` = zero-shot MiniLM cosine >= {COSINE_THRESHOLD}. "
        "Counts are over the split's rows (queries) or its target space (targets). Graph `S` is the skill side "
        "(the ESCO preferredLabels, trained as the skill rows of every graph), `J`, `V`, `A` the text sides, "
        "`S+J+V+A` any of them. "
        "`of n`: the cosine test ran on the fixed random subset of n queries that a run tests on (seed 0).",
        "",
        "| task | split | side | n | graph | " + " | ".join(present) + " |",
        "|---|---|---|---:|---|" + "---:|" * len(present),
    ]
    for r in rows:
        cells = []
        for c in present:
            cell = r.get(c)
            if cell is None or cell["share"] is None:
                cells.append("")
                continue
            of = f" of {cell['n']:,}" if cell.get("n", r["n"]) != r["n"] else ""
            cells.append(f"{100 * cell['share']:.1f} % ({cell['count']:,}{of})")
        lines.append(f"| {r['task']} | {r['split']} | {r['side']} | {r['n']:,} | {r['graph']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------
# The study on the data pack
# ---------------------------------------------------------------------------------------------------------

#: The tasks a run validates / tests on (conf/train.yaml; SkillSim is not in the pack).
SPLIT_TASKS = {
    "val": ("Job2Skill@open", "Skill2Job@open", "SkillNorm@heldout", "SkillExtr-H", "SkillExtr-T", "JobNorm"),
    "test": ("Job2Skill", "Skill2Job", "JobNorm", "SkillNorm@heldout", "SkillExtr-T", "SkillExtr-H"),
}


def protocol_overlap(data_dir: str | None, splits: Sequence[str], embed: Embedder | None,
                     progress: Callable[[str], None] | None = None,
                     cosine_max_queries: int | None = None) -> dict[str, Any]:
    """The overlap table of the open protocol (default fractions) for ``splits``: graphs, tasks and splits
    exactly as a run builds them; graph ``S`` is the skill side (every preferredLabel is a training input). Returns ``{"graphs", "rows", "query_flags"}`` (flags keyed "task/split")."""
    from uwe_lightning.protocol import build_open_protocol

    protocol = build_open_protocol(data_dir)
    # S: the skill side, the preferredLabels every graph trains on (all of them, as the skill rows of the loss)
    graphs = {"S": list(protocol.vocab.labels), **{name: graph.texts for name, graph in protocol.graphs.items()}}
    datasets = {(task, split): protocol.task(task).load(split, data_dir)
                for split in splits for task in SPLIT_TASKS[split]}
    rows, flags = overlap_table(graphs, datasets, embed, progress=progress, cosine_max_queries=cosine_max_queries)
    return {
        "graphs": {name: {"texts": len(texts)} for name, texts in graphs.items()},
        "protocol": {k: protocol.meta[k] for k in ("val_fraction", "altlabel_train_fraction")},
        "rows": rows,
        "query_flags": {f"{task}/{split}": value for (task, split), value in flags.items()},
    }


def flags_for_split(query_flags: Mapping[str, Mapping[str, Any]], split: str) -> dict[str, Mapping[str, Any]]:
    """The ``query_flags`` of one split keyed by task name (the input of :func:`overlap_views`)."""
    suffix = f"/{split}"
    return {key.removesuffix(suffix): value for key, value in query_flags.items() if key.endswith(suffix)}


def views_markdown(results: Mapping[str, Any], criteria: Sequence[str], command: str,
                   baseline: Mapping[str, Any] | None = None) -> str:
    """MAP on all / overlapping / non-overlapping queries of each task, from an evaluation with overlap views.

    With ``baseline`` (the same evaluation of another model, e.g. the zero-shot one), each cell also shows the
    difference to it on the same queries: a gain that sits on the overlapping queries is what shared strings
    would give, one that holds on the non-overlapping queries is not."""
    results = in_percent(results)
    base = None if baseline is None else in_percent(baseline)
    against = "" if base is None else f"; [in brackets: minus {base.get('model', 'the baseline')} on the same queries]"
    lines = [
        f"# MAP on the overlapping and the non-overlapping queries ({results.get('model', 'model')}, "
        f"{results.get('split')} split, {results.get('max_queries')} queries per task)",
        "",
        f"Made by `{command}`.",
        "",
        "A query overlaps when some training text of any graph (J, V, A) matches it (criterion in the header)"
        f"{against}.",
        "",
        "| task | all: MAP (n) | " + " | ".join(f"{c}: overlap MAP (n) | {c}: no overlap MAP (n)" for c in criteria)
        + " |",
        "|---|---:|" + "---:|---:|" * len(criteria),
    ]

    def row_of(res: Mapping[str, Any] | None, view: str | None, task: str) -> Mapping[str, Any] | None:
        if res is None:
            return None
        return res["tasks"].get(task) if view is None else res.get("views", {}).get(view, {}).get("tasks", {}).get(task)

    def cell(view: str | None, task: str) -> str:
        row, ref = row_of(results, view, task), row_of(base, view, task)
        if row is None:
            return ""
        diff = "" if ref is None or ref["n_queries"] != row["n_queries"] else f" [{row['map'] - ref['map']:+.2f}]"
        return f"{row['map']:.2f}{diff} ({row['n_queries']:,})"

    for task in results["tasks"]:
        cells = [cell(None, task)]
        for c in criteria:
            cells += [cell(f"overlap:{c}", task), cell(f"no_overlap:{c}", task)]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
