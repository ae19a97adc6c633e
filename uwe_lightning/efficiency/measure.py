"""Measurements: timers and mean/SE, then each quantity of the table measured on one ranker and space.

Every function here times or counts one thing and returns plain numbers; which queries, tasks and sizes are
measured is decided by :mod:`uwe_lightning.efficiency.benchmark`.
"""

from __future__ import annotations

import copy
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from uwe_lightning.data.graphs import GRAPHS
from uwe_lightning.io import DataError
from uwe_lightning.paths import derived_dir
from uwe_lightning.ranking.packed import EncodedTexts
from uwe_lightning.ranking.ranker import Ranker

# ----------------------------------------------------------------------------------------------------------
# Timers and statistics
# ----------------------------------------------------------------------------------------------------------


def mean_se(values: Sequence[float]) -> dict:
    """Mean and standard error of the mean (``se`` is NaN for fewer than two values)."""
    arr = np.asarray(list(values), dtype=float)
    if arr.size == 0:
        return {"mean": math.nan, "se": math.nan, "n": 0}
    se = float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else math.nan
    return {"mean": float(arr.mean()), "se": se, "n": int(arr.size)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of ``fn()``, synchronising the GPU around it (kernels are asynchronous)."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def sample_queries(queries: Sequence[str], n: int, seed: int) -> list[str]:
    """``n`` queries in a fixed random order, distinct while the task has enough, then repeated."""
    if not queries:
        raise ValueError("a task without queries cannot be timed")
    order = np.random.default_rng(seed).permutation(len(queries)).tolist()
    return [queries[order[i % len(order)]] for i in range(n)]


def machine_info(device: torch.device) -> dict:
    """What the timings depend on: CPUs, threads, versions, device, and the load when the run started."""
    info = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "device": str(device),
        "load_average_start": load_average(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def load_average() -> list[float] | None:
    """The 1/5/15-minute load averages (``None`` where the OS has none): a shared machine inflates timings."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def cpu_busy_seconds() -> float | None:
    """CPU seconds all CPUs of the machine have been busy since boot (``/proc/stat``; ``None`` where it is
    missing). Steal time (another VM had the core) counts as busy: it is a CPU this machine did not get."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    except (OSError, ValueError):
        return None
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (every thread included)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class OtherCpu:
    """How many CPUs everything but this process has kept busy since it was made (:meth:`now`), or while a
    ``with`` block ran (``.cpus``); ``None`` without ``/proc/stat``.

    Why not the load average: it counts this process's own threads and decays over minutes, so right after a
    run of ours an idle 2-core machine reads ~2; the machine's busy time minus ours is what competed with us.

    Example::

        with OtherCpu() as others:
            run()
        print(others.cpus)  # ~0.0 on quiet cores
    """

    cpus: float | None = None

    def __init__(self) -> None:
        self._wall, self._busy, self._own = time.perf_counter(), cpu_busy_seconds(), own_cpu_seconds()

    def __enter__(self) -> OtherCpu:
        return self

    def __exit__(self, *exc) -> None:
        self.cpus = self.now()

    def now(self) -> float | None:
        """The average so far (CPUs; rounded to 0.01, the kernel counts in 10 ms ticks)."""
        busy, wall = cpu_busy_seconds(), time.perf_counter() - self._wall
        if busy is None or self._busy is None or wall <= 0:
            return None
        return round(max(0.0, (busy - self._busy) - (own_cpu_seconds() - self._own)) / wall, 2)


#: Average CPUs kept busy by other processes above which a run's timings are not from quiet cores.
QUIET_OTHER_CPUS = 0.2


def quiet_cores(others_cpus: float | None, load_start: float, max_load: float = 0.5) -> bool:
    """Whether a run's timings are from quiet cores: other processes kept at most :data:`QUIET_OTHER_CPUS`
    busy; a run that did not measure that falls back to its 1-min load average as it started (``max_load``)."""
    if others_cpus is not None:
        return others_cpus <= QUIET_OTHER_CPUS
    return load_start <= max_load


def busiest_others(run: dict) -> float | None:
    """The most CPUs other processes kept busy over a run's json (``others_cpus``) or any of its ``sections``;
    ``None`` where the run did not measure it (older runs, no ``/proc/stat``)."""
    values = [run.get("others_cpus"), *(s.get("others_cpus") for s in run.get("sections", {}).values())]
    values = [v for v in values if v is not None]
    return max(values) if values else None


# ----------------------------------------------------------------------------------------------------------
# Inference
# ----------------------------------------------------------------------------------------------------------


def encoding_rate(ranker: Ranker, texts: Sequence[str], sample: int, seed: int) -> dict:
    """Encoding throughput on a fixed sample of a target space, and the full space's estimated time."""
    picked = sample_queries(list(texts), min(sample, len(texts)), seed)
    ranker.embed(picked[: min(16, len(picked))])  # warm-up
    holder: dict = {}
    seconds = timed(lambda: holder.setdefault("out", ranker.embed(picked)), ranker.device)
    n_tokens = sum(t.shape[0] for t in holder["out"])
    rate = len(picked) / seconds
    return {
        "sample": len(picked), "seconds": round(seconds, 3), "texts_per_s": round(rate, 1),
        "tokens_per_text": round(n_tokens / len(picked), 2), "n_texts": len(texts),
        "estimated_full_s": round(len(texts) / rate, 2),
    }


def single_query_latencies(ranker: Ranker, queries: Sequence[str], space: EncodedTexts, k: int) -> list[float]:
    """Milliseconds per query, each ranked alone end to end (tokenise, encode, score, top-k)."""
    return [1000 * timed(lambda q=q: ranker.rank([q], space, k=k), ranker.device) for q in queries]


def scoring_latencies(ranker: Ranker, queries: Sequence[str], space: EncodedTexts, k: int) -> list[float]:
    """Milliseconds per query for scoring + top-k only (each query encoded beforehand, untimed)."""
    encoded = [ranker.encode([q], "query") for q in queries]
    return [1000 * timed(lambda e=e: ranker.rank(e, space, k=k), ranker.device) for e in encoded]


def flops_per_query(ranker: Ranker, queries: Sequence[str], space: EncodedTexts, k: int) -> list[int]:
    """FLOPs (2 per multiply-add) counted by FlopCounterMode for encode + score of each query.

    Counted on the float32 storage path: fbgemm's fp16-weight GEMM (``precision="fp16"``) does the same
    products, but FlopCounterMode only sees aten's matrix products.
    """
    from torch.utils.flop_counter import FlopCounterMode

    if getattr(ranker, "precision", "fp32") != "fp32":
        ranker = ranker.with_scorer(ranker.spec.name, tau=ranker.spec.tau, precision="fp32")
    out = []
    for q in queries:
        with FlopCounterMode(display=False) as counter:
            ranker.rank([q], space, k=k)
        out.append(int(counter.get_total_flops()))
    return out


def batched_throughput(ranker: Ranker, queries: Sequence[str], space: EncodedTexts, k: int) -> dict:
    """Queries per second when ``queries`` are ranked as one batch (after a small warm-up)."""
    ranker.rank(list(queries[: min(8, len(queries))]), space, k=k)
    seconds = timed(lambda: ranker.rank(list(queries), space, k=k), ranker.device)
    return {"batch": len(queries), "seconds": round(seconds, 4), "queries_per_s": len(queries) / seconds}


def naive_reencode_latencies(ranker: Ranker, queries: Sequence[str], targets: Sequence[str], k: int) -> list[float]:
    """The uncached way: every query re-encodes the whole target space, then scores (milliseconds)."""
    def one(q: str) -> None:
        ranker.rank([q], ranker.encode(targets, "target"), k=k)

    return [1000 * timed(lambda q=q: one(q), ranker.device) for q in queries]


def naive_loop_latencies(ranker: Ranker, queries: Sequence[str], space: EncodedTexts, k: int) -> list[float]:
    """Cached targets, but scored one target at a time in a Python loop (milliseconds per query)."""
    per_target = [space.to_token_embeddings([i], dtype=ranker.compute_dtype, device=ranker.device)
                  for i in range(len(space))]

    def one(q: str) -> None:
        query = ranker.encode([q], "query").to_token_embeddings(dtype=ranker.compute_dtype, device=ranker.device)
        with torch.no_grad():
            scores = torch.cat([ranker.spec.fn(query, target).reshape(-1) for target in per_target])
        torch.topk(scores, min(k, len(per_target)))

    return [1000 * timed(lambda q=q: one(q), ranker.device) for q in queries]


# ----------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------


def training_texts(data_dir: str | Path | None, n_skills: int, seed: int,
                   fallback: Sequence[str] | None = None) -> dict[str, list[str]]:
    """A batch of S skills with one job title (J), sentence (V) and alternative (A) per skill.

    From ESCO v1.2.0 (labels, occupation labels, descriptions, altLabels); only the cost is measured, so the
    pairing needs no meaning. ``fallback`` texts are used when the data pack is absent (tests).
    """
    rng = np.random.default_rng(seed)
    try:
        from uwe_lightning.esco import load_occupations, load_skills

        skills = load_skills(data_dir, "v1.2.0")
        occupations = load_occupations(data_dir, "v1.2.0")
        rows = rng.choice(len(skills), size=n_skills, replace=len(skills) < n_skills)
        jobs = rng.choice(len(occupations), size=n_skills, replace=len(occupations) < n_skills)
        picked = skills.iloc[rows]
        return {
            "S": picked["label"].tolist(),
            "J": occupations.iloc[jobs]["label"].tolist(),
            "V": [d or label for d, label in zip(picked["description"], picked["label"], strict=True)],
            "A": [alts[0] if alts else label for alts, label in zip(picked["alt_labels"], picked["label"], strict=True)],
        }
    except (DataError, FileNotFoundError):
        if derived_dir(data_dir) is not None:  # an offline bundle: the protocol's own texts (cost only)
            from uwe_lightning.protocol.build import build_open_protocol

            protocol = build_open_protocol(data_dir)
            pools = {"S": list(protocol.vocab.labels), **{g: protocol.graphs[g].texts for g in GRAPHS}}
            return {k: [pool[int(i)] for i in rng.integers(0, len(pool), size=n_skills)] for k, pool in pools.items()}
        if not fallback:
            raise
        pool = list(fallback)

        def take(offset: int) -> list[str]:
            return [pool[(offset + i) % len(pool)] for i in range(n_skills)]

        return {"S": take(0), "J": take(1), "V": take(2), "A": take(3)}


def _loss_fn(name: str) -> tuple[Callable, str]:
    """The training loss ``name`` (paper tau / alpha) and its label for the report."""
    from uwe_lightning.losses import build_loss

    return build_loss(name), f"uwe_lightning.losses:{name}"


def train_step_times(ranker: Ranker, texts: dict[str, list[str]], max_length: int, warmup: int, steps: int,
                     loss_name: str) -> dict:
    """Milliseconds of forward + backward + AdamW step on S skills + 3S texts (one encoder batch).

    A copy of the encoder is trained, so the ranker's weights stay untouched.
    """
    from uwe_lightning.model.pairwise import pairwise_scores

    encoder = copy.deepcopy(ranker.encoder).train()
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=1e-6)
    loss_fn, loss_label = _loss_fn(loss_name)
    graphs = [g for g in GRAPHS if g in texts]
    n = len(texts["S"])
    all_texts = texts["S"] + [t for g in graphs for t in texts[g]]
    device = ranker.device
    pos_masks = {g: torch.eye(n, dtype=torch.bool, device=device) for g in graphs}
    pair_index = {g: torch.arange(n, device=device) for g in graphs}

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        batch = {k: v.to(device) for k, v in encoder.tokenize(all_texts, max_length).items()}
        tokens = encoder(batch["input_ids"], batch["attention_mask"]).trimmed()
        skills = tokens[slice(0, n)].trimmed()
        scores = {}
        for i, g in enumerate(graphs):
            side = tokens[slice((i + 1) * n, (i + 2) * n)].trimmed()
            scores[g] = pairwise_scores(skills, side, ranker.spec, both_directions=True)
        loss, _ = loss_fn(scores, pos_masks, pair_index)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    times = [1000 * timed(step, device) for _ in range(steps)]
    return {"ms": mean_se(times), "skills": n, "texts": len(all_texts), "max_length": max_length,
            "loss": loss_label, "optimizer": "AdamW"}
