"""On-disk cache of encoded target spaces: packed fp16 token embeddings in one safetensors file.

Why: encoding a target space (14k ESCO skills, 100k labels) dominates the cost of a ranking, and it only
depends on the checkpoint, on which sides the scorer pools, on the token limit and on the texts. Those four
things form the :class:`CacheKey`; the file name is the key's digest, so a stale key is never looked up, and
the key is stored again in the file's own JSON header (safetensors metadata) so that a file that does not
belong to its name (copied, renamed, hand-edited) is detected. Files are written to a temporary name and
published with ``os.replace``: a reader never sees half a file.

Layout: ``tokens`` ``[total_tokens, H]`` float16 (texts concatenated, no padding; a pooled side stores one row
per text) and ``offsets`` ``[N + 1]`` int64 (text ``i`` is ``tokens[offsets[i]:offsets[i+1]]``).

Integrity: the header also holds a checksum of each tensor's bytes (:data:`CHECKSUMS`), verified at every load,
because a flipped byte inside ``tokens`` still parses and passes every layout check, and then ranks wrongly
(NaN scores, another top-k) without any error. A mismatch is a corrupt file: rebuilt with a warning. Cost:
see :func:`payload_checksums`. A cache directory that cannot be written is warned about once and the target
space is used without being cached.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
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

from uwe_lightning.io import atomic_write_bytes, atomic_write_path, strict_json

#: 2: the header holds payload checksums (files of format 1 are rebuilt, never trusted unchecked).
FORMAT_VERSION = 2
_META_KEY = "uwe_target_cache"
#: Files of a Hugging Face directory whose bytes decide the embeddings (weights, config, tokenizer).
MODEL_FILE_PATTERNS = (
    "*.safetensors", "*.bin", "*.pt", "*.pth", "config.json", "tokenizer.json", "tokenizer_config.json",
    "vocab.txt", "vocab.json", "merges.txt", "special_tokens_map.json", "sentencepiece.bpe.model", "spiece.model",
)
_FINGERPRINT_MEMO = "model_fingerprints.json"


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
            try:
                atomic_write_bytes(memo_path, strict_json(on_disk, indent=1).encode())
            except OSError as err:  # a read-only cache: the memo is an optimisation only
                warn_unwritable(memo_path.parent, err)
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


_warned_unwritable: set[str] = set()


def warn_unwritable(directory: str | os.PathLike, err: OSError) -> None:
    """Warn once per directory that caching there is impossible (read-only, full, not a directory)."""
    name = str(Path(directory))
    if name in _warned_unwritable:
        return
    _warned_unwritable.add(name)
    reason = err.strerror or type(err).__name__
    warnings.warn(f"target-space cache directory {name} is not writable ({reason}); going on without caching "
                  "(set paths.cache_dir / UWE_CACHE_DIR to a writable directory, or cache=false)", stacklevel=3)


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


def _tensor_bytes(tensor: Tensor) -> memoryview:
    """The raw bytes of a contiguous CPU tensor, without a copy."""
    return memoryview(tensor.contiguous().view(torch.uint8).numpy()).cast("B")


def _xxh3_128(data: memoryview) -> str:
    import xxhash  # installed with `datasets` (a dependency); sha256 is the fallback

    return xxhash.xxh3_128_hexdigest(data)


def _sha256(data: memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


#: Payload checksums by name, fastest first: xxh3-128 hashes ~15 GiB/s in memory, sha256 (OpenSSL, SHA-NI) ~1.4.
CHECKSUMS: dict[str, Callable[[memoryview], str]] = {"xxh3_128": _xxh3_128, "sha256": _sha256}


def checksum_available(algorithm: str) -> bool:
    if algorithm == "xxh3_128":
        return importlib.util.find_spec("xxhash") is not None
    return algorithm in CHECKSUMS


def default_checksum() -> str:
    """The fastest checksum this environment has (xxh3_128 where ``xxhash`` is installed, else sha256)."""
    return next(name for name in CHECKSUMS if checksum_available(name))


def payload_checksums(tensors: dict[str, Tensor], algorithm: str | None = None) -> dict[str, str]:
    """``{"algorithm": name, <tensor name>: hex digest of its bytes, ...}`` (default: :func:`default_checksum`).

    Why xxh3-128 first: it is not cryptographic, but a damaged file is an accident here, not an attack, and a
    128-bit hash misses random damage with probability 2^-128. Measured on the ESCO v1.2.0 skills space with
    MiniLM token-level (62.7 MiB, warm page cache, 2 shared cores at load 3.5-5): ``load_packed`` memory-maps
    (0.8 ms unchecked, 9-14 ms with xxh3-128, 45-87 ms with sha256); a cache hit up to its first use (load +
    scoring buckets) costs 1.05-1.11x unchecked with xxh3-128, 1.11-1.31x with sha256
    (``experiments/results/cache_checksum.md``).
    """
    algorithm = algorithm or default_checksum()
    digest = CHECKSUMS[algorithm]
    out = {"algorithm": algorithm}
    for name in sorted(tensors):
        out[name] = digest(_tensor_bytes(tensors[name]))
    return out


def save_packed(
    path: str | os.PathLike, tokens: Tensor, offsets: Tensor, key: CacheKey, checksum: str | None = None
) -> Path:
    """Write ``tokens`` (as fp16) and ``offsets`` with ``key`` and their checksums in the header; atomic."""
    path = Path(path)
    check_packed(tokens, offsets, key.n_texts, key.pooled)
    tensors = {"tokens": tokens.detach().to("cpu", torch.float16).contiguous(), "offsets": offsets.cpu().contiguous()}
    header = {"key": key.as_dict(), "hidden_size": int(tokens.shape[1]), "total_tokens": int(tokens.shape[0]),
              "checksum": payload_checksums(tensors, checksum)}
    with atomic_write_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={_META_KEY: strict_json(header, sort_keys=True)})
    return path


def read_key(path: str | os.PathLike) -> CacheKey:
    """The key stored in a cache file's header (without loading its tensors)."""
    return _key_from_meta(path, _read_meta(path))


def _read_meta(path: str | os.PathLike) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CacheError(f"{path}: not a readable safetensors file ({err})") from err


def _header(path: str | os.PathLike, meta: dict) -> dict:
    if _META_KEY not in meta:
        raise CacheError(f"{path}: no '{_META_KEY}' header; not a target-space cache")
    try:
        header = json.loads(meta[_META_KEY])
    except ValueError as err:
        raise CacheError(f"{path}: unreadable '{_META_KEY}' header ({err})") from err
    if not isinstance(header, dict):
        raise CacheError(f"{path}: unreadable '{_META_KEY}' header (not a JSON object)")
    return header


def _key_from_meta(path: str | os.PathLike, meta: dict) -> CacheKey:
    try:
        return CacheKey(**_header(path, meta)["key"])
    except (TypeError, KeyError) as err:
        raise CacheError(f"{path}: unreadable '{_META_KEY}' header ({err})") from err


def _verify_checksums(path: str | os.PathLike, header: dict, tensors: dict[str, Tensor]) -> None:
    stored = header.get("checksum")
    algorithm = stored.get("algorithm") if isinstance(stored, dict) else None
    if algorithm is None:
        raise CacheError(f"{path}: no payload checksum in the header")
    if not checksum_available(algorithm):
        raise CacheError(f"{path}: written with checksum {algorithm!r}, which this environment cannot verify")
    actual = payload_checksums(tensors, algorithm)
    bad = [name for name in sorted(tensors) if stored.get(name) != actual[name]]
    if bad:
        raise CacheError(f"{path}: {algorithm} checksum mismatch in {', '.join(bad)} (the file's bytes are damaged)")


def load_packed(path: str | os.PathLike, key: CacheKey, verify: bool = True) -> tuple[Tensor, Tensor]:
    """``(tokens fp16, offsets)`` from ``path``; :class:`CacheError` if unreadable, malformed, for another key
    or (``verify``) if its bytes do not match the checksums written with it."""
    meta = _read_meta(path)
    try:
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
    if verify:
        _verify_checksums(path, _header(path, meta), tensors)
    try:
        check_packed(tokens, offsets, key.n_texts, key.pooled)
    except CacheError as err:
        raise CacheError(f"{path}: {err}") from err
    return tokens, offsets


def load_or_build(
    path: str | os.PathLike, key: CacheKey, build: Callable[[], tuple[Tensor, Tensor]]
) -> tuple[Tensor, Tensor, bool, bool]:
    """Load ``path`` for ``key``, or ``build()`` and save it; returns ``(tokens, offsets, hit, on_disk)``.

    A present but unusable file (corrupt, truncated, damaged bytes, foreign key) is reported with a warning and
    rebuilt. A file that cannot be written (read-only or full disk) is warned about once per directory, and the
    built tensors are returned anyway (``on_disk`` False): caching is an optimisation, never a reason to fail.
    """
    path = Path(path)
    if path.is_file():
        try:
            tokens, offsets = load_packed(path, key)
            return tokens, offsets, True, True
        except CacheError as err:
            warnings.warn(f"target-space cache rebuilt: {err}", stacklevel=3)
    tokens, offsets = build()
    try:
        save_packed(path, tokens, offsets, key)
        on_disk = True
    except OSError as err:
        warn_unwritable(path.parent, err)
        on_disk = False
    return tokens.to(torch.float16), offsets, False, on_disk
