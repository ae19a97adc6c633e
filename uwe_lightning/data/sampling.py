"""Which skills and texts a training step holds: pure numpy functions of (seed, step).

Each step samples distinct skills, then one neighbour text per skill in every graph
(:func:`sample_neighbors`); V texts are augmented with a sentence of an out-of-batch skill
(:func:`augment_texts`, paper Appendix A). Two ways to pick the skills (:data:`SAMPLINGS`):
``skill_uniform`` draws them uniformly from the vocabulary (the paper's rule, which assumes every skill has a
neighbour in every graph); ``per_graph`` then tops the draw up per graph with skills that graph covers
(:func:`sample_per_graph`), so every graph contributes a full set of texts when coverage is partial. See
:mod:`uwe_lightning.data.datamodule` for the batch contract.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from uwe_lightning.data.graphs import BipartiteGraph

_AUGMENT_TRIES = 20
#: How a step picks its skills (``data.sampling``).
SAMPLINGS = ("skill_uniform", "per_graph")
log = logging.getLogger("uwe_lightning.data")


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of ``n`` that process ``rank`` of ``world`` holds: contiguous shards in rank order,
    the first ``n % world`` ranks one row longer, so concatenating the shards in rank order gives the whole.

    >>> [shard_bounds(5, r, 2) for r in range(2)], [shard_bounds(1, r, 3) for r in range(3)]
    ([(0, 3), (3, 5)], [(0, 1), (1, 1), (1, 1)])
    """
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} of world size {world} is not a process of that world")
    base, extra = divmod(int(n), world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def shard_sizes(n: int, world: int) -> list[int]:
    """The rows every rank holds (:func:`shard_bounds`), in rank order."""
    return [stop - start for start, stop in (shard_bounds(n, r, world) for r in range(world))]


def step_rng(seed: int, step: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(step)])


def sample_neighbors(graph: BipartiteGraph, skills: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One neighbour per skill, uniform among its neighbours; skills without one are skipped.
    Returns (text indices, batch rows they were sampled for)."""
    degree = graph.skill_degree[skills]
    rows = np.flatnonzero(degree > 0)
    offsets = np.floor(rng.random(rows.size) * degree[rows]).astype(np.int64)
    text_ids = graph.skill_neighbors[graph.skill_indptr[skills[rows]] + offsets]
    return text_ids, rows


def sample_per_graph(
    graphs: Mapping[str, BipartiteGraph], skills: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Top ``skills`` (a uniform draw) up so that every graph has ``len(skills)`` skills it covers: a graph's
    own skills are the drawn skills it covers plus distinct skills drawn uniformly among the rest of the skills
    it covers (all of them where it covers too few). With full coverage nothing is added, i.e. this is the
    paper's uniform rule.

    Returns (the step's skills: ``skills`` then the added ones, per graph the rows of them it samples from).

    >>> g = BipartiteGraph.from_pairs("J", [0, 1], ["a", "b"], n_skills=5)
    >>> h = BipartiteGraph.from_pairs("A", [3, 4], ["d", "e"], n_skills=5)
    >>> out, rows = sample_per_graph({"J": g, "A": h}, np.array([0, 3]), np.random.default_rng(0))
    >>> out.tolist(), {k: out[v].tolist() for k, v in rows.items()}
    ([0, 3, 1, 4], {'J': [0, 1], 'A': [3, 4]})
    """
    out = [int(s) for s in skills]
    rows: dict[str, np.ndarray] = {}
    n = len(skills)
    for name, graph in graphs.items():
        own = np.flatnonzero(graph.skill_degree[skills] > 0)
        need = n - own.size
        candidates = np.setdiff1d(np.flatnonzero(graph.skill_degree > 0), np.asarray(out, dtype=np.int64))
        added = rng.choice(candidates, size=min(need, candidates.size), replace=False) if need > 0 else []
        rows[name] = np.concatenate([own, np.arange(len(out), len(out) + len(added))]).astype(np.int64)
        out.extend(int(s) for s in added)
    return np.asarray(out, dtype=np.int64), rows


def sample_contexts(
    graph: BipartiteGraph, batch_skills: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """``n`` text indices of sentences of out-of-batch skills with no edge to any batch skill (-1 where none
    was found in a few tries: that text is not augmented)."""
    candidates = np.setdiff1d(np.flatnonzero(graph.skill_degree > 0), batch_skills)
    out = np.full(n, -1, dtype=np.int64)
    if n == 0 or candidates.size == 0:
        return out
    todo = np.arange(n)
    for _ in range(_AUGMENT_TRIES):
        skills = candidates[rng.integers(candidates.size, size=todo.size)]
        degree = graph.skill_degree[skills]
        offsets = np.floor(rng.random(todo.size) * degree).astype(np.int64)
        texts = graph.skill_neighbors[graph.skill_indptr[skills] + offsets]
        clean = ~graph.has_edge(batch_skills[:, None], texts[None, :]).any(axis=0)
        out[todo[clean]] = texts[clean]
        todo = todo[~clean]
        if todo.size == 0:
            break
    return out


def _cut(context: str, offsets: Sequence[tuple[int, int]], room: int, prefix: bool) -> str:
    """The part of ``context`` that fits in ``room`` tokens, cut at a token boundary next to the real text."""
    if room <= 0:
        return ""
    if len(offsets) <= room:
        return context
    return context[offsets[-room][0] :].strip() if prefix else context[: offsets[room - 1][1]].strip()


def _join(text: str, context: str | None, prefix: bool) -> str:
    if not context:
        return text
    return f"{context} {text}" if prefix else f"{text} {context}"


def augment_texts(
    texts: list[str],
    contexts: list[str | None],
    prefix: np.ndarray,
    tokenizer=None,
    max_length: int | None = None,
) -> list[str]:
    """``context + " " + text`` or ``text + " " + context``; with a (fast) tokenizer, the context only gets
    the tokens the text leaves free within ``max_length``. The joined text is re-tokenised and the context
    shortened where the joint tokenises longer; a context that still does not fit is left out.

    >>> augment_texts(["a b", "c"], ["x y", None], np.array([True, False]))
    ['x y a b', 'c']
    """
    fitted: list[str | None] = list(contexts)
    todo = [i for i, c in enumerate(contexts) if c is not None]
    if tokenizer is not None and max_length is not None and todo:
        text_ids = tokenizer([texts[i] for i in todo], add_special_tokens=True)["input_ids"]
        offsets = tokenizer([contexts[i] for i in todo], add_special_tokens=False, return_offsets_mapping=True)
        spans = dict(zip(todo, offsets["offset_mapping"], strict=True))
        room = {i: max_length - len(ids) for i, ids in zip(todo, text_ids, strict=True)}
        for _ in range(3):
            for i in todo:
                fitted[i] = _cut(contexts[i], spans[i], room[i], bool(prefix[i]))
            check = [i for i in todo if fitted[i]]
            joined = tokenizer([_join(texts[i], fitted[i], bool(prefix[i])) for i in check])["input_ids"] if check else []
            over = {i: len(ids) - max_length for i, ids in zip(check, joined, strict=True) if len(ids) > max_length}
            for i, excess in over.items():
                room[i] -= excess
            todo = list(over)
            if not todo:
                break
        for i in todo:  # still too long after three cuts
            fitted[i] = None
    return [_join(text, context, bool(p)) for text, context, p in zip(texts, fitted, prefix, strict=True)]


#: ``data.sampling=auto``: per-graph coverage when most skills have no text in any graph, else skill-uniform.
AUTO_SAMPLING = "auto"


def choose_sampling(n_skills: int, graphs: Mapping[str, BipartiteGraph], sampling: str = AUTO_SAMPLING) -> str:
    """``sampling`` itself unless it is ``auto``: then ``per_graph`` when over half the vocabulary has no text in
    any graph (a uniform draw would mostly sample skills without a positive), else ``skill_uniform``; logged."""
    if sampling != AUTO_SAMPLING:
        return sampling
    covered = np.zeros(n_skills, dtype=bool)
    for graph in graphs.values():
        covered |= graph.skill_degree > 0
    share = 1.0 - float(covered.mean()) if n_skills else 0.0
    choice = "per_graph" if share > 0.5 else "skill_uniform"
    log.info("data.sampling=auto -> %s: %.0f %% of the %d skills have no text in any graph", choice,
             100 * share, n_skills)
    return choice
