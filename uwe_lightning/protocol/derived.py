"""The open protocol's graphs as one compact file of a derived data directory (an offline bundle's ``data/``).

Building the protocol reads the raw pack (ESCO, vacancy titles, SkillSkape, every evaluation split for the
leakage filter). A GPU node without the pack reads the built result instead: the skill vocabulary, the three
graphs' texts and edges, and the build's meta (counts, leakage report, fractions), as gzipped JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from uwe_lightning.data.graphs import BipartiteGraph, SkillVocabulary
from uwe_lightning.io import DataError
from uwe_lightning.workbench.derived import read_gz_json, read_index, write_gz_json

PROTOCOL_FILE = "protocol/open.json.gz"


def protocol_record(protocol: Any) -> dict[str, Any]:
    """An :class:`~uwe_lightning.protocol.build.OpenProtocol` as plain JSON data."""
    vocab = protocol.vocab
    graphs = {
        name: {"texts": g.texts, "skill_index": g.skill_index.tolist(), "text_index": g.text_index.tolist(),
               "n_skills": g.n_skills, "meta": g.meta}
        for name, g in protocol.graphs.items()
    }
    return {"vocab": {"name": vocab.name, "uris": list(vocab.uris), "labels": list(vocab.labels)},
            "graphs": graphs, "meta": protocol.meta}


def write_derived_protocol(root: Path, protocol: Any) -> dict[str, Any]:
    """Write the protocol; returns its index entry (file, bytes, the fractions it was built with)."""
    size = write_gz_json(root / PROTOCOL_FILE, protocol_record(protocol))
    return {"file": PROTOCOL_FILE, "bytes": size, "val_fraction": protocol.meta["val_fraction"],
            "altlabel_train_fraction": protocol.meta["altlabel_train_fraction"]}


def load_derived_protocol(root: Path, val_fraction: float, altlabel_train_fraction: float
                          ) -> tuple[SkillVocabulary, dict[str, BipartiteGraph], dict[str, Any]]:
    """(vocabulary, graphs, meta) of the derived directory ``root``, checked against the fractions asked for."""
    entry = read_index(root).get("protocol")
    if entry is None:
        raise DataError(f"{root} holds no open protocol; pack the bundle with data=open")
    built = (entry["val_fraction"], entry["altlabel_train_fraction"])
    if built != (val_fraction, altlabel_train_fraction):
        raise DataError(f"{root}: the open protocol was built with (val_fraction, altlabel_train_fraction) = "
                        f"{built}, the run asks for {(val_fraction, altlabel_train_fraction)}; pack the bundle "
                        "with the run's data options")
    record = read_gz_json(root / entry["file"])
    v = record["vocab"]
    vocab = SkillVocabulary(v["uris"], v["labels"], name=v["name"])
    graphs = {
        name: BipartiteGraph(name, g["texts"], np.asarray(g["skill_index"], dtype=np.int64),
                             np.asarray(g["text_index"], dtype=np.int64), g["n_skills"], g["meta"])
        for name, g in record["graphs"].items()
    }
    return vocab, graphs, {**record["meta"], "derived_from": str(root)}
