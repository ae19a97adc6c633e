"""``python -m uwe_lightning.serve``: the ranking service (``conf/serve.yaml``), FastAPI + uvicorn.

``python -m uwe_lightning.serve model=minilm port=8080 'targets=[esco_skills,esco_occupations]'`` loads the
model, loads each target space from the cache ``rank`` uses (or encodes and caches it), then serves
``POST /rank``, ``GET /health``, ``GET /target-spaces`` and a page at ``/`` on 127.0.0.1 (see
:mod:`uwe_lightning.service.app`). Settings are checked before the model loads. ``port=0`` binds a free port and
prints the one it got.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from typing import TYPE_CHECKING

import hydra
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from uwe_lightning.cli.errors import hydra_entry_point, run_reporting_user_errors
from uwe_lightning.io import ConfigError, check_whole_number, require
from uwe_lightning.paths import CONF_DIR, resolve_cache_dir
from uwe_lightning.ranking.backends import index_for_space
from uwe_lightning.ranking.index import check_index_settings
from uwe_lightning.ranking.targets import DIRECTIONS, TARGET_SOURCES, load_targets
from uwe_lightning.training.jobrecord import accept_run

if TYPE_CHECKING:
    from fastapi import FastAPI

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
#: A DNS name (or an IPv4 address) in ``allowed_hosts``: no scheme, port or path.
_HOST_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_.])?")


def _host_entry_ok(host: object) -> bool:
    """``*``, a DNS name, an IPv4 address, or an IPv6 address, bracketed or not."""
    if not isinstance(host, str):
        return False
    if host == "*" or _HOST_NAME.fullmatch(host):
        return True
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(bare).version == 6
    except ValueError:
        return False


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
    check_whole_number(cfg.batching.max_tokens, "batching.max_tokens")
    check_whole_number(cfg.queue.max_requests, "queue.max_requests")
    wait = cfg.batching.max_wait_ms
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or wait < 0:
        raise ConfigError(f"batching.max_wait_ms must be a number >= 0, got {wait!r}")
    for key in ("queue.deadline_s", "body_timeout_s"):
        value = OmegaConf.select(cfg, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"{key} must be a number > 0 (seconds), got {value!r}")
    allowed_hosts(cfg)
    check_index_settings(cfg.get("index"))
    if cfg.log_level not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {list(LOG_LEVELS)}, got {cfg.log_level!r}")
    return names


def allowed_hosts(cfg: DictConfig) -> list[str]:
    """``allowed_hosts``, plus the address in ``host`` when it is one IP address (an IP cannot be rebound by
    DNS); a ConfigError naming an entry that is not a host name."""
    raw = cfg.allowed_hosts
    hosts = OmegaConf.to_container(raw) if isinstance(raw, ListConfig) else ([raw] if raw else [])
    if not hosts:
        raise ConfigError("allowed_hosts is empty: list the Host names clients use, e.g. [localhost, 127.0.0.1] "
                          "('*': any, which lets web pages reach the service through DNS rebinding)")
    for host in hosts:
        if not _host_entry_ok(host):
            raise ConfigError(f"allowed_hosts: {host!r} is not a host name; give names or addresses without "
                              "scheme, port or path, e.g. [localhost, 127.0.0.1, '[::1]']")
    try:
        address = ipaddress.ip_address(str(cfg.host))
    except ValueError:
        address = None
    if address is not None and not address.is_unspecified and str(cfg.host) not in hosts:
        hosts.append(str(cfg.host))
    return [str(h) for h in hosts]


def build_app(cfg: DictConfig) -> FastAPI:
    """The service app for a composed config: model loaded, every target space encoded (or loaded from cache)."""
    from uwe_lightning.cli.loading import model_spec, ranker_from_config
    require("fastapi", "python -m uwe_lightning.serve")  # before the model loads: one line naming the extra
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
        index = index_for_space(ranker, target.ids, target.texts, target.source, cfg.get("index"),
                                cache_dir=cache_dir, show_progress=cfg.show_progress)
        seconds = time.perf_counter() - t0
        source = "file" if name == "file" else target.source  # a request never sees a server path
        spaces[name] = ServedSpace(name, source, index.ids, index.texts, index, ranker.last_index_hit, seconds)
        how = "loaded from cache" if ranker.last_index_hit else "encoded"
        if index.backend != "exact":
            how = f"in {index.backend} index {index.where}"
        print(f"[serve] {name}: {len(target.texts)} targets {how} in {seconds:.1f}s", flush=True)
    limits = Limits(**OmegaConf.to_container(cfg.limits))
    return create_app(ranker, spaces, default_space=cfg.default_target, directions=DIRECTIONS, limits=limits,
                      max_batch_queries=cfg.batching.max_queries, max_wait_ms=float(cfg.batching.max_wait_ms),
                      max_batch_tokens=cfg.batching.max_tokens, max_pending=cfg.queue.max_requests,
                      deadline_s=float(cfg.queue.deadline_s), body_timeout_s=float(cfg.body_timeout_s),
                      allowed_hosts=allowed_hosts(cfg))


def url_of(sock: socket.socket) -> str:
    """The URL a bound socket serves: its real port (``port=0`` binds a free one), IPv6 in brackets."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(app: FastAPI, cfg: DictConfig) -> None:
    """Run ``app`` with uvicorn until interrupted (Ctrl+C), on a socket bound first so the address printed is the
    real one."""
    uvicorn = require("uvicorn", "python -m uwe_lightning.serve")

    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"[serve] warning: listening on {cfg.host}, beyond this machine; the service has no authentication "
              "(clients must name a host in allowed_hosts)", flush=True)
    from uwe_lightning.service.http import with_head_deadline

    config = uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level,
                            http=with_head_deadline(float(cfg.header_timeout_s)))
    sock = config.bind_socket()
    print(f"[serve] {app.state.ranker.model_id} ({app.state.ranker.spec.name}) on {url_of(sock)} "
          f"(Host names answered: {', '.join(allowed_hosts(cfg))})", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="serve")
def _main(cfg: DictConfig) -> None:
    from uwe_lightning.ranking.cache import CacheError

    def built():
        try:
            return build_app(cfg)
        except (ValueError, TypeError, CacheError) as err:  # bad targets, limits, cache file
            raise ConfigError(str(err)) from err

    app = run_reporting_user_errors("serve", built)
    accept_run(cfg)  # the service starts: Hydra's record and the log go into the run directory from here on
    serve(app, cfg)


main = hydra_entry_point(_main)
