"""On-disk cache of encoded target spaces: packed fp16 token embeddings in one safetensors file.

Why: encoding a target space (14k ESCO skills, 100k labels) dominates the cost of a ranking, and it only
depends on the checkpoint, on which sides the scorer pools, on the token limit and on the texts. Those four
things form the :class:`CacheKey`; the file name is the key's digest, so a stale key is never looked up, and
the key is stored again in the file's own JSON header (safetensors metadata) so that a file that does not
belong to its name (copied, renamed, hand-edited) is detected. Files are written to a temporary name and
published with ``os.replace``: a reader never sees half a file.

Layout: ``tokens`` ``[total_tokens, H]`` float16 (texts concatenated, no padding; a pooled side stores one row
per text) and ``offsets`` ``[N + 1]`` int64 (text ``i`` is ``tokens[offsets[i]:offsets[i+1]]``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from uwe_lightning.io import atomic_write_path

FORMAT_VERSION = 1
_META_KEY = "uwe_target_cache"
#: Files of a Hugging Face directory whose bytes decide the embeddings (weights, config, tokenizer).
MODEL_FILE_PATTERNS = (
    "*.safetensors", "*.bin", "*.pt", "*.pth", "config.json", "tokenizer.json", "tokenizer_config.json",
    "vocab.txt", "vocab.json", "merges.txt", "special_tokens_map.json", "sentencepiece.bpe.model", "spiece.model",
)
_FINGERPRINT_MEMO = "model_fingerprints.json"
_FILE_MODE = 0o644  # mkstemp creates 0600; caches are meant to be shared


class CacheError(RuntimeError):
    """A cache file that cannot be used: unreadable, wrong layout, or built for another key."""


@dataclass(frozen=True)
class CacheKey:
    """Everything that decides the stored tensors; two equal keys mean interchangeable files."""

    model: str  # checkpoint identity: sha256 of the model files, or a caller-given id for in-memory encoders
    pooled: bool  # whether the stored side is mean-pooled (one row per text)
    max_length: int  # tokens per text (the effective limit, never None)
    texts_sha256: str  # of the texts, in order
    n_texts: int
    format: int = FORMAT_VERSION

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()

    def differences(self, other: CacheKey) -> list[str]:
        """Names of the fields where ``other`` differs (for error messages)."""
        mine, theirs = self.as_dict(), other.as_dict()
        return [f"{name}: {theirs[name]!r} != {mine[name]!r}" for name in mine if mine[name] != theirs[name]]


def texts_sha256(texts: Sequence[str]) -> str:
    """Order-sensitive digest of a list of texts (length-prefixed, so no separator can collide)."""
    digest = hashlib.sha256()
    for text in texts:
        raw = text.encode("utf-8")
        digest.update(len(raw).to_bytes(8, "little"))
        digest.update(raw)
    return digest.hexdigest()


def _model_files(model_dir: Path) -> list[Path]:
    files = {p for pattern in MODEL_FILE_PATTERNS for p in model_dir.glob(pattern) if p.is_file()}
    return sorted(files)


def _file_stamp(files: Iterable[Path]) -> list[list]:
    return [[p.name, p.stat().st_mtime_ns, p.stat().st_size] for p in files]


_memo: dict[str, tuple[list, str]] = {}


def model_fingerprint(model_dir: str | os.PathLike, memo_dir: str | os.PathLike | None = None) -> str:
    """sha256 over the model files of a Hugging Face directory (names + bytes).

    Hashing ~0.5 GB of MPNet weights takes a second, so the result is remembered per (path, mtime, size) of
    every file: in this process, and in ``memo_dir/model_fingerprints.json`` when given.
    """
    root = Path(model_dir).resolve()
    files = _model_files(root)
    if not files:
        raise FileNotFoundError(f"{root} holds no model files (looked for {', '.join(MODEL_FILE_PATTERNS)})")
    stamp = _file_stamp(files)
    known = _memo.get(str(root))
    if known and known[0] == stamp:
        return known[1]
    memo_path = Path(memo_dir) / _FINGERPRINT_MEMO if memo_dir else None
    on_disk = _read_json(memo_path) if memo_path else {}
    entry = on_disk.get(str(root))
    if isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str):
        fingerprint = entry["sha256"]
    else:
        digest = hashlib.sha256()
        for path in files:
            digest.update(path.name.encode() + b"\0")
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    digest.update(block)
        fingerprint = digest.hexdigest()
        if memo_path:
            on_disk[str(root)] = {"stamp": stamp, "sha256": fingerprint}
            _atomic_write_bytes(memo_path, json.dumps(on_disk, indent=1).encode())
    _memo[str(root)] = (stamp, fingerprint)
    return fingerprint


def state_fingerprint(module: torch.nn.Module) -> str:
    """sha256 of a module's parameters and buffers (an in-memory encoder without a given id)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode() + str(tuple(tensor.shape)).encode() + str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_write_path(path) as tmp:
        tmp.write_bytes(data)
        os.chmod(tmp, _FILE_MODE)


def cache_path(cache_dir: str | os.PathLike, key: CacheKey) -> Path:
    """Where the file of ``key`` lives: the name is the key's digest, so a changed key is a different file."""
    return Path(cache_dir) / f"targets-{key.digest()[:40]}.safetensors"


def check_packed(tokens: Tensor, offsets: Tensor, n_texts: int | None = None, pooled: bool | None = None) -> None:
    """Raise :class:`CacheError` unless ``tokens``/``offsets`` are a valid packed layout."""
    if tokens.dim() != 2:
        raise CacheError(f"tokens must be [total_tokens, H], got shape {tuple(tokens.shape)}")
    if offsets.dim() != 1 or offsets.numel() < 1 or offsets.dtype != torch.int64:
        raise CacheError(f"offsets must be a 1-d int64 tensor [N+1], got {offsets.dtype} {tuple(offsets.shape)}")
    if n_texts is not None and offsets.numel() != n_texts + 1:
        raise CacheError(f"offsets hold {offsets.numel() - 1} texts, expected {n_texts}")
    if int(offsets[0]) != 0 or int(offsets[-1]) != tokens.shape[0]:
        raise CacheError(f"offsets run from {int(offsets[0])} to {int(offsets[-1])}, expected 0 to {tokens.shape[0]}")
    lengths = offsets.diff()
    if bool((lengths < 1).any()):
        raise CacheError(f"text {int((lengths < 1).nonzero()[0])} has no tokens")
    if pooled and bool((lengths != 1).any()):
        raise CacheError("a pooled side must hold exactly one row per text")


def save_packed(path: str | os.PathLike, tokens: Tensor, offsets: Tensor, key: CacheKey) -> Path:
    """Write ``tokens`` (as fp16) and ``offsets`` with ``key`` in the header; atomic."""
    path = Path(path)
    check_packed(tokens, offsets, key.n_texts, key.pooled)
    header = {"key": key.as_dict(), "hidden_size": int(tokens.shape[1]), "total_tokens": int(tokens.shape[0])}
    tensors = {"tokens": tokens.detach().to("cpu", torch.float16).contiguous(), "offsets": offsets.cpu().contiguous()}
    with atomic_write_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(header, sort_keys=True)})
        os.chmod(tmp, _FILE_MODE)
    return path


def read_key(path: str | os.PathLike) -> CacheKey:
    """The key stored in a cache file's header (without loading its tensors)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CacheError(f"{path}: not a readable safetensors file ({err})") from err
    return _key_from_meta(path, meta)


def _key_from_meta(path: str | os.PathLike, meta: dict) -> CacheKey:
    if _META_KEY not in meta:
        raise CacheError(f"{path}: no '{_META_KEY}' header; not a target-space cache")
    try:
        return CacheKey(**json.loads(meta[_META_KEY])["key"])
    except (ValueError, TypeError, KeyError) as err:
        raise CacheError(f"{path}: unreadable '{_META_KEY}' header ({err})") from err


def load_packed(path: str | os.PathLike, key: CacheKey) -> tuple[Tensor, Tensor]:
    """``(tokens fp16, offsets)`` from ``path``; :class:`CacheError` if unreadable, malformed or for another key."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CacheError(f"{path}: not a readable safetensors file ({err})") from err
    stored = _key_from_meta(path, meta)
    if stored != key:
        raise CacheError(f"{path}: built for another key ({'; '.join(key.differences(stored))})")
    if set(tensors) != {"tokens", "offsets"}:
        raise CacheError(f"{path}: expected tensors 'tokens' and 'offsets', found {sorted(tensors)}")
    tokens, offsets = tensors["tokens"], tensors["offsets"]
    if tokens.dtype != torch.float16:
        raise CacheError(f"{path}: tokens are {tokens.dtype}, expected float16")
    try:
        check_packed(tokens, offsets, key.n_texts, key.pooled)
    except CacheError as err:
        raise CacheError(f"{path}: {err}") from err
    return tokens, offsets


def load_or_build(
    path: str | os.PathLike, key: CacheKey, build: Callable[[], tuple[Tensor, Tensor]]
) -> tuple[Tensor, Tensor, bool]:
    """Load ``path`` for ``key``, or ``build()`` and save it; returns ``(tokens, offsets, hit)``.

    A present but unusable file (corrupt, truncated, foreign key) is reported with a warning and rebuilt.
    """
    path = Path(path)
    if path.is_file():
        try:
            tokens, offsets = load_packed(path, key)
            return tokens, offsets, True
        except CacheError as err:
            warnings.warn(f"target-space cache rebuilt: {err}", stacklevel=3)
    tokens, offsets = build()
    save_packed(path, tokens, offsets, key)
    return tokens.to(torch.float16), offsets, False
