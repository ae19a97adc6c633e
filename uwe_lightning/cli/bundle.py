"""``python -m uwe_lightning.bundle pack out=DIR [part_size=55MiB] [model=mpnet] ...`` | ``unpack DIR target=T``
| ``verify DIR``.

``pack`` composes ``conf/bundle.yaml`` (Hydra's compose API: a bundle is written where ``out`` says, so it
needs no run directory); ``unpack`` and ``verify`` take the bundle directory and ``key=value`` options. See
:mod:`uwe_lightning.offline.bundle` for what a bundle holds.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from uwe_lightning.cli.errors import compose_main
from uwe_lightning.io import ConfigError
from uwe_lightning.model.backbones import BACKBONES, resolve_backbone
from uwe_lightning.offline.bundle import pack, parse_size, unpack, verify
from uwe_lightning.paths import CONF_DIR

TOOL = "bundle"
USAGE = ("usage: python -m uwe_lightning.bundle pack out=DIR [part_size=55MiB] [model=mpnet] [key=value ...]\n"
         "       python -m uwe_lightning.bundle unpack DIR target=DIR\n"
         "       python -m uwe_lightning.bundle verify DIR\n\n"
         "Convention: Hydra overrides (key=value) composed without a run directory: a bundle is written where\n"
         "out= says; unpack and verify take the bundle directory first.")


def pinned(packages: list[str]) -> list[str]:
    """``hydra-core`` -> ``hydra-core==<installed version>`` (a name with a specifier stays as it is)."""
    out = []
    for spec in packages:
        if any(c in spec for c in "=<>!~ "):
            out.append(spec)
            continue
        try:
            out.append(f"{spec}=={metadata.version(spec)}")
        except metadata.PackageNotFoundError:
            out.append(spec)
    return out


def pack_from_config(cfg: DictConfig) -> dict:
    if not cfg.out:
        raise ConfigError("out: give the bundle directory, e.g. `bundle pack out=bundles/mpnet`")
    model_dir = Path(resolve_backbone(str(cfg.model.backbone), cfg.paths.model_dir))
    if not model_dir.is_dir():
        raise ConfigError(f"model.backbone={cfg.model.backbone!r} is not a local model directory; run `make models` "
                          "(pip install: `python -m uwe_lightning.model.backbones`) or give model.backbone=<dir>")
    name = BACKBONES[cfg.model.backbone].dirname if cfg.model.backbone in BACKBONES else model_dir.name
    source = cfg.data.source
    return pack(Path(cfg.out), model_dir, name, parse_size(cfg.part_size), cfg.paths.data_dir,
                float(source.val_fraction), float(source.altlabel_train_fraction),
                tasks=list(cfg.tasks) if cfg.tasks is not None else None,
                wheels=pinned(list(cfg.wheels.packages)), platform_tag=cfg.wheels.platform,
                python_version=cfg.wheels.python_version, include_project=bool(cfg.wheels.include_project))


def options(args: list[str], allowed: tuple[str, ...]) -> dict[str, str]:
    found = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or key not in allowed:
            raise ConfigError(f"unknown argument {arg!r}; options: {', '.join(f'{k}=...' for k in allowed)}")
        found[key] = value
    return found


def run(argv: list[str]) -> dict:
    if not argv or argv[0] not in ("pack", "unpack", "verify"):
        raise ConfigError(USAGE.replace("\n", " | "))
    command, rest = argv[0], argv[1:]
    if command == "pack":
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("bundle", overrides=rest)
        manifest = pack_from_config(cfg)
        total = sum(f["bytes"] for f in manifest["files"])
        parts = sum(len(f["parts"]) for f in manifest["files"])
        print(f"[bundle] wrote {cfg.out}: {parts} files, {total / 2**20:.1f} MiB, none above {cfg.part_size} "
              f"({manifest['pack_seconds']} s); on the node: see {cfg.out}/UNPACK.md")
        return manifest
    if not rest or "=" in rest[0]:
        raise ConfigError(f"{command}: give the bundle directory first ({USAGE.splitlines()[1].strip()})")
    bundle, opts = Path(rest[0]), options(rest[1:], ("target",) if command == "unpack" else ())
    if command == "verify":
        n = verify(bundle)
        print(f"[bundle] {bundle}: {n} parts verified (size + sha256)")
        return {"parts_verified": n}
    if not opts.get("target"):
        raise ConfigError("unpack: give target=DIR (where models/, data/ and wheels/ go)")
    written = unpack(bundle, Path(opts["target"]))
    env = " ".join(f"{k}={v}" for k, v in written["env"].items())
    print(f"[bundle] {written['parts_verified']} parts verified; unpacked into {written['target']}\n"
          f"[bundle] run with: {env} python -m uwe_lightning.train ...")
    return written


def main(argv: list[str] | None = None) -> dict:
    return compose_main(TOOL, USAGE, run, argv)
