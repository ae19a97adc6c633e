"""Controls for cross-task transfer (issue 29): randomised alignment and a held-out half of the skills.

* :func:`shuffle_alignment` (``data.alignment=shuffled``): the graph's edges are rewired at random while every
  text keeps its number of skills and every skill its degree, exactly: the skill ends of all edges are
  permuted (a configuration model over the given degree sequences) and the few repeated (skill, text) pairs
  this makes are removed by degree-preserving swaps with random other edges. Volume, degree distributions and
  texts stay; which text goes with which skill is gone.
* :func:`holdout_split` + :func:`drop_skills` (``data.skill_holdout=0.5``): a seeded share of the skill
  vocabulary, stratified by degree over the training graphs, is held out; every training edge touching a
  held-out skill is dropped (texts left without an edge go too), and the sampler never draws a held-out skill
  (:class:`~uwe_lightning.data.datamodule.UWEDataModule` passes the pool), so no gradient reaches its label.
  Evaluation counts positives among held-out (``unseen``) or kept (``seen``) skills apart
  (:mod:`uwe_lightning.workbench.holdout`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from uwe_lightning.data.graphs import BipartiteGraph

ALIGNMENTS = ("aligned", "shuffled")
#: Salts that keep these streams apart from the batch stream of the same seed.
SHUFFLE_SALT = 0x5A1F
HOLDOUT_SALT = 0x401D
#: Skills per degree stratum of the holdout split (consecutive in degree order).
STRATUM_SIZE = 10


def shuffle_alignment(graph: BipartiteGraph, seed: int, max_rounds: int = 100) -> BipartiteGraph:
    """A copy of ``graph`` with the same texts, the same degree of every skill and of every text, and random
    edges between them (see the module docstring). Deterministic in (graph, seed)."""
    rng = np.random.default_rng([seed, SHUFFLE_SALT])
    skills = graph.skill_index.copy()
    texts = graph.text_index.copy()
    skills = skills[rng.permutation(skills.size)]
    n_texts = max(graph.n_texts, 1)
    for _ in range(max_rounds):
        keys = skills * n_texts + texts
        order = np.argsort(keys, kind="stable")
        repeated = order[1:][keys[order[1:]] == keys[order[:-1]]]  # every copy after the first of a pair
        if repeated.size == 0:
            break
        edges = {int(k) for k in keys}
        for e in rng.permutation(repeated):
            _swap_away(e, skills, texts, edges, n_texts, rng)
    else:
        raise RuntimeError(f"graph {graph.name}: could not remove repeated edges in {max_rounds} rounds of swaps "
                           "(a skill linked to almost every text?)")
    meta = {**graph.meta, "alignment": "shuffled", "alignment_seed": int(seed)}
    return BipartiteGraph(graph.name, list(graph.texts), skills, texts, graph.n_skills, meta)


def _swap_away(e: int, skills: np.ndarray, texts: np.ndarray, edges: set[int], n_texts: int,
               rng: np.random.Generator, tries: int = 1000) -> None:
    """Swap the skill ends of edge ``e`` (a repeated pair) and a random edge ``f`` when neither new pair exists
    yet: (s_e, t_e), (s_f, t_f) -> (s_f, t_e), (s_e, t_f). Degrees stay; ``edges`` holds the distinct pairs."""
    s_e, t_e = int(skills[e]), int(texts[e])
    for f in rng.integers(0, skills.size, size=tries):
        s_f, t_f = int(skills[f]), int(texts[f])
        new_e, new_f = s_f * n_texts + t_e, s_e * n_texts + t_f
        if s_f == s_e or new_e in edges or new_f in edges:
            continue
        edges.discard(s_f * n_texts + t_f)  # f's pair was distinct (e's copy stays present through its twin)
        edges.update((new_e, new_f))
        skills[e], skills[f] = s_f, s_e
        return


def edge_overlap(a: BipartiteGraph, b: BipartiteGraph) -> float:
    """Share of ``a``'s (skill, text) pairs that are also pairs of ``b`` (same texts list assumed)."""
    if a.n_edges == 0:
        return 0.0
    return float(b.has_edge(a.skill_index, a.text_index).mean())


def expected_random_overlap(graph: BipartiteGraph) -> float:
    """The edge overlap a random graph with the same degrees has with ``graph`` in expectation (configuration
    model): sum over edges of d(s) d(t) / E, divided by E."""
    if graph.n_edges == 0:
        return 0.0
    d_skill = graph.skill_degree.astype(float)
    d_text = np.diff(graph.text_indptr).astype(float)
    e = float(graph.n_edges)
    return float((d_skill[graph.skill_index] * d_text[graph.text_index]).sum() / e**2)


def total_degree(graphs: Mapping[str, BipartiteGraph], n_skills: int) -> np.ndarray:
    """Per skill, its number of edges over all graphs."""
    degree = np.zeros(n_skills, dtype=np.int64)
    for graph in graphs.values():
        degree += graph.skill_degree
    return degree


def holdout_split(degree: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of the held-out skills: ``round(fraction * n)`` of them, stratified by degree.

    Skills are ordered by degree (ties at random), cut into consecutive strata of :data:`STRATUM_SIZE`, and
    each stratum gives its share (largest-remainder rounding over the cumulative count) at random, so the
    held-out and the kept half have the same degree distribution up to one stratum's width.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"skill holdout fraction must be in (0, 1), got {fraction}")
    n = int(degree.size)
    rng = np.random.default_rng([seed, HOLDOUT_SALT])
    order = np.lexsort((rng.random(n), degree))
    held: list[np.ndarray] = []
    for start in range(0, n, STRATUM_SIZE):
        stop = min(start + STRATUM_SIZE, n)
        k = round(fraction * stop) - round(fraction * start)
        held.append(rng.choice(order[start:stop], size=k, replace=False))
    return np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)


def drop_skills(graph: BipartiteGraph, held_out: np.ndarray) -> tuple[BipartiteGraph, dict[str, int]]:
    """``graph`` without the edges of the ``held_out`` skills and without the texts left edgeless; the counts
    of what it cost (edges, texts)."""
    mask = np.zeros(graph.n_skills, dtype=bool)
    mask[held_out] = True
    keep = ~mask[graph.skill_index]
    skills, text_ids = graph.skill_index[keep], graph.text_index[keep]
    used = np.unique(text_ids)
    new_id = np.full(graph.n_texts, -1, dtype=np.int64)
    new_id[used] = np.arange(used.size)
    meta = {**graph.meta, "skill_holdout": {"held_out_skills": int(mask.sum())}}
    kept = BipartiteGraph(graph.name, [graph.texts[t] for t in used], skills, new_id[text_ids], graph.n_skills, meta)
    cost = {"edges": graph.n_edges - kept.n_edges, "texts": graph.n_texts - kept.n_texts,
            "edges_before": graph.n_edges, "texts_before": graph.n_texts}
    return kept, cost


def hold_out_skills(graphs: Mapping[str, BipartiteGraph], held_out: np.ndarray, n_skills: int,
                    ) -> tuple[dict[str, BipartiteGraph], np.ndarray, dict[str, Any]]:
    """The graphs without the ``held_out`` skills (:func:`drop_skills`), the skills left to sample from, and
    what the split cost (skills, and per graph edges and texts)."""
    degree = total_degree(graphs, n_skills)
    kept, cost = {}, {}
    for name, graph in graphs.items():
        kept[name], cost[name] = drop_skills(graph, held_out)
    pool = np.setdiff1d(np.arange(n_skills), held_out)
    report = {"stratified_by": "degree over the graphs", "held_out_skills": int(held_out.size),
              "training_skills": int(pool.size), "held_out_skills_with_edges": int((degree[held_out] > 0).sum()),
              "dropped": cost}
    return kept, pool, report


def shuffle_graphs(graphs: Mapping[str, BipartiteGraph], seed: int) -> tuple[dict[str, BipartiteGraph], dict[str, Any]]:
    """Every graph through :func:`shuffle_alignment`, with its edge overlap with the aligned graph beside the
    overlap a random graph of the same degrees would have."""
    shuffled, report = {}, {}
    for name, graph in graphs.items():
        shuffled[name] = shuffle_alignment(graph, seed)
        report[name] = {"edge_overlap_with_aligned": round(edge_overlap(shuffled[name], graph), 4),
                        "random_expectation": round(expected_random_overlap(graph), 4)}
    return shuffled, {"alignment": "shuffled", "seed": int(seed), "graphs": report}
