"""Peak memory of a training step on CPU, measured, next to the memory planner's estimate (uwe_lightning.efficiency.memory).

Each setting runs in its own process (glibc returns freed large blocks at once: ``MALLOC_MMAP_THRESHOLD_=65536``):
the real UWEModule on a synthetic batch of ``--skills`` skills and as many texts per graph (J, V, A), every text
exactly ``--length`` tokens (the planner's assumption), AdamW; step 1 allocates the optimiser state, then the
kernel's peak-RSS counter is reset (``/proc/self/clear_refs``) and step 2 is measured: its peak RSS minus the RSS
before it is what the step adds on top of weights + AdamW states (gradients, activations, caches, scoring). The
planner's number for the same quantity is its peak minus weights and AdamW states.

    UWE_MODEL_DIR=models PYTHONPATH=. nice -n 19 .venv/bin/python experiments/checks/memory_check.py \
        --out experiments/results/memory/cpu_check
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = [  # (name, grad_cache mini-batch in texts or None, backbone checkpointing)
    ("plain", None, False),
    ("GradCache 32", 32, False),
    ("GradCache 16", 16, False),
    ("GradCache 8", 8, False),
    ("GradCache 4", 4, False),
    ("backbone checkpointing", None, True),
    ("GradCache 8 + checkpointing", 8, True),
]


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def measure(backbone: str, skills: int, length: int, grad_cache: int | None, ckpt: bool, scorer: str) -> dict:
    """One setting, in this process: bytes step 2 adds over the RSS before it, and its seconds."""
    import torch

    from uwe_lightning.data.batch import GraphBatch, UWEBatch
    from uwe_lightning.training.module import UWEModule

    torch.set_num_threads(1)
    torch.manual_seed(0)
    module = UWEModule(backbone, scorer=scorer, max_steps=10, grad_cache=grad_cache is not None,
                       grad_cache_size=grad_cache or 1, backbone_checkpointing=ckpt)
    vocab = module.encoder.tokenizer.vocab_size

    def inputs() -> dict:
        ids = torch.randint(1000, vocab, (skills, length))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    eye = torch.eye(skills, dtype=torch.bool)
    graphs = {g: GraphBatch(inputs(), eye.clone(), torch.arange(skills)) for g in ("J", "V", "A")}
    batch = UWEBatch(inputs(), graphs, step=0)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-5)

    def step() -> float:
        start = time.perf_counter()
        scores, pos_masks, pair_index = module.graph_scores(batch)
        module.loss_fn(scores, pos_masks, pair_index)[0].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    first = step()
    before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS counter (VmHWM)
    seconds = step()
    return {"step_bytes": _status("VmHWM") - before, "rss_before": before, "seconds": seconds, "first_seconds": first}


def timing(backbone: str, skills: int, length: int, scorer: str, rounds: int) -> dict:
    """Step seconds of every setting, interleaved in one process (round r runs each setting once, in turn), so
    that a shared machine's drift hits them alike; per setting the median over rounds of its time / plain's."""
    import statistics

    import torch

    from uwe_lightning.data.batch import GraphBatch, UWEBatch
    from uwe_lightning.training.module import UWEModule

    torch.set_num_threads(1)
    torch.manual_seed(0)
    modules, optimizers = {}, {}
    for name, gc, ckpt in SETTINGS:
        modules[name] = UWEModule(backbone, scorer=scorer, max_steps=10, grad_cache=gc is not None,
                                  grad_cache_size=gc or 1, backbone_checkpointing=ckpt)
        optimizers[name] = torch.optim.AdamW(modules[name].parameters(), lr=1e-5)
    vocab = next(iter(modules.values())).encoder.tokenizer.vocab_size

    def inputs() -> dict:
        ids = torch.randint(1000, vocab, (skills, length))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    eye = torch.eye(skills, dtype=torch.bool)
    batch = UWEBatch(inputs(), {g: GraphBatch(inputs(), eye.clone(), torch.arange(skills)) for g in "JVA"}, step=0)
    seconds: dict[str, list[float]] = {name: [] for name in modules}
    for _ in range(rounds + 1):  # round 0 warms up (AdamW state, allocator)
        for name, module in modules.items():
            start = time.perf_counter()
            scores, pos_masks, pair_index = module.graph_scores(batch)
            module.loss_fn(scores, pos_masks, pair_index)[0].backward()
            optimizers[name].step()
            optimizers[name].zero_grad(set_to_none=True)
            seconds[name].append(time.perf_counter() - start)
    ratios = {n: statistics.median(t / p for t, p in zip(s[1:], seconds["plain"][1:], strict=True))
              for n, s in seconds.items()}
    return {"seconds": {n: s[1:] for n, s in seconds.items()}, "median_ratio_to_plain": ratios}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="minilm")
    p.add_argument("--skills", type=int, default=32)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--scorer", default="softmax")
    p.add_argument("--out", type=Path, default=Path("experiments/results/memory/cpu_check"))
    p.add_argument("--replan", action="store_true", help="recompute the planned side of the recorded --out json")
    p.add_argument("--timing", type=int, default=0, metavar="ROUNDS",
                   help="only time the settings, interleaved in one process, ROUNDS rounds (writes <out>_timing.*)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one setting, JSON to stdout
    args = p.parse_args()
    if args.one is not None:
        gc, ckpt = json.loads(args.one)
        print(json.dumps(measure(args.backbone, args.skills, args.length, gc, ckpt, args.scorer)))
        return
    if args.timing:
        from uwe_lightning.io import atomic_write_text, strict_json

        load = [Path("/proc/loadavg").read_text().split()[:3]]
        result = timing(args.backbone, args.skills, args.length, args.scorer, args.timing)
        load.append(Path("/proc/loadavg").read_text().split()[:3])
        command = ("UWE_MODEL_DIR=models PYTHONPATH=. nice -n 19 .venv/bin/python experiments/checks/memory_check.py "
                   f"--backbone {args.backbone} --skills {args.skills} --length {args.length} --scorer {args.scorer} "
                   f"--timing {args.timing}")
        lines = [f"# Step time, settings interleaved ({args.backbone}, {args.skills} skills + 3 x {args.skills} texts "
                 f"x {args.length} tokens, 1 thread)", "", f"Command: `{command}`; load average before / after: "
                 f"{load[0]} / {load[-1]} (a shared 2-core machine).", "",
                 "| setting | median step seconds | median time / plain (same round) |", "|---|---:|---:|"]
        for name, secs in result["seconds"].items():
            lines.append(f"| {name} | {sorted(secs)[len(secs) // 2]:.2f} | "
                         f"{result['median_ratio_to_plain'][name]:.2f}x |")
        out = args.out.with_name(args.out.name + "_timing")
        atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
        atomic_write_text(out.with_suffix(".json"), strict_json({"command": command, "load": load, **result},
                                                                indent=2) + "\n")
        print("\n".join(lines))
        return

    from uwe_lightning.efficiency.memory import GIB, BackboneShape, StepShape, plan
    from uwe_lightning.io import atomic_write_text, strict_json

    backbone = BackboneShape.from_pretrained(args.backbone)

    def planned(gc: int | None, ckpt: bool) -> dict:
        shape = StepShape(skills=args.skills, texts_per_graph=(args.skills,) * 3, max_length=args.length,
                          grad_cache=gc, backbone_checkpointing=ckpt, scorer=args.scorer, device="cpu")
        return plan(backbone, shape)

    if args.replan:  # the recorded measurements against the current planner (no new measurement)
        recorded = json.loads(args.out.with_suffix(".json").read_text())
        rows, load = recorded["rows"], recorded["load"]
    else:
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0", "OMP_NUM_THREADS": "1"}
        rows, load = [], [Path("/proc/loadavg").read_text().split()[:3]]
        for name, gc, ckpt in SETTINGS:
            cmd = [sys.executable, __file__, "--backbone", args.backbone, "--skills", str(args.skills), "--length",
                   str(args.length), "--scorer", args.scorer, "--one", json.dumps([gc, ckpt])]
            result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            got = json.loads(result.stdout.strip().splitlines()[-1])
            rows.append({"setting": name, "grad_cache": gc, "checkpointing": ckpt, **got})
            load.append(Path("/proc/loadavg").read_text().split()[:3])
            print(f"{name:>28}: measured {got['step_bytes'] / GIB:.3f} GiB, {got['seconds']:.1f} s", flush=True)
    settings = {name: (gc, ckpt) for name, gc, ckpt in SETTINGS}
    for r in rows:
        parts = planned(*settings[r["setting"]])
        predicted = parts["peak"] - parts["weights"] - parts["adamw_states"]
        r.update(plan=parts, measured_gib=r["step_bytes"] / GIB, planned_gib=predicted / GIB,
                 ratio=predicted / r["step_bytes"])
    command = ("UWE_MODEL_DIR=models PYTHONPATH=. nice -n 19 .venv/bin/python experiments/checks/memory_check.py "
               f"--backbone {args.backbone} --skills {args.skills} --length {args.length} --scorer {args.scorer}")
    lines = [f"# Step memory on CPU: measured vs planned ({args.backbone}, {args.skills} skills + 3 x {args.skills} "
             f"texts x {args.length} tokens, {args.scorer}, fp32)", "", f"Command: `{command}` (measures, then "
             "compares); `... --replan` compares the recorded measurements with the current planner.", "",
             "Measured: peak RSS of training step 2 minus the RSS before it (weights and AdamW states are already "
             "there), one process per setting, 1 thread. Planned: the planner's peak minus weights and AdamW "
             "states. Seconds: step 2 on a shared 2-core machine whose load drifted between the settings (load "
             f"average 1/5/15 min before the first and after the last: {load[0]} ... {load[-1]}), so they do not "
             "compare the settings; `--timing` (`cpu_check_timing.md`) interleaves them for that.", "",
             "| setting | measured GiB | planned GiB | planned / measured | step seconds |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['measured_gib']:.3f} | {r['planned_gib']:.3f} | {r['ratio']:.2f} | "
                     f"{r['seconds']:.1f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
    atomic_write_text(args.out.with_suffix(".json"), strict_json({"command": command, "load": load, "rows": rows},
                                                                 indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
