"""``python -m uwe_lightning.serve``: the ranking service (``conf/serve.yaml``), FastAPI + uvicorn.

``python -m uwe_lightning.serve model=minilm port=8080 'targets=[esco_skills,esco_occupations]'`` loads the
model, loads each target space from the cache ``rank`` uses (or encodes and caches it), then serves
``POST /rank``, ``GET /health``, ``GET /target-spaces`` and a page at ``/`` on 127.0.0.1 (see
:mod:`uwe_lightning.service.app`). Settings are checked before the model loads.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import hydra
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from uwe_lightning.cli.errors import hydra_entry_point, run_reporting_user_errors
from uwe_lightning.cli.rank import DIRECTIONS, TARGET_SOURCES, load_targets
from uwe_lightning.io import ConfigError, check_whole_number
from uwe_lightning.paths import CONF_DIR, resolve_cache_dir

if TYPE_CHECKING:
    from fastapi import FastAPI

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def target_names(cfg: DictConfig) -> list[str]:
    """``targets`` as a list of names (one name is accepted too); a ConfigError for an unknown or repeated one."""
    raw = cfg.targets
    names = OmegaConf.to_container(raw) if isinstance(raw, ListConfig) else ([raw] if raw else [])
    if not names:
        raise ConfigError(f"targets is empty: give one or more of {list(TARGET_SOURCES)}, e.g. targets=[esco_skills]")
    for name in names:
        if name not in TARGET_SOURCES:
            raise ConfigError(f"targets: {name!r} is not one of {list(TARGET_SOURCES)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"targets lists a target space twice: {names}")
    return [str(n) for n in names]


def check_config(cfg: DictConfig) -> list[str]:
    """Reject bad settings before the model loads and the target spaces are encoded; the target names."""
    names = target_names(cfg)
    if "file" in names and not cfg.targets_file:
        raise ConfigError("targets=[file] needs targets_file=<path> (one target text a line)")
    if cfg.default_target is not None and cfg.default_target not in names:
        raise ConfigError(f"default_target {cfg.default_target!r} is not in targets {names}")
    port = cfg.port
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"port must be a whole number 0..65535 (0: any free port), got {port!r}")
    if not isinstance(cfg.host, str) or not cfg.host:
        raise ConfigError(f"host must be an address such as 127.0.0.1, got {cfg.host!r}")
    for key in ("batch_size",):
        check_whole_number(cfg.get(key), key)
    for key in ("max_length", "threads"):
        check_whole_number(cfg.get(key), key, optional=True)
    for key, value in cfg.limits.items():
        check_whole_number(value, f"limits.{key}")
    check_whole_number(cfg.batching.max_queries, "batching.max_queries")
    if cfg.batching.max_queries < cfg.limits.max_queries:
        raise ConfigError(f"batching.max_queries ({cfg.batching.max_queries}) must be >= limits.max_queries "
                          f"({cfg.limits.max_queries}): a request is never split over model calls")
    wait = cfg.batching.max_wait_ms
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or wait < 0:
        raise ConfigError(f"batching.max_wait_ms must be a number >= 0, got {wait!r}")
    if cfg.log_level not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {list(LOG_LEVELS)}, got {cfg.log_level!r}")
    return names


def build_app(cfg: DictConfig) -> FastAPI:
    """The service app for a composed config: model loaded, every target space encoded (or loaded from cache)."""
    from uwe_lightning.cli.loading import model_spec, ranker_from_config
    from uwe_lightning.service.app import ServedSpace, create_app
    from uwe_lightning.service.requests import Limits

    names = check_config(cfg)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    targets = {name: load_targets(name, cfg.paths.data_dir, cfg.targets_file, cfg.esco_version) for name in names}
    spec = model_spec(cfg)
    ranker = ranker_from_config(cfg, "serve", spec)
    ranker.display_name = str(spec.backbone)
    cache_dir = resolve_cache_dir(cfg.paths.cache_dir) / "targets" if cfg.cache else None
    spaces = {}
    for name, target in targets.items():
        t0 = time.perf_counter()
        encoded = ranker.index(target.texts, cache_dir=cache_dir, show_progress=cfg.show_progress)
        seconds = time.perf_counter() - t0
        source = "file" if name == "file" else target.source  # a request never sees a server path
        spaces[name] = ServedSpace(name, source, target.ids, target.texts, encoded, ranker.last_index_hit, seconds)
        how = "loaded from cache" if ranker.last_index_hit else "encoded"
        print(f"[serve] {name}: {len(target.texts)} targets {how} in {seconds:.1f}s", flush=True)
    limits = Limits(**OmegaConf.to_container(cfg.limits))
    return create_app(ranker, spaces, default_space=cfg.default_target, directions=DIRECTIONS, limits=limits,
                      max_batch_queries=cfg.batching.max_queries, max_wait_ms=float(cfg.batching.max_wait_ms))


def serve(app: FastAPI, cfg: DictConfig) -> None:
    """Run ``app`` with uvicorn until interrupted (Ctrl+C)."""
    import uvicorn

    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"[serve] warning: listening on {cfg.host}, beyond this machine; the service has no authentication",
              flush=True)
    print(f"[serve] {app.state.ranker.model_id} ({app.state.ranker.spec.name}) on http://{cfg.host}:{cfg.port}/",
          flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="serve")
def _main(cfg: DictConfig) -> None:
    from uwe_lightning.ranking.cache import CacheError

    def built():
        try:
            return build_app(cfg)
        except (ValueError, TypeError, CacheError) as err:  # bad targets, limits, cache file
            raise ConfigError(str(err)) from err

    serve(run_reporting_user_errors("serve", built), cfg)


main = hydra_entry_point(_main)
