"""Peak memory of the word-embedding gradient: ``backward()`` against ``torch.autograd.grad`` (GradCache's call).

The planner (uwe_lightning.efficiency.memory, ``grad_cache_gradients``) counts one extra copy of the largest
parameter for GradCache's ``torch.autograd.grad``; this measures it for an embedding matrix of MiniLM's shape
(30,522 x 384 fp32, 44.7 MiB), each way in its own process, with the method of ``memory_check.py``: reset the
kernel's peak-RSS counter, run the forward + gradient, read the peak RSS minus the RSS before it.

    PYTHONPATH=. nice -n 19 .venv/bin/python experiments/checks/grad_copy_check.py --out experiments/results/memory/grad_copy
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

MIB = 2**20


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def measure(how: str, vocab: int, hidden: int, texts: int, length: int) -> int:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(vocab, hidden) * 0.02)
    ids = torch.randint(0, vocab, (texts, length))
    cached_grad = torch.randn(texts, length, hidden)  # what GradCache pushes through the re-encoded mini-batch
    before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM
    out = torch.nn.functional.embedding(ids, weight)
    if how == "backward":
        out.backward(cached_grad)
        grad = weight.grad
    else:
        (grad,) = torch.autograd.grad(out, [weight], cached_grad)
    assert grad.shape == weight.shape
    return _status("VmHWM") - before


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, default=30522)
    p.add_argument("--hidden", type=int, default=384)
    p.add_argument("--texts", type=int, default=8)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--out", type=Path, default=Path("experiments/results/memory/grad_copy"))
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    shape = (args.vocab, args.hidden, args.texts, args.length)
    if args.one:
        print(json.dumps(measure(args.one, *shape)))
        return
    from uwe_lightning.io import atomic_write_text

    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0", "OMP_NUM_THREADS": "1"}
    matrix = args.vocab * args.hidden * 4
    rows = {}
    for how in ("backward", "autograd.grad"):
        cmd = [sys.executable, __file__, "--vocab", str(args.vocab), "--hidden", str(args.hidden), "--texts",
               str(args.texts), "--length", str(args.length), "--one", how]
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        rows[how] = int(result.stdout.strip().splitlines()[-1])
    command = ("PYTHONPATH=. nice -n 19 .venv/bin/python experiments/checks/grad_copy_check.py "
               f"--vocab {args.vocab} --hidden {args.hidden} --texts {args.texts} --length {args.length}")
    lines = [f"# Embedding gradient: peak memory of backward() vs torch.autograd.grad ({args.vocab} x {args.hidden} "
             f"fp32 = {matrix / MIB:.1f} MiB, {args.texts} x {args.length} tokens)", "", f"Command: `{command}`", "",
             "Peak RSS of the forward + gradient minus the RSS before it, each in its own process.", "",
             "| call | peak MiB | / matrix |", "|---|---:|---:|"]
    lines += [f"| {how} | {b / MIB:.1f} | {b / matrix:.2f} |" for how, b in rows.items()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
