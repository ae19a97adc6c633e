"""``python -m uwe_lightning.enrich <titles|merge|paraphrases|sentences|all> [key=value ...]`` (``conf/enrich.yaml``).

The first argument is the step (Hydra sees it as ``command=<step>``); ``all`` runs titles, merge, paraphrases,
sentences in that order. This module binds the config to :mod:`uwe_lightning.enrichment.pipeline`: it builds
the endpoint, cache, leakage guard and (for ``merge``) the encoder, and prints one ``[enrich]`` line per step.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from uwe_lightning.cli.errors import USER_ERROR_EXIT, hydra_entry_point, run_reporting_user_errors
from uwe_lightning.enrichment.client import ChatClient, Endpoint
from uwe_lightning.enrichment.generate import Generator, request_params
from uwe_lightning.enrichment.pipeline import (
    default_settings,
    dry_run,
    generate_kind,
    load_skill_list,
    new_cache,
    run_merge,
)
from uwe_lightning.enrichment.prices import PRICES_AS_OF, price_of
from uwe_lightning.enrichment.prompts import KINDS
from uwe_lightning.io import ConfigError, atomic_write_json, check_whole_number, make_dirs
from uwe_lightning.paths import CONF_DIR
from uwe_lightning.protocol.leakage import QueryGuard, query_key

TOOL = "enrich"
STEPS = ("titles", "merge", "paraphrases", "sentences")
COMMANDS = (*STEPS, "all")


def log(message: str) -> None:
    print(f"[{TOOL}] {message}", file=sys.stderr, flush=True)


def _steps(command: str | None) -> list[str]:
    if command not in COMMANDS:
        raise ConfigError(f"give a step first: python -m uwe_lightning.enrich <{'|'.join(COMMANDS)}> [key=value ...] "
                          f"(got {command!r})")
    return list(STEPS) if command == "all" else [command]


def _generator(name: str, cfg: DictConfig, cache, client, guard) -> Generator:
    e = cfg.endpoint
    params = request_params(e.temperature, e.max_tokens, e.response_format, e.seed, name,
                            OmegaConf.to_container(e.extra_body) if e.extra_body else None)  # type: ignore[arg-type]
    section = OmegaConf.to_container(cfg[name])
    for key in ("n", "max_rounds", "min_words"):
        check_whole_number(section.get(key, 1), f"{name}.{key}")  # type: ignore[union-attr]
    settings = default_settings(name, section)  # type: ignore[arg-type]
    return Generator(KINDS[name], settings, str(e.model), params, cache, client, guard)


def _real_titles(cfg: DictConfig) -> tuple[list[str], set[tuple[str, str]] | None]:
    """The titles to merge into: the open protocol's J training titles (and its edges), or a table's ``text``."""
    spec = str(cfg.merge.real_titles)
    if spec == "open":
        from uwe_lightning.protocol.build import build_open_protocol

        protocol = build_open_protocol(cfg.paths.data_dir, cfg.leakage.val_fraction, cfg.leakage.altlabel_train_fraction)
        graph = protocol.graphs["J"]
        existing = {(query_key(graph.texts[t]), protocol.vocab.uris[s])
                    for s, t in zip(graph.skill_index, graph.text_index, strict=True)}
        return list(graph.texts), existing
    from uwe_lightning.io import DataError, read_table

    frame = read_table(Path(spec).expanduser())
    if "text" not in frame.columns:
        raise DataError(f"{spec}: merge.real_titles needs a column 'text' (found {list(frame.columns)})")
    return [str(t).strip() for t in frame["text"] if str(t).strip()], None


def _ranker(cfg: DictConfig):
    from uwe_lightning.model.pretrained import load_model
    from uwe_lightning.ranking.ranker import Ranker

    spec = hydra.utils.instantiate(cfg.model)
    if spec.kind == "lexical":
        raise ConfigError(f"merge needs an encoder model, got model={spec.name} (lexical TF-IDF)")
    model = load_model(spec, scorer="mean", model_dir=cfg.paths.model_dir)
    return Ranker.from_model(model, batch_size=int(cfg.merge.batch_size), device=cfg.merge.device)


def _estimate(cfg: DictConfig, generators: dict[str, Generator], skills: list, price: dict | None) -> dict[str, Any]:
    est = cfg.estimate
    return dry_run(generators, skills, float(est.chars_per_token), dict(est.output_tokens_per_item), price)


def _cost_text(report: dict[str, Any], model: str) -> str:
    if "est_cost_to_send" not in report:
        return (f"no cost estimate: model {model!r} is not in the price table (uwe_lightning/enrichment/prices.py, "
                f"as of {PRICES_AS_OF}); give estimate.input_per_million= and estimate.output_per_million=")
    p = report["prices_per_million"]
    return (f"estimated cost ${report['est_cost_to_send']:,} at ${p['input_per_million']:g} / "
            f"${p['output_per_million']:g} per 1M input / output tokens (from {p['source']})")


def enrich(cfg: DictConfig) -> dict[str, Any]:
    """Run the configured step(s); returns each step's stats (or the dry-run report)."""
    steps = _steps(cfg.command)
    check_whole_number(cfg.max_skills, "max_skills", optional=True)
    check_whole_number(cfg.concurrency, "concurrency")
    out_dir = Path(cfg.out_dir)
    make_dirs(out_dir)
    cache = new_cache(out_dir, cfg.cache_dir)
    generated = [s for s in steps if s in KINDS]
    skills = load_skill_list(str(cfg.skills), cfg.paths.data_dir, cfg.max_skills) if generated else []
    e = cfg.endpoint
    endpoint = Endpoint.resolve(e.base_url, e.api_key, timeout_s=float(e.timeout_s), retries=int(e.retries),
                                backoff_s=float(e.backoff_s), max_backoff_s=float(e.max_backoff_s))
    price = price_of(str(e.model), {"input_per_million": cfg.estimate.input_per_million,
                                    "output_per_million": cfg.estimate.output_per_million})
    if cfg.dry_run:
        generators = {name: _generator(name, cfg, cache, None, None) for name in generated}
        report = _estimate(cfg, generators, skills, price)
        report.update(model=str(e.model), base_url=endpoint.base_url, skills_spec=str(cfg.skills))
        atomic_write_json(out_dir / "dry_run.json", report)
        log(f"dry run: {report['requests_to_send']:,} requests to send for {len(skills):,} skills ("
            + ", ".join(f"{k}: {v['prompts']:,} prompts, {v['cached']:,} cached" for k, v in report["kinds"].items())
            + f"); ~{report['input_tokens_to_send']:,} input + ~{report['output_tokens_to_send']:,} output tokens; "
            + _cost_text(report, str(e.model)) + f"; first rounds only, retries come on top -> {out_dir / 'dry_run.json'}")
        return {"dry_run": report}
    max_cost = cfg.estimate.get("max_cost")
    if max_cost is not None and generated:  # the budget guard: refuse before the first request
        report = _estimate(cfg, {n: _generator(n, cfg, cache, None, None) for n in generated}, skills, price)
        if "est_cost_to_send" not in report:
            raise ConfigError(f"estimate.max_cost={max_cost} needs a price, and model {str(e.model)!r} has none in "
                              "the price table (uwe_lightning/enrichment/prices.py): give "
                              "estimate.input_per_million= and estimate.output_per_million=")
        if report["est_cost_to_send"] > float(max_cost):
            raise ConfigError(f"the estimated cost ${report['est_cost_to_send']:,} of {report['requests_to_send']:,} "
                              f"requests exceeds estimate.max_cost={max_cost} (see dry_run=true); raise it, or "
                              "lower max_skills")
        log(f"budget: estimated ${report['est_cost_to_send']:,} <= estimate.max_cost={max_cost} (first rounds)")
    guard = None
    if cfg.leakage.enabled and generated:
        guard = QueryGuard.from_data_pack(cfg.paths.data_dir, cfg.leakage.val_fraction,
                                          cfg.leakage.altlabel_train_fraction)
        log(f"leakage guard: {len(guard):,} distinct queries of {len(guard.split_names)} evaluation splits"
            + (f" (unavailable: {', '.join(guard.meta['unavailable_splits'])})" if guard.meta["unavailable_splits"]
               else ""))
    elif generated:
        log("warning: leakage.enabled=false: generated texts are NOT checked against the evaluation queries")
    info = {"model": str(e.model), "base_url": endpoint.base_url, "skills_spec": str(cfg.skills),
            "max_skills": cfg.max_skills, "guard_splits": guard.split_names if guard else None}
    results: dict[str, Any] = {}
    for step in steps:
        if step == "merge":
            real, existing = _real_titles(cfg)
            spec = hydra.utils.instantiate(cfg.model)
            merge_info = {"encoder": spec.name, "backbone": spec.backbone, "real_titles_spec": str(cfg.merge.real_titles)}
            results[step] = run_merge(out_dir, _ranker(cfg), real, float(cfg.merge.threshold),
                                      [float(t) for t in cfg.merge.thresholds], cfg.merge.max_matches, existing, log,
                                      merge_info)
            continue
        generator = _generator(step, cfg, cache, ChatClient(endpoint), guard)  # a client per step: its own counts
        step_info = {**info, "params": generator.params, "settings": {"n": generator.settings.n,
                     "max_rounds": generator.settings.max_rounds, "min_words": generator.settings.min_words}}
        results[step] = generate_kind(step, skills, generator, out_dir, int(cfg.concurrency), bool(cfg.show_progress),
                                      log, step_info)
    return results


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="enrich")
def _main(cfg: DictConfig) -> None:
    run_reporting_user_errors(TOOL, lambda: enrich(cfg))


_hydra_main = hydra_entry_point(_main)


def main(argv: list[str] | None = None) -> None:
    """Turn the leading step name into ``command=<step>`` for Hydra, then run."""
    args = sys.argv if argv is None else [sys.argv[0], *argv]
    if len(args) > 1 and "=" not in args[1] and not args[1].startswith("-"):
        step = args.pop(1)
        if step not in COMMANDS:
            print(f"[{TOOL}] error: unknown step {step!r}; the steps are {', '.join(COMMANDS)}", file=sys.stderr)
            raise SystemExit(USER_ERROR_EXIT)
        args.insert(1, f"command={step}")
    sys.argv = args
    _hydra_main()
