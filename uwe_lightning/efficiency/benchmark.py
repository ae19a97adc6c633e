"""The benchmark run: which rankers, tasks, queries and sizes are measured, in which order, and the result.

:func:`run` builds one ranker per scorer on a shared encoder, encodes each distinct target space once
(:mod:`~uwe_lightning.efficiency.spaces`), measures (:mod:`~uwe_lightning.efficiency.measure`) and writes
and publishes the report (:mod:`~uwe_lightning.efficiency.report`).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from uwe_lightning.efficiency.measure import (
    OtherCpu,
    batched_throughput,
    encoding_rate,
    flops_per_query,
    load_average,
    machine_info,
    mean_se,
    naive_loop_latencies,
    naive_reencode_latencies,
    sample_queries,
    scoring_latencies,
    single_query_latencies,
    train_step_times,
    training_texts,
)
from uwe_lightning.efficiency.report import default_results_dir, fmt_count, publish, write_outputs
from uwe_lightning.efficiency.spaces import (
    SpaceInfo,
    TextMemo,
    build_space,
    by_target_pooling,
    encode_task_spaces,
)
from uwe_lightning.io import ConfigError, DataError
from uwe_lightning.model.pretrained import ModelSpec, load_model
from uwe_lightning.paths import resolve_cache_dir
from uwe_lightning.ranking.packed import memory_bytes
from uwe_lightning.ranking.ranker import Ranker
from uwe_lightning.workbench.dataset import RankingDataset
from uwe_lightning.workbench.runner import load_tasks

Log = Callable[[str], None]


def load_datasets(names: Sequence[str], split: str, data_dir: str | Path | None
                  ) -> tuple[dict[str, RankingDataset], dict[str, str]]:
    """:func:`~uwe_lightning.workbench.runner.load_tasks`, task by task, so that an unknown name or a
    missing pack file skips that task with its reason (``"<error type>: <message>"``) instead of ending the
    run: the bench reports what it could not measure, never drops it silently."""
    datasets: dict[str, RankingDataset] = {}
    unavailable: dict[str, str] = {}
    for name in names:
        try:
            found, missing = load_tasks([name], split, data_dir)
        except (DataError, ConfigError, KeyError) as err:  # ConfigError: an unknown task name
            unavailable[name] = f"{type(err).__name__}: {err}"
            continue
        datasets.update(found)
        unavailable.update({n: f"TaskUnavailable: {reason}" for n, reason in missing.items()})
    return datasets, unavailable


def _growth_texts(data_dir: str | Path | None) -> list[str]:
    from uwe_lightning.esco import skill_texts_with_alt_labels

    return skill_texts_with_alt_labels(data_dir, "v1.2.0")


def _logger(show: bool) -> Log:
    start = time.perf_counter()

    def log(message: str) -> None:
        if show:
            print(f"[bench {time.perf_counter() - start:7.1f}s] {message}", flush=True)

    return log


def measure_scorers(cfg: DictConfig, rankers: Mapping[str, Ranker], datasets: Mapping[str, RankingDataset],
                    spaces: Mapping[str, SpaceInfo], task_space: Mapping[str, str], log: Log) -> dict[str, dict]:
    """Per scorer and task: warm-up, timed single queries, FLOP-counted queries, batched throughput; then the
    mean over tasks (the table's row)."""
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
    return per_scorer


def measure_growth(cfg: DictConfig, rankers: Mapping[str, Ranker], growth_texts: list[str] | None,
                   datasets: Mapping[str, RankingDataset], cache_dir: Path | None, log: Log) -> dict:
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
    by_pooling = by_target_pooling(rankers)
    memo = TextMemo(next(iter(rankers.values())))
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


def measure_naive(cfg: DictConfig, rankers: Mapping[str, Ranker], datasets: Mapping[str, RankingDataset],
                  spaces: Mapping[str, SpaceInfo], task_space: Mapping[str, str], per_scorer: Mapping[str, dict],
                  log: Log) -> dict:
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


def run(cfg: DictConfig, out_dir: str | Path, datasets: dict[str, RankingDataset] | None = None,
        growth_texts: list[str] | None = None) -> dict:
    """The whole benchmark; ``datasets``/``growth_texts`` replace the data pack (tests)."""
    wall_start = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = _logger(cfg.verbose)

    spec: ModelSpec = hydra.utils.instantiate(cfg.model)
    if spec.kind == "sentence_transformers" and set(cfg.scorers) != {"mean"}:
        raise ValueError(f"scorers={list(cfg.scorers)}: model={spec.name} (sentence-transformers) gives one vector "
                         "per text; use scorers=[mean]")
    base = Ranker.from_model(
        load_model(spec, scorer="mean", max_length=cfg.max_length or None, model_dir=cfg.paths.model_dir),
        batch_size=cfg.batch_size, device=cfg.device,
    )
    base.display_name = str(spec.backbone)
    device = base.device
    machine = machine_info(device)
    others = OtherCpu()
    taus = dict(cfg.get("taus") or {})
    rankers = {s: base.with_scorer(s, tau=taus.get(s)) for s in cfg.scorers}
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

    cache_dir = resolve_cache_dir(cfg.paths.cache_dir) / "targets" if cfg.cache else None
    spaces, task_space = encode_task_spaces(datasets, by_target_pooling(rankers), cache_dir, cfg.show_progress, log)

    encoding = []
    for info in spaces.values():
        rate = encoding_rate(base, info.texts, int(cfg.encoding.sample), int(cfg.seed))
        encoding.append({"space": info.name, "tasks": info.tasks, **rate, "cache": info.cache})
        log(f"encoding {info.name} space: {rate['texts_per_s']} texts/s -> ~{rate['estimated_full_s']}s "
            f"for {rate['n_texts']} texts")

    per_scorer = measure_scorers(cfg, rankers, datasets, spaces, task_space, log)

    tcfg = cfg.train_step
    fallback = growth_texts or [t for ds in datasets.values() for t in ds.queries]
    batch_texts = training_texts(cfg.paths.data_dir, int(tcfg.skills), int(cfg.seed), fallback)
    for scorer, ranker in rankers.items():
        per_scorer[scorer]["train_step"] = train_step_times(
            ranker, batch_texts, int(tcfg.max_length), int(tcfg.warmup), int(tcfg.steps), str(tcfg.loss))
        log(f"{scorer:>13} train step {per_scorer[scorer]['train_step']['ms']['mean']:.0f} ms "
            f"({tcfg.skills} skills + {3 * int(tcfg.skills)} texts)")

    growth = measure_growth(cfg, rankers, growth_texts, datasets, cache_dir, log)
    naive = measure_naive(cfg, rankers, datasets, spaces, task_space, per_scorer, log)

    machine["load_average_end"] = load_average()
    machine["others_cpus"] = others.now()
    result = {
        "command": " ".join([Path(sys.executable).name, "-m", "uwe_lightning.bench", *sys.argv[1:]]),
        "machine": machine,
        "model": model_info,
        "split": cfg.split,
        "tasks": {"measured": list(datasets), "unavailable": unavailable,
                  "n_targets": {n: ds.n_targets for n, ds in datasets.items()}},
        "protocol": {"warmup": int(cfg.latency.warmup), "timed_queries": int(cfg.latency.queries),
                     "flop_queries": int(cfg.latency.flop_queries), "k": int(cfg.k),
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
        dest = default_results_dir() if cfg.publish is True else Path(str(cfg.publish))
        publish(out_dir, dest, cfg.model.name)
        log(f"published to {dest}")
    return result
