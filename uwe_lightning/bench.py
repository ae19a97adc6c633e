"""``make bench``: latency, FLOPs, throughput and training cost of each scorer (paper Table 3, Appendix A).

Protocol (Appendix A, "Timing evaluation"): per WorkBench task the target space is encoded once (cached on
disk); then 30 warm-up single queries, 100 timed single queries end to end (tokenise, encode, score, top-k),
and 10 more queries under :class:`torch.utils.flop_counter.FlopCounterMode` (encode + score). Per task the
mean over queries; reported is the mean +- standard error over tasks, per scorer, with the model's parameter
count and embedding size ``h``.

Also measured in the same run: batched throughput (queries/s), target-space encoding rate, one training step
(forward + backward + AdamW on S skills + 3S texts with the scorer's all-pairs scores and the MTM loss),
latency as the target space grows from 1k to ~100k ESCO skill labels (``latency_vs_targets.png``), and the
straightforward way a user would do it today: re-encoding the target space for every query, or scoring the
cached targets one by one in a Python loop, as a slowdown ratio against the cached ranker.

Outputs in the run directory: ``bench.md``, ``bench.json``, ``latency_vs_targets.png``; ``publish=true``
copies them to ``experiments/results/bench_<model>*``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from uwe_lightning.io import DataError
from uwe_lightning.paths import CONF_DIR, REPO_DIR
from uwe_lightning.ranking import cache as cache_lib
from uwe_lightning.ranking.packed import EncodedTexts, memory_bytes
from uwe_lightning.ranking.ranker import Ranker

RESULTS_DIR = REPO_DIR / "experiments" / "results"


# ----------------------------------------------------------------------------------------------------------
# Small helpers
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
    """Wall seconds of ``fn()``, synchronising the GPU around it."""
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
    info = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "device": str(device),
        "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def fmt_count(value: float) -> str:
    """1.23B / 45.6M / 7.8K."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


def fmt_pm(stats: dict, scale: float = 1.0, digits: int = 1, unit: str = "") -> str:
    if not stats or stats.get("n", 0) == 0 or stats["mean"] is None or math.isnan(stats["mean"]):
        return "n/a"
    se = stats.get("se")
    se_txt = "" if se is None or math.isnan(se) else f" ± {se * scale:.{digits}f}"
    return f"{stats['mean'] * scale:.{digits}f}{se_txt}{unit}"


def fmt_flops(stats: dict) -> str:
    if not stats or stats.get("n", 0) == 0:
        return "n/a"
    mean, se = stats["mean"], stats.get("se", math.nan)
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if mean >= scale:
            se_txt = "" if math.isnan(se) else f" ± {se / scale:.2f}"
            return f"{mean / scale:.2f}{se_txt}{unit}"
    return f"{mean:.0f}"


# ----------------------------------------------------------------------------------------------------------
# Target spaces (encoded once, cached, shared by every scorer that stores the same tensors)
# ----------------------------------------------------------------------------------------------------------


class EmbeddingMemo:
    """Raw token embeddings by text for this run, so that texts shared by target spaces are encoded once."""

    def __init__(self, ranker: Ranker) -> None:
        self.ranker = ranker
        self.store: dict[str, torch.Tensor] = {}

    def embed(self, texts: Sequence[str], show_progress: bool = False) -> list[torch.Tensor]:
        missing = [t for t in dict.fromkeys(texts) if t not in self.store]
        if missing:
            for text, tokens in zip(missing, self.ranker.embed(missing, show_progress=show_progress), strict=True):
                self.store[text] = tokens.to(torch.float16)
        return [self.store[t].float() for t in texts]

    def clear(self) -> None:
        self.store.clear()


@dataclass
class SpaceInfo:
    """One distinct target space and its encoded forms (token level and/or pooled)."""

    name: str
    texts: list[str]
    tasks: list[str]
    encoded: dict[bool, EncodedTexts]
    cache: dict[str, dict]


def build_space(
    name: str, texts: list[str], rankers: dict[bool, Ranker], memo: EmbeddingMemo, cache_dir: Path | None,
    show_progress: bool = False,
) -> SpaceInfo:
    """Each needed variant (pooled or not) from the cache, else embedded (through ``memo``) and cached."""
    encoded, cache_info = {}, {}
    for pooled, ranker in rankers.items():
        def build(ranker: Ranker = ranker) -> tuple[torch.Tensor, torch.Tensor]:
            packed = ranker.pack(memo.embed(texts, show_progress), "target")
            return packed.tokens, packed.offsets

        start = time.perf_counter()
        if cache_dir is None:
            tokens, offsets = build()
            hit, path = False, None
        else:
            key = ranker.cache_key(texts, cache_dir)
            path = cache_lib.cache_path(cache_dir, key)
            tokens, offsets, hit = cache_lib.load_or_build(path, key, build)
        seconds = time.perf_counter() - start
        encoded[pooled] = EncodedTexts(tokens, offsets, pooled=pooled,
                                       model_id=ranker.checkpoint_id(allow_state_hash=False))
        cache_info["pooled" if pooled else "tokens"] = {
            "hit": hit, "seconds": round(seconds, 3), "path": str(path) if path else None,
            "bytes": memory_bytes(encoded[pooled]),
        }
    return SpaceInfo(name, texts, [], encoded, cache_info)


def encoding_rate(ranker: Ranker, texts: Sequence[str], sample: int, seed: int) -> dict:
    """Encoding throughput on a fixed sample of a target space, and the full space's estimated time."""
    picked = sample_queries(list(texts), min(sample, len(texts)), seed)
    ranker.embed(picked[: min(16, len(picked))])  # warm-up
    device = ranker.device
    holder: dict = {}
    seconds = timed(lambda: holder.setdefault("out", ranker.embed(picked)), device)
    n_tokens = sum(t.shape[0] for t in holder["out"])
    rate = len(picked) / seconds
    return {
        "sample": len(picked), "seconds": round(seconds, 3), "texts_per_s": round(rate, 1),
        "tokens_per_text": round(n_tokens / len(picked), 2), "n_texts": len(texts),
        "estimated_full_s": round(len(texts) / rate, 2),
    }


# ----------------------------------------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------------------------------------


def single_query_latencies(ranker: Ranker, queries: Sequence[str], space: EncodedTexts, k: int) -> list[float]:
    """Milliseconds per query, each ranked alone end to end (tokenise, encode, score, top-k)."""
    return [1000 * timed(lambda q=q: ranker.rank([q], space, k=k), ranker.device) for q in queries]


def scoring_latencies(ranker: Ranker, queries: Sequence[str], space: EncodedTexts, k: int) -> list[float]:
    """Milliseconds per query for scoring + top-k only (each query encoded beforehand, untimed)."""
    encoded = [ranker.encode([q], "query") for q in queries]
    return [1000 * timed(lambda e=e: ranker.rank(e, space, k=k), ranker.device) for e in encoded]


def flops_per_query(ranker: Ranker, queries: Sequence[str], space: EncodedTexts, k: int) -> list[int]:
    """FLOPs (2 per multiply-add) counted by FlopCounterMode for encode + score of each query."""
    from torch.utils.flop_counter import FlopCounterMode

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


def training_texts(data_dir, n_skills: int, seed: int, fallback: Sequence[str] | None = None) -> dict[str, list[str]]:
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
        if not fallback:
            raise
        pool = list(fallback)
        take = lambda offset: [pool[(offset + i) % len(pool)] for i in range(n_skills)]  # noqa: E731
        return {"S": take(0), "J": take(1), "V": take(2), "A": take(3)}


def _loss_fn(name: str) -> tuple[Callable, str]:
    """``uwe_lightning.loss.build_loss(name)`` when that module exists, else a plain InfoNCE on the scores."""
    try:
        from uwe_lightning.loss import build_loss
    except ImportError:
        def infonce(scores, pos_masks, pair_index):
            fwd = torch.cat([scores[g][0] for g in scores], dim=1)
            columns = torch.cat([pair_index[g] + i * len(pair_index[g]) for i, g in enumerate(scores)])
            return torch.nn.functional.cross_entropy(fwd.float() / 0.05, columns), {}

        return infonce, "infonce (plain, uwe_lightning.loss absent)"
    return build_loss(name), f"uwe_lightning.loss:{name}"


def train_step_times(ranker: Ranker, texts: dict[str, list[str]], max_length: int, warmup: int, steps: int,
                     loss_name: str) -> dict:
    """Milliseconds of forward + backward + AdamW step on S skills + 3S texts (one encoder batch).

    A copy of the encoder is trained, so the ranker's weights stay untouched.
    """
    from uwe_lightning.model.pairwise import pairwise_scores

    encoder = copy.deepcopy(ranker.encoder).train()
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=1e-6)
    loss_fn, loss_label = _loss_fn(loss_name)
    graphs = [g for g in ("J", "V", "A") if g in texts]
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


# ----------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------


def load_datasets(names: Sequence[str], split: str, data_dir) -> tuple[dict, dict[str, str]]:
    """Available tasks' datasets, and why the others are not available (never silently dropped)."""
    from uwe_lightning.workbench.dataset import TaskUnavailable
    from uwe_lightning.workbench.registry import get_task

    datasets, unavailable = {}, {}
    for name in names:
        try:
            datasets[name] = get_task(name).load(split, data_dir)
        except (TaskUnavailable, DataError, KeyError) as err:
            unavailable[name] = f"{type(err).__name__}: {err}"
    return datasets, unavailable


def _growth_texts(data_dir) -> list[str]:
    from uwe_lightning.esco import skill_texts_with_alt_labels

    return skill_texts_with_alt_labels(data_dir, "v1.2.0")


def run(cfg: DictConfig, out_dir: str | Path, datasets: dict | None = None,
        growth_texts: list[str] | None = None) -> dict:
    """The whole benchmark; ``datasets``/``growth_texts`` replace the data pack (tests)."""
    wall_start = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = _logger(cfg.verbose)

    base = Ranker.from_pretrained(
        str(cfg.model.backbone), scorer="mean", model_dir=cfg.paths.model_dir, batch_size=cfg.batch_size,
        device=cfg.device, **({"max_length": cfg.max_length} if cfg.max_length else {}),
    )
    device = base.device
    machine = machine_info(device)
    taus = dict(cfg.get("taus") or {})
    rankers = {s: base.with_scorer(s, tau=taus.get(s)) for s in cfg.scorers}
    by_pooling = {}
    for r in rankers.values():
        by_pooling.setdefault(r.pooled("target"), r)
    params = sum(p.numel() for p in base.encoder.parameters())
    model_info = {"name": cfg.model.name, "backbone": str(cfg.model.backbone), "params": params,
                  "hidden_size": base.encoder.hidden_size, "max_length": base.effective_max_length(),
                  "checkpoint": base.checkpoint_id()}
    log(f"model {cfg.model.name}: {fmt_count(params)} parameters, h={base.encoder.hidden_size}, device {device}, "
        f"{torch.get_num_threads()} threads")

    unavailable: dict[str, str] = {}
    if datasets is None:
        datasets, unavailable = load_datasets(list(cfg.tasks), cfg.split, cfg.paths.data_dir)
    for name, reason in unavailable.items():
        log(f"skipping {name}: {reason}")
    if not datasets:
        raise DataError(f"no WorkBench task is available for split {cfg.split!r}: {unavailable}")

    cache_dir = (Path(cfg.paths.cache_dir).expanduser() if cfg.paths.cache_dir else REPO_DIR / ".cache") / "targets"
    cache_dir = cache_dir if cfg.cache else None
    memo = EmbeddingMemo(base)

    # Distinct target spaces (SkillNorm and Job2Skill share theirs): encoded once, cached.
    spaces: dict[str, SpaceInfo] = {}
    task_space: dict[str, str] = {}
    for name, ds in datasets.items():
        digest = cache_lib.texts_sha256(ds.targets)
        if digest not in spaces:
            log(f"target space of {name}: {len(ds.targets)} texts")
            spaces[digest] = build_space(name, list(ds.targets), by_pooling, memo, cache_dir, cfg.show_progress)
        spaces[digest].tasks.append(name)
        task_space[name] = digest
    memo.clear()

    encoding = []
    for info in spaces.values():
        rate = encoding_rate(base, info.texts, int(cfg.encoding.sample), int(cfg.seed))
        encoding.append({"space": info.name, "tasks": info.tasks, **rate, "cache": info.cache})
        log(f"encoding {info.name} space: {rate['texts_per_s']} texts/s -> ~{rate['estimated_full_s']}s "
            f"for {rate['n_texts']} texts")

    lat_cfg = cfg.latency
    n_warm, n_timed, n_flop = int(lat_cfg.warmup), int(lat_cfg.queries), int(lat_cfg.flop_queries)
    throughput_tasks = list(cfg.throughput.tasks) if cfg.throughput.tasks else list(datasets)
    per_scorer: dict[str, dict] = {}
    for scorer, ranker in rankers.items():
        per_task = {}
        for name, ds in datasets.items():
            space = spaces[task_space[name]].encoded[ranker.pooled("target")]
            picked = sample_queries(ds.queries, n_warm + n_timed + n_flop, int(cfg.seed))
            single_query_latencies(ranker, picked[:n_warm], space, cfg.k)  # warm-up
            lat = single_query_latencies(ranker, picked[n_warm : n_warm + n_timed], space, cfg.k)
            flops = flops_per_query(ranker, picked[n_warm + n_timed :], space, cfg.k)
            row = {"n_targets": len(space), "n_queries": len(lat), "latency_ms": mean_se(lat),
                   "latency_ms_median": float(np.median(lat)) if lat else math.nan, "flops": mean_se(flops)}
            if name in throughput_tasks and int(cfg.throughput.batch) > 0:
                batch = sample_queries(ds.queries, int(cfg.throughput.batch), int(cfg.seed) + 1)
                row["throughput"] = batched_throughput(ranker, batch, space, cfg.k)
            per_task[name] = row
            log(f"{scorer:>13} {name:<12} {row['latency_ms']['mean']:8.2f} ms/query  "
                f"{fmt_count(row['flops']['mean'])} FLOPs/query"
                + (f"  {row['throughput']['queries_per_s']:.1f} q/s" if "throughput" in row else ""))
        per_scorer[scorer] = {
            "tau": ranker.spec.tau,
            "pool_query": ranker.spec.pool_query,
            "pool_target": ranker.spec.pool_target,
            "latency_ms": mean_se([r["latency_ms"]["mean"] for r in per_task.values()]),
            "flops": mean_se([r["flops"]["mean"] for r in per_task.values()]),
            "throughput_qps": mean_se([r["throughput"]["queries_per_s"] for r in per_task.values()
                                       if "throughput" in r]),
            "per_task": per_task,
        }

    # Training step
    tcfg = cfg.train_step
    fallback = growth_texts or [t for ds in datasets.values() for t in ds.queries]
    batch_texts = training_texts(cfg.paths.data_dir, int(tcfg.skills), int(cfg.seed), fallback)
    for scorer, ranker in rankers.items():
        per_scorer[scorer]["train_step"] = train_step_times(
            ranker, batch_texts, int(tcfg.max_length), int(tcfg.warmup), int(tcfg.steps), str(tcfg.loss))
        log(f"{scorer:>13} train step {per_scorer[scorer]['train_step']['ms']['mean']:.0f} ms "
            f"({tcfg.skills} skills + {3 * int(tcfg.skills)} texts)")

    growth = measure_growth(cfg, rankers, by_pooling, growth_texts, datasets, cache_dir, log)
    naive = measure_naive(cfg, rankers, datasets, spaces, task_space, per_scorer, log)

    machine["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result = {
        "command": " ".join([Path(sys.executable).name, "-m", "uwe_lightning.bench", *sys.argv[1:]]),
        "machine": machine,
        "model": model_info,
        "split": cfg.split,
        "tasks": {"measured": list(datasets), "unavailable": unavailable,
                  "n_targets": {n: ds.n_targets for n, ds in datasets.items()}},
        "protocol": {"warmup": n_warm, "timed_queries": n_timed, "flop_queries": n_flop, "k": int(cfg.k),
                     "throughput_batch": int(cfg.throughput.batch), "seed": int(cfg.seed)},
        "encoding": encoding,
        "scorers": per_scorer,
        "growth": growth,
        "naive": naive,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    result["wall_s"] = round(time.perf_counter() - wall_start, 1)
    write_outputs(result, out_dir)
    if cfg.publish:
        dest = RESULTS_DIR if cfg.publish is True else Path(str(cfg.publish))
        publish(out_dir, dest, cfg.model.name)
        log(f"published to {dest}")
    return result


def measure_growth(cfg, rankers: dict[str, Ranker], by_pooling: dict[bool, Ranker], growth_texts,
                   datasets: dict, cache_dir: Path | None, log) -> dict:
    """Single-query latency per scorer as the target space grows (nested random subsets of one big space)."""
    gcfg = cfg.growth
    if not gcfg.sizes:
        return {}
    texts = growth_texts if growth_texts is not None else _growth_texts(cfg.paths.data_dir)
    sizes = sorted({min(int(s), len(texts)) for s in gcfg.sizes})
    # Nested random subsets: size n is the first n texts of one fixed permutation; only those are encoded.
    order = np.random.default_rng(int(cfg.seed)).permutation(len(texts))[: sizes[-1]]
    texts = [texts[i] for i in order]
    log(f"growth: target space of {len(texts)} texts, sizes {sizes}")
    memo = EmbeddingMemo(next(iter(rankers.values())))
    space = build_space("growth", texts, by_pooling, memo, cache_dir, cfg.show_progress)
    memo.clear()
    query_pool = [q for ds in datasets.values() for q in ds.queries[:200]]
    picked = sample_queries(query_pool, int(gcfg.warmup) + int(gcfg.queries), int(cfg.seed) + 2)
    warm, timed_q = picked[: int(gcfg.warmup)], picked[int(gcfg.warmup) :]
    latency: dict[str, list[dict]] = {s: [] for s in rankers}
    scoring: dict[str, list[dict]] = {s: [] for s in rankers}  # query already encoded
    bytes_per: dict[str, list[int]] = {"tokens": [], "pooled": []}
    for size in sizes:
        subsets = {pooled: enc.select(torch.arange(size)) for pooled, enc in space.encoded.items()}
        for pooled, enc in subsets.items():
            bytes_per["pooled" if pooled else "tokens"].append(memory_bytes(enc))
        for scorer, ranker in rankers.items():
            sub = subsets[ranker.pooled("target")]
            single_query_latencies(ranker, warm, sub, cfg.k)
            lat = single_query_latencies(ranker, timed_q, sub, cfg.k)
            latency[scorer].append({**mean_se(lat), "median": float(np.median(lat))})
            scoring[scorer].append(mean_se(scoring_latencies(ranker, timed_q, sub, cfg.k)))
            log(f"growth {scorer:>13} {size:>7} targets: {latency[scorer][-1]['mean']:8.2f} ms/query end to end, "
                f"{scoring[scorer][-1]['mean']:8.2f} ms scoring + top-k")
        del subsets
    source = "given texts" if growth_texts is not None else "ESCO v1.2.0 skill preferredLabels + altLabels"
    return {"n_texts": len(texts), "source": source, "sizes": sizes, "queries": len(timed_q),
            "latency_ms": latency, "score_ms": scoring, "bytes": {k: v for k, v in bytes_per.items() if v},
            "cache": space.cache}


def measure_naive(cfg, rankers: dict[str, Ranker], datasets: dict, spaces: dict, task_space: dict,
                  per_scorer: dict, log) -> dict:
    """The straightforward ways (re-encode per query; Python loop over targets) vs the cached ranker."""
    ncfg = cfg.naive
    name = ncfg.task if ncfg.task in datasets else next(iter(datasets))
    ds = datasets[name]
    out: dict = {"task": name, "n_targets": ds.n_targets}
    queries = sample_queries(ds.queries, max(int(ncfg.reencode_queries), int(ncfg.loop_queries)), int(cfg.seed) + 3)
    scorer = ncfg.reencode_scorer if ncfg.reencode_scorer in rankers else next(iter(rankers))
    if int(ncfg.reencode_queries) > 0:
        lat = naive_reencode_latencies(rankers[scorer], queries[: int(ncfg.reencode_queries)], ds.targets, cfg.k)
        cached = per_scorer[scorer]["per_task"][name]["latency_ms"]["mean"]
        out["reencode"] = {"scorer": scorer, "latency_ms": mean_se(lat), "cached_latency_ms": cached,
                           "slowdown": mean_se(lat)["mean"] / cached}
        log(f"naive re-encode ({scorer}, {name}): {out['reencode']['latency_ms']['mean']:.0f} ms/query = "
            f"x{out['reencode']['slowdown']:.0f} the cached ranker")
    if int(ncfg.loop_queries) > 0:
        out["python_loop"] = {}
        for s, ranker in rankers.items():
            space = spaces[task_space[name]].encoded[ranker.pooled("target")]
            lat = naive_loop_latencies(ranker, queries[: int(ncfg.loop_queries)], space, cfg.k)
            cached = per_scorer[s]["per_task"][name]["latency_ms"]["mean"]
            out["python_loop"][s] = {"latency_ms": mean_se(lat), "cached_latency_ms": cached,
                                     "slowdown": mean_se(lat)["mean"] / cached}
            log(f"naive python loop ({s}, {name}): {mean_se(lat)['mean']:.0f} ms/query = "
                f"x{out['python_loop'][s]['slowdown']:.1f} the cached ranker")
    return out


# ----------------------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------------------


def markdown(result: dict) -> str:
    model, machine = result["model"], result["machine"]
    lines = [
        f"# Inference and training cost: {model['name']} ({result['split']} target spaces)",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {machine['cpu_count']} CPUs ({machine['cpus_usable']} usable, {machine['torch_threads']} torch "
        f"threads), device `{machine['device']}`{' (' + machine['gpu'] + ')' if machine.get('gpu') else ''}, "
        f"torch {machine['torch']}, Python {machine['python']}; load average at start "
        f"{_load(machine.get('load_average_start'))}, at end {_load(machine.get('load_average_end'))}.  ",
        f"Wall time: {result['wall_s']:.0f} s.",
        *_shared_note(machine),
        "",
        f"Protocol (paper Appendix A): per task, target space cached; {result['protocol']['warmup']} warm-up "
        f"queries, {result['protocol']['timed_queries']} timed single queries end to end (tokenise, encode, "
        f"score, top-{result['protocol']['k']}), FLOPs on {result['protocol']['flop_queries']} more "
        "(FlopCounterMode, encode + score; 2 FLOPs per multiply-add). Mean ± SE over tasks.",
        "",
        "| Model | Scorer | Param. | h | Latency/query (ms) | FLOPs/query | Throughput (q/s, batch "
        f"{result['protocol']['throughput_batch']}) | Train step (ms) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for scorer, row in result["scorers"].items():
        lines.append(
            f"| {model['name']} | {scorer} | {fmt_count(model['params'])} | {model['hidden_size']} | "
            f"{fmt_pm(row['latency_ms'])} | {fmt_flops(row['flops'])} | {fmt_pm(row['throughput_qps'])} | "
            f"{fmt_pm(row.get('train_step', {}).get('ms', {}), digits=0)} |"
        )
    tasks = result["tasks"]
    lines += ["", f"Tasks measured: {', '.join(tasks['measured'])}."]
    if tasks["unavailable"]:
        lines.append("Unavailable (skipped): " + "; ".join(f"{n} ({r})" for n, r in tasks["unavailable"].items()))
    lines += ["", "## Per task (latency ms/query, mean ± SE over queries; FLOPs/query)", ""]
    names = tasks["measured"]
    lines.append("| Scorer | " + " | ".join(f"{n} ({tasks['n_targets'][n]:,} targets)" for n in names) + " |")
    lines.append("|---|" + "---|" * len(names))
    for scorer, row in result["scorers"].items():
        cells = [f"{fmt_pm(row['per_task'][n]['latency_ms'])} ms, {fmt_count(row['per_task'][n]['flops']['mean'])}"
                 for n in names]
        lines.append(f"| {scorer} | " + " | ".join(cells) + " |")

    lines += ["", "## Target-space encoding", "",
              "| Space (tasks) | Texts | Tokens/text | Encode rate (texts/s) | Full encode (s, est.) | Cache |",
              "|---|---|---|---|---|---|"]
    for enc in result["encoding"]:
        cache = ", ".join(f"{k}: {'hit' if v['hit'] else 'built'} {v['seconds']:.1f}s {v['bytes'] / 2**20:.1f} MiB"
                          for k, v in enc["cache"].items())
        lines.append(f"| {enc['space']} ({', '.join(enc['tasks'])}) | {enc['n_texts']:,} | {enc['tokens_per_text']} | "
                     f"{enc['texts_per_s']} | {enc['estimated_full_s']} | {cache} |")

    train = next(iter(result["scorers"].values())).get("train_step")
    if train:
        lines += ["", f"Train step: {train['skills']} skills + {train['texts'] - train['skills']} texts "
                  f"(J, V, A), max {train['max_length']} tokens, forward + backward + {train['optimizer']}, "
                  f"loss {train['loss']}; mean ± SE over steps."]

    growth = result.get("growth")
    if growth:
        lines += ["", f"## Latency vs target-space size ({growth['source']}, {growth['queries']} queries per point; "
                  "ms per query end to end, and scoring + top-k only with the query already encoded)",
                  "", "| Scorer | " + " | ".join(f"{s:,}" for s in growth["sizes"]) + " |",
                  "|---|" + "---|" * len(growth["sizes"])]
        for scorer, points in growth["latency_ms"].items():
            lines.append(f"| {scorer} | " + " | ".join(f"{p['mean']:.1f}" for p in points) + " |")
        for scorer, points in growth.get("score_ms", {}).items():
            lines.append(f"| {scorer}, scoring only | " + " | ".join(f"{p['mean']:.1f}" for p in points) + " |")
        for kind, values in growth.get("bytes", {}).items():
            lines.append(f"| _{kind} MiB_ | " + " | ".join(f"{v / 2**20:.1f}" for v in values) + " |")
        lines += ["", "![latency vs targets](latency_vs_targets.png)"]

    naive = result.get("naive") or {}
    if naive:
        lines += ["", f"## Against the straightforward way ({naive['task']}, {naive['n_targets']:,} targets)", "",
                  "| Method | Scorer | Latency/query (ms) | Cached ranker (ms) | Slowdown |", "|---|---|---|---|---|"]
        if "reencode" in naive:
            r = naive["reencode"]
            lines.append(f"| re-encode targets per query | {r['scorer']} | {fmt_pm(r['latency_ms'], digits=0)} | "
                         f"{r['cached_latency_ms']:.1f} | ×{r['slowdown']:.0f} |")
        for scorer, r in naive.get("python_loop", {}).items():
            lines.append(f"| Python loop over cached targets | {scorer} | {fmt_pm(r['latency_ms'], digits=0)} | "
                         f"{r['cached_latency_ms']:.1f} | ×{r['slowdown']:.1f} |")
    return "\n".join(lines) + "\n"


def _shared_note(machine: dict) -> list[str]:
    """A warning when other processes were using the CPUs as the run started (timings inflated and noisy)."""
    start = (machine.get("load_average_start") or [0.0])[0]
    if machine.get("device", "cpu") != "cpu" or start <= 0.5:
        return []
    end = (machine.get("load_average_end") or [math.nan])[0]
    return ["", f"**Shared machine:** the 1-minute load average was {start:.1f} on {machine['cpus_usable']} CPUs "
            f"before this run started ({end:.1f} at its end, its own work included): CPU timings include contention "
            "with other processes and are upper bounds."]


def _load(values) -> str:
    return "n/a" if not values else "/".join(f"{v:.1f}" for v in values)


def plot_growth(result: dict, path: Path) -> Path | None:
    growth = result.get("growth")
    if not growth:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, scorer in enumerate(growth["latency_ms"]):
        for key, style, label in (("latency_ms", "-", scorer), ("score_ms", "--", f"{scorer} (scoring only)")):
            series = growth.get(key, {}).get(scorer)
            if not series:
                continue
            means = [p["mean"] for p in series]
            errors = [0.0 if math.isnan(p["se"]) else p["se"] for p in series]
            ax.errorbar(growth["sizes"], means, yerr=errors, marker="o", capsize=3, linestyle=style,
                        color=colors[i % len(colors)], label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("targets in the (cached) target space")
    ax.set_ylabel("latency per query (ms)")
    ax.set_title(f"{result['model']['name']} on {result['machine']['device']}: single-query latency "
                 "(solid: end to end; dashed: query pre-encoded)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(result: dict, out_dir: Path) -> list[Path]:
    paths = [out_dir / "bench.json", out_dir / "bench.md"]
    paths[0].write_text(json.dumps(result, indent=1, default=str))
    paths[1].write_text(markdown(result))
    png = plot_growth(result, out_dir / "latency_vs_targets.png")
    return paths + ([png] if png else [])


def publish(out_dir: Path, dest: Path, model_name: str) -> list[Path]:
    """Copy the outputs as ``bench_<model>.md/.json`` and ``bench_<model>_latency_vs_targets.png``."""
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for name, target in (("bench.md", f"bench_{model_name}.md"), ("bench.json", f"bench_{model_name}.json"),
                         ("latency_vs_targets.png", f"bench_{model_name}_latency_vs_targets.png")):
        if (out_dir / name).is_file():
            copied.append(Path(shutil.copy2(out_dir / name, dest / target)))
    for path in copied:  # published files: repo-relative paths, and the report's link to the renamed plot
        if path.suffix in {".md", ".json"}:
            text = path.read_text().replace(f"{REPO_DIR}/", "")
            text = text.replace("(latency_vs_targets.png)", f"(bench_{model_name}_latency_vs_targets.png)")
            path.write_text(text)
    return copied


def _logger(show: bool) -> Callable[[str], None]:
    start = time.perf_counter()

    def log(message: str) -> None:
        if show:
            print(f"[bench {time.perf_counter() - start:7.1f}s] {message}", flush=True)

    return log


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="bench")
def main(cfg: DictConfig) -> None:
    result = run(cfg, cfg.paths.output_dir)
    print(markdown(result))


if __name__ == "__main__":
    main()
