"""Graphs from edge files, and :class:`EdgeFileSource`: training on your own skill-centred graphs.

The generic edge format. Any graph can be given as a file of (skill, text) rows, so users can train on their own data (e.g. the
paper's synthetic titles / sentences / paraphrases):

* format by suffix: ``.csv``, ``.tsv`` (or ``.tab``), ``.parquet``, ``.jsonl`` (or ``.ndjson``; one JSON
  object per line);
* required columns / keys: ``skill`` and ``text``; other columns are ignored;
* ``skill``: a skill URI of the vocabulary, or its preferredLabel (matched after whitespace strip and
  case-fold);
* ``text``: the free text linked to that skill (whitespace-stripped; must not be empty);
* one row per edge; a text linked to several skills appears in several rows. Texts are merged when equal
  after strip + case-fold (the first spelling is kept) and duplicate edges are merged.

Errors name the file, the row (1-based data row, header not counted) and the field; unknown skills either
raise (``on_unknown="error"``) or are dropped and counted in ``graph.meta`` (``on_unknown="drop"``). An edge file
has no manifest to be checked against, so it is parsed strictly (:func:`uwe_lightning.io.read_table`): a CSV/TSV
row with fewer or more fields than the header (a text with an unquoted comma, a cut line) or a JSONL line whose
keys differ from the first line's is an error naming the row, never padded or cut.

Besides a file, an edge source may be a ``datasets`` table (Arrow, memory-mapped; columns ``skill`` and ``text``,
the same checks):

* a ``datasets.Dataset`` (or a ``DatasetDict`` with a ``train`` split or a single split), from Python;
* a directory written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``;
* ``hf:csv:<files>``, ``hf:json:<files>``, ``hf:parquet:<files>``: ``datasets.load_dataset(<builder>,
  data_files=<files>)`` over local files (a glob or comma-separated list: sharded edge files; CSV cells are read as
  strings, with no NA guessing, but the field counts are not checked as strictly as by the file reader);
* ``hf:<hub id>`` or ``hf:<hub id>:<split>`` (default ``train``): a hub dataset, downloaded only when the user
  allows it with ``UWE_ALLOW_HUB=1`` (otherwise a one-line error; nothing is fetched by default).

Example (CSV)::

    skill,text
    manage a team,Team Lead
    http://data.europa.eu/esco/skill/ccd0a1d9-afda-43d9-b901-96344886e14d,python developer
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from uwe_lightning.data.graphs import GRAPHS, BipartiteGraph, SkillVocabulary, load_vocabulary, normalize_text
from uwe_lightning.io import ALLOW_HUB_ENV, ConfigError, DataError, hub_allowed, read_table

EDGE_COLUMNS = ("skill", "text")
ON_UNKNOWN = ("error", "drop")
#: What a run on your own graph validates, selects its checkpoint and tests on (``data.source.evaluate_on``).
EVALUATE_ON = ("own", "workbench")
#: The task of the ``own`` suite that scores held-out edges (:mod:`uwe_lightning.workbench.tasks.edges`).
OWN_TASK = "edges"
HOLDOUT_KEYS = ("graph", "val", "test", "seed", "val_file", "test_file")
#: Edge sources read through ``datasets``: ``hf:<builder>:<local files>`` or ``hf:<hub id>[:<split>]``.
HF_PREFIX = "hf:"
HF_BUILDERS = ("csv", "json", "parquet")

log = logging.getLogger(__name__)


def _cell(value: object) -> str:
    """A cell as stripped text; missing values (None/NaN) become empty."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value).strip()


def is_dataset(source: object) -> bool:
    """Whether ``source`` is a ``datasets.Dataset`` / ``DatasetDict`` (without importing ``datasets``)."""
    return type(source).__module__.split(".")[0] == "datasets" and hasattr(source, "column_names")


def _single_split(table: Any, where: str, split: str = "train") -> Any:
    """The ``Dataset`` of ``table``: itself, or its ``split`` (or only) split when it is a ``DatasetDict``."""
    if not isinstance(table.column_names, dict):  # a Dataset
        return table
    if split in table:
        return table[split]
    if len(table) == 1:
        return next(iter(table.values()))
    raise DataError(f"{where}: a DatasetDict with splits {sorted(table)} and no {split!r}; give one split, "
                    f"e.g. dataset_dict['{sorted(table)[0]}']")


def _load_hf(spec: str) -> tuple[Any, str]:
    """(the table, a default graph name) of an ``hf:`` edge source (module docstring), by ``datasets.load_dataset``."""
    from datasets import load_dataset

    head, _, rest = spec[len(HF_PREFIX):].partition(":")
    try:
        if head in HF_BUILDERS:
            if not rest:
                raise DataError(f"edge source {spec!r}: name the files, e.g. hf:{head}:edges/*.{head}")
            files = [part for part in rest.split(",") if part]
            options = {"converters": dict.fromkeys(EDGE_COLUMNS, str), "keep_default_na": False} if head == "csv" else {}
            name = Path(files[0]).name.split(".")[0].replace("*", "") or "edges"
            return load_dataset(head, data_files=files, split="train", **options), name
        if not hub_allowed():
            raise DataError(f"edge source {spec!r} is a hub dataset: set {ALLOW_HUB_ENV}=1 to download it, or give "
                            "a local file or a directory written by Dataset.save_to_disk")
        return load_dataset(head, split=rest or "train"), head.rstrip("/").split("/")[-1]
    except DataError:
        raise
    except Exception as err:  # missing files, no network, an unknown dataset or split: name the source
        raise DataError(f"edge source {spec!r}: datasets.load_dataset failed: {' '.join(str(err).split())}") from err


def read_edge_table(source: Any) -> tuple[Any, str, str]:
    """(a frame with columns ``skill`` and ``text``, where it came from, a default graph name) of an edge source:
    a file, a ``save_to_disk`` directory, an ``hf:`` spec or a ``datasets`` object (module docstring)."""
    if is_dataset(source):
        table, where, name = _single_split(source, "edge dataset"), "edge dataset", "edges"
    elif isinstance(source, str) and source.startswith(HF_PREFIX):
        table, name = _load_hf(source)
        table, where = _single_split(table, source), source
    elif not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"an edge source is a path, an hf: spec or a datasets.Dataset, not {type(source).__name__}")
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            from datasets import load_from_disk

            try:
                table = _single_split(load_from_disk(str(path)), str(path))
            except FileNotFoundError as err:
                raise DataError(f"{path}: a directory but not one written by Dataset.save_to_disk ({err}); give an "
                                "edge file (CSV/TSV/parquet/JSONL) or such a directory") from err
            where, name = str(path), path.name
        elif not path.is_file():
            raise DataError(f"edge file {path} does not exist (give an existing CSV/TSV/parquet/JSONL file)")
        else:
            return read_table(path), str(path), path.stem
    missing = [c for c in EDGE_COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(f"{where}: missing column(s) {missing}; the edge format needs columns 'skill' and 'text' "
                        f"(found {list(table.column_names)})")
    return table.select_columns(list(EDGE_COLUMNS)).to_pandas(), where, name


def load_edges(
    source: str | os.PathLike | Any, vocab: SkillVocabulary, name: str | None = None, on_unknown: str = "error",
    vocab_key: str = "data.source.skill_vocab",
) -> BipartiteGraph:
    """Read a graph in the generic edge format (see module docstring) against ``vocab``.

    ``source``: an edge file, a ``datasets.Dataset`` / ``DatasetDict``, a ``save_to_disk`` directory or an
    ``hf:`` spec. ``graph.meta`` records the source, the rows read, the dropped unknown-skill rows
    (``on_unknown="drop"``) and up to 10 examples of them.
    """
    if on_unknown not in ON_UNKNOWN:
        raise ValueError(f"on_unknown must be one of {ON_UNKNOWN}, got {on_unknown!r}")
    frame, path, default_name = read_edge_table(source)
    missing = [c for c in EDGE_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {missing}; the edge format needs columns 'skill' and 'text' "
            f"(found {list(frame.columns)})"
        )
    skill_ids: list[int] = []
    texts: list[str] = []
    unknown: list[str] = []
    for row, (skill_cell, text_cell) in enumerate(zip(frame["skill"], frame["text"], strict=True), start=1):
        skill, text = _cell(skill_cell), _cell(text_cell)
        if not text:
            raise DataError(f"{path}: row {row}: empty field 'text'")
        if not skill:
            raise DataError(f"{path}: row {row}: empty field 'skill'")
        index = vocab.get(skill)
        if index is None:
            if on_unknown == "error":
                raise DataError(
                    f"{path}: row {row}: field 'skill' = {skill!r} is neither a URI nor a preferredLabel of "
                    f"{vocab!r}; give your skills table with {vocab_key}=<csv with columns uri,label> "
                    f"({vocab_key.rsplit('.', 1)[0]}.on_unknown=drop skips such rows instead)"
                )
            unknown.append(skill)
            continue
        skill_ids.append(index)
        texts.append(text)
    meta = {
        "source": path,
        "rows": len(frame),
        "dropped_unknown_skill": len(unknown),
        "unknown_skill_examples": list(dict.fromkeys(unknown))[:10],
    }
    name = name or default_name
    if not skill_ids:
        why = f" ({len(unknown)} rows with unknown skills dropped)" if unknown else ""
        raise DataError(f"graph {name}: 0 edges in {path}{why}; an edge file needs rows of (skill, text)")
    return BipartiteGraph.from_pairs(name, skill_ids, texts, len(vocab), meta)


def save_edges(graph: BipartiteGraph, vocab: SkillVocabulary, path: str | os.PathLike) -> Path:
    """Write ``graph`` in the generic edge format (type by suffix), e.g. to inspect or edit a protocol graph."""
    path = Path(path)
    frame = graph.to_frame(vocab)
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".tab"):
        frame.to_csv(path, sep="," if suffix == ".csv" else "\t", index=False)
    elif suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif suffix in (".jsonl", ".ndjson"):
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        raise DataError(f"{path}: unsupported edge file type {suffix!r}; use .csv, .tsv, .parquet or .jsonl")
    return path


def holdout_unit(text: str, seed: int) -> float:
    """Where a text falls in [0, 1): a seeded hash of its normalised form, so a split never depends on row order
    and every spelling of one text lands on the same side."""
    digest = hashlib.sha256(f"{seed}\0{normalize_text(text)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def holdout_split(text: str, val: float, test: float, seed: int) -> str | None:
    """``"val"`` if the text's unit is below ``val``, ``"test"`` below ``val + test``, else None (training).

    >>> holdout_split("Nurse", 0.0, 0.0, 0) is None, holdout_split("Nurse", 1.0, 0.0, 0)
    (True, 'val')
    """
    unit = holdout_unit(text, seed)
    return "val" if unit < val else "test" if unit < val + test else None


def subgraph(graph: BipartiteGraph, keep_texts: Sequence[int], name: str | None = None,
             meta: dict | None = None) -> BipartiteGraph:
    """The edges of ``graph`` whose text is in ``keep_texts`` (text indices), as a new graph."""
    keep = np.zeros(graph.n_texts, dtype=bool)
    keep[np.asarray(list(keep_texts), dtype=np.int64)] = True
    chosen = keep[graph.text_index]
    return BipartiteGraph.from_pairs(name or graph.name, graph.skill_index[chosen].tolist(),
                                     [graph.texts[t] for t in graph.text_index[chosen]], graph.n_skills,
                                     {**graph.meta, **(meta or {})})


def check_holdout(holdout: Mapping[str, Any]) -> dict[str, Any]:
    """The holdout options with defaults; a ConfigError names the ``data.source.holdout`` key at fault."""
    unknown = sorted(set(holdout) - set(HOLDOUT_KEYS))
    if unknown:
        raise ConfigError(f"data.source.holdout: unknown key(s) {unknown}; known: {list(HOLDOUT_KEYS)}")
    out = {"graph": None, "val": 0.0, "test": 0.0, "seed": 0, "val_file": None, "test_file": None, **holdout}
    for key in ("val", "test"):
        value = out[key]
        if not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
            raise ConfigError(f"data.source.holdout.{key}={value!r}: a fraction of the texts in [0, 1), e.g. 0.1")
        out[key] = float(value)
    if out["val"] + out["test"] >= 1.0:
        raise ConfigError(f"data.source.holdout: val + test = {out['val'] + out['test']} leaves nothing to train on")
    if out["graph"] is not None and out["graph"] not in GRAPHS:
        raise ConfigError(f"data.source.holdout.graph={out['graph']!r}: one of {list(GRAPHS)}")
    return out


def heldout_graphs(graph: BipartiteGraph, vocab: SkillVocabulary, holdout: Mapping[str, Any],
                   on_unknown: str = "error") -> tuple[BipartiteGraph, dict[str, BipartiteGraph]]:
    """Split ``graph`` into (training graph, {split: held-out graph}) by text, as ``holdout`` says.

    A split given as a file (``val_file`` / ``test_file``) is that file's edges; otherwise the texts whose
    :func:`holdout_split` is that split. Every held-out text (by normalised text) leaves the training graph,
    so no edge of it is trained on. A split with neither a file nor a fraction is absent.
    """
    opts = check_holdout(holdout)
    splits: dict[str, BipartiteGraph] = {}
    for split in ("val", "test"):
        file = opts[f"{split}_file"]
        if file:
            splits[split] = load_edges(file, vocab, f"{graph.name}-{split}", on_unknown)
        elif opts[split] > 0:
            side = [i for i, t in enumerate(graph.texts)
                    if holdout_split(t, opts["val"], opts["test"], int(opts["seed"])) == split]
            if side:
                splits[split] = subgraph(graph, side, f"{graph.name}-{split}")
    held = {normalize_text(t) for g in splits.values() for t in g.texts}
    train = [i for i, t in enumerate(graph.texts) if normalize_text(t) not in held]
    if not train:
        raise DataError(f"graph {graph.name}: every text is held out by data.source.holdout; lower its fractions")
    trained = subgraph(graph, train, graph.name, {"heldout_texts": graph.n_texts - len(train)})
    return trained, splits


class EdgeFileSource:
    """Graphs read from one edge file per graph (the ``data=edges`` config), over ``skill_vocab``.

    Args:
        edge_files: graph name -> edge file; entries left null (graphs not trained) are ignored.
        skill_vocab: ``"esco-<version>"`` from the data pack, or a table with columns ``uri``, ``label``.
        on_unknown: ``error`` (default) or ``drop`` rows whose skill is not in the vocabulary.
        data_dir: the data pack (for ``esco-*`` vocabularies).
        holdout: texts of one graph (``graph``; null: the first trained, J if given) kept out of training for validation and test:
            fractions ``val`` / ``test`` by a ``seed``-ed hash of the text, or files ``val_file`` / ``test_file``.
        evaluate_on: ``own`` (the held-out edges: validation, checkpoint choice and test) or ``workbench``
            (the run's ``validation.tasks`` / ``test.tasks``, ESCO WorkBench).
    """

    def __init__(
        self,
        edge_files: Mapping[str, str | None] | None = None,
        skill_vocab: str = "esco-v1.2.0",
        on_unknown: str = "error",
        data_dir: str | None = None,
        holdout: Mapping[str, Any] | None = None,
        evaluate_on: str = "workbench",
    ) -> None:
        if on_unknown not in ON_UNKNOWN:
            raise ConfigError(f"data.source.on_unknown must be one of {ON_UNKNOWN}, got {on_unknown!r}")
        if evaluate_on not in EVALUATE_ON:
            raise ConfigError(f"data.source.evaluate_on must be one of {EVALUATE_ON}, got {evaluate_on!r}")
        self.edge_files = {g: str(p) for g, p in (edge_files or {}).items() if p is not None}
        self.skill_vocab = skill_vocab
        self.on_unknown = on_unknown
        self.data_dir = data_dir
        self.holdout = check_holdout(dict(holdout or {}))
        self.evaluate_on = evaluate_on
        self.heldout: dict[str, BipartiteGraph] = {}
        self.vocab: SkillVocabulary | None = None
        self.target_graph: str | None = None  # the graph held out from (known once loaded)
        self.trained_target: BipartiteGraph | None = None  # its edges left for training

    def available_graphs(self) -> list[str]:
        """The graphs that have an edge file (what ``data.graphs: null`` trains)."""
        graphs = [g for g in GRAPHS if g in self.edge_files] + sorted(set(self.edge_files) - set(GRAPHS))
        if not graphs:
            raise ConfigError("data=edges needs at least one edge file, e.g. data.source.edge_files.J=jobs.csv "
                              "(columns skill,text)")
        return graphs

    def has_holdout(self) -> bool:
        o = self.holdout
        return bool(o["val"] or o["test"] or o["val_file"] or o["test_file"])

    def load(self, graphs: Sequence[str]) -> tuple[SkillVocabulary, dict[str, BipartiteGraph]]:
        missing = [g for g in graphs if g not in self.edge_files]
        if missing:
            raise ConfigError(f"data.graphs={list(graphs)} needs edge_files for graphs {missing}: set "
                              f"data.source.edge_files.{missing[0]}=<file>, or leave data.graphs=null to train the "
                              f"graphs with a file ({sorted(self.edge_files)})")
        vocab = load_vocabulary(self.skill_vocab, self.data_dir)
        self.vocab = vocab
        loaded = {g: load_edges(self.edge_files[g], vocab, g, self.on_unknown) for g in graphs}
        target = self.target_graph = self.holdout["graph"] or list(graphs)[0]
        if self.has_holdout():
            if target not in loaded:
                raise ConfigError(f"data.source.holdout.graph={target} is not trained (data.graphs={list(graphs)})")
            loaded[target], self.heldout = heldout_graphs(loaded[target], vocab, self.holdout, self.on_unknown)
            self.trained_target = loaded[target]
            for split, graph in self.heldout.items():
                log.info("held out for %s: %d %s texts, %d edges", split, graph.n_texts, target, graph.n_edges)
        return vocab, loaded

    def evaluation_tasks(self, configured: Sequence[str]) -> list[str]:
        """What validation / test run on: the held-out edges (``evaluate_on=own``), else ``configured``."""
        if self.evaluate_on == "own":
            return [OWN_TASK] if self.has_holdout() else []
        return list(configured)

    def task_options(self) -> dict[str, dict[str, Any]]:
        """The ``edges`` task rebuilds the held-out split from the same file, vocabulary and hash."""
        if not self.has_holdout():
            return {}
        target = self.target_graph or self.holdout["graph"] or self.available_graphs()[0]
        return {OWN_TASK: {"file": self.edge_files.get(target), "skill_vocab": self.skill_vocab,
                           "on_unknown": self.on_unknown, "holdout": dict(self.holdout)}}

    def write_heldout(self, directory: str | os.PathLike) -> dict[str, str]:
        """Save the held-out edges as ``<directory>/{val,test}.csv`` (to evaluate them later from the CLI) and the
        held-out graph's training edges as ``train.csv`` (what ``model=popularity`` may count)."""
        if not self.heldout or self.vocab is None:
            return {}
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        parts = {**self.heldout, **({"train": self.trained_target} if self.trained_target is not None else {})}
        return {split: str(save_edges(graph, self.vocab, out / f"{split}.csv")) for split, graph in parts.items()}

    def describe(self) -> dict[str, Any]:
        return {"source": "edges", "edge_files": dict(self.edge_files), "skill_vocab": self.skill_vocab,
                "on_unknown": self.on_unknown, "holdout": dict(self.holdout), "evaluate_on": self.evaluate_on,
                "heldout": {s: g.summary() for s, g in self.heldout.items()},
                "vocabulary": {"name": self.vocab.name, "skills": len(self.vocab)} if self.vocab else None}
