"""Cost of the target-space cache's payload checksum: a cache hit with and without verification.

The tensors come from a packed target space on disk (any safetensors file with ``tokens`` and ``offsets``, e.g.
the ESCO v1.2.0 skills encoded token-level by MiniLM) or are random (``--synthetic-mib``). They are written with
:func:`uwe_lightning.ranking.cache.save_packed` once per checksum, then loaded ``--repeats`` times per variant,
round-robin, from the page cache (warm: where the check's share is largest; a read from disk adds to all).
``load_packed`` memory-maps the file, so the unchecked load alone reads nothing: the fair cost is the load plus
the first use (building the scoring buckets, which reads every byte), reported as "hit + first use".

    PYTHONPATH=. .venv/bin/python experiments/bench/bench_cache_checksum.py --tensors <file.safetensors>
    PYTHONPATH=. .venv/bin/python experiments/bench/bench_cache_checksum.py --synthetic-mib 480
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
import zlib
from pathlib import Path

import torch
from safetensors.torch import load_file

from uwe_lightning.ranking import cache as cache_lib
from uwe_lightning.ranking.packed import EncodedTexts


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tensors", type=Path, help="a safetensors file with 'tokens' and 'offsets'")
    parser.add_argument("--synthetic-mib", type=float, help="random fp16 tokens of this size instead (H = 384)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the bucket build")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the test files (default: a temp dir)")
    return parser.parse_args()


def tensors_from(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    if args.tensors:
        loaded = load_file(str(args.tensors))
        return loaded["tokens"].to(torch.float16).clone(), loaded["offsets"].clone()
    hidden = 384
    rows = int(args.synthetic_mib * 2**20 / (2 * hidden))
    tokens = torch.randn(rows, hidden, generator=torch.Generator().manual_seed(0)).to(torch.float16)
    lengths = torch.full((rows // 8,), 8, dtype=torch.int64)
    lengths[-1] += rows - int(lengths.sum())
    return tokens, torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])


def one_hit(path: Path, key: cache_lib.CacheKey, verify: bool) -> tuple[float, float]:
    """Seconds of ``load_packed`` and of load + building the scoring buckets (the first use)."""
    start = time.perf_counter()
    tokens, offsets = cache_lib.load_packed(path, key, verify=verify)
    loaded = time.perf_counter()
    EncodedTexts(tokens, offsets).buckets(dtype=torch.float32, cache=False)
    return loaded - start, time.perf_counter() - start


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    tokens, offsets = tensors_from(args)
    n_texts = offsets.numel() - 1
    key = cache_lib.CacheKey(model="bench", pooled=False, max_length=512, texts_sha256="bench", n_texts=n_texts)
    algorithms = [a for a in cache_lib.CHECKSUMS if cache_lib.checksum_available(a)]
    variants = [("unchecked", algorithms[0], False)] + [(a, a, True) for a in algorithms]
    times: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in variants}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        files = {a: cache_lib.save_packed(Path(tmp) / f"{a}.safetensors", tokens, offsets, key, checksum=a)
                 for a in algorithms}
        size = files[algorithms[0]].stat().st_size
        for _name, algorithm, verify in variants:  # warm the page cache
            one_hit(files[algorithm], key, verify)
        for _ in range(args.repeats):
            for name, algorithm, verify in variants:
                times[name].append(one_hit(files[algorithm], key, verify))
    print(f"file: {size / 2**20:.1f} MiB ({n_texts:,} texts, tokens {tuple(tokens.shape)} fp16); {args.repeats} "
          f"hits per variant, round-robin; torch threads {args.threads}; load avg "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    base = statistics.median(t[1] for t in times["unchecked"])
    print("| variant | load_packed (ms) | hit + first use (ms) | ratio to unchecked |")
    print("|---|---:|---:|---:|")
    for name, _, _ in variants:
        load = statistics.median(t[0] for t in times[name])
        total = statistics.median(t[1] for t in times[name])
        print(f"| {name} | {1000 * load:.1f} | {1000 * total:.1f} | {total / base:.2f} |")
    payload = cache_lib._tensor_bytes(tokens)
    print(f"hashes alone over the {len(payload) / 2**20:.1f} MiB of tokens in memory (median):")
    for name, fn in hash_candidates().items():
        seconds = statistics.median(timed(lambda fn=fn: fn(payload), args.repeats))
        print(f"  {name:<18} {1000 * seconds:7.1f} ms  {len(payload) / 2**30 / seconds:5.2f} GiB/s")


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def hash_candidates() -> dict:
    out = {"sha256": lambda b: hashlib.sha256(b).digest(), "blake2b": lambda b: hashlib.blake2b(b).digest(),
           "crc32 (zlib)": zlib.crc32, "adler32 (zlib)": zlib.adler32}
    if cache_lib.checksum_available("xxh3_128"):
        import xxhash

        out["xxh3_128 (xxhash)"] = lambda b: xxhash.xxh3_128(b).digest()
    return out


if __name__ == "__main__":
    main()
