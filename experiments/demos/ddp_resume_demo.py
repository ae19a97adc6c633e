"""A real 2-process CPU DDP training run (gloo) that checkpoints, is killed and resumes, against an uninterrupted one.

Both runs: ``python -m uwe_lightning.train trainer=ddp trainer.accelerator=cpu trainer.devices=2`` on the open
protocol (the data pack) with a tiny BERT (tests/helpers/models.py, built into outputs/tiny-bert), 16 skills per
step, 8 steps, WorkBench validation + checkpoint every 2 steps. The second run's whole process group (rank 0 and
the rank 1 that Lightning started) is killed with SIGKILL (or ``--signal TERM``) once ``last.ckpt`` holds step
``--kill-after``, then resumed with ``resume=true``. The script compares the final weights (sha256 of the state
dict of ``last.ckpt``) and the validation histories, and writes ``--out`` (markdown + json).

    PYTHONPATH=. nice -n 19 .venv/bin/python experiments/demos/ddp_resume_demo.py --out experiments/results/ddp/resume
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from tests.helpers.models import build_tiny_model
from uwe_lightning.io import atomic_write_text, strict_json

OVERRIDES = [
    "debug=fast", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "model.backbone=outputs/tiny-bert",
    "data.skills_per_step=16", "data.num_workers=0", "trainer.max_steps=8", "validation.every_n_steps=2",
    "validation.tasks=[JobNorm]", "validation.max_queries=50", "test.tasks=[JobNorm]",
    "test.max_queries=100", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
]


def train_command(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "uwe_lightning.train", *OVERRIDES, f"hydra.run.dir={run_dir}", *extra]


def weights_sha256(run_dir: Path) -> str:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    digest = hashlib.sha256()
    for name in sorted(ckpt["state_dict"]):
        digest.update(name.encode())
        digest.update(ckpt["state_dict"][name].contiguous().numpy().tobytes())
    return digest.hexdigest()


def last_step(run_dir: Path) -> int | None:
    path = run_dir / "checkpoints" / "last.ckpt"
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False, mmap=True)["global_step"])
    except (OSError, RuntimeError, KeyError, EOFError):
        return None


def history(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "val_history.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "val/seconds"} for row in rows]


def run(cmd: list[str], log: Path) -> tuple[int, float]:
    start = time.perf_counter()
    with open(log, "w") as fh:
        code = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT).returncode
    return code, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("experiments/results/ddp/resume"))
    p.add_argument("--work", type=Path, default=Path("outputs/ddp_demo"))
    p.add_argument("--kill-after", type=int, default=4, help="kill once last.ckpt holds this step")
    p.add_argument("--signal", choices=["KILL", "TERM"], default="KILL")
    args = p.parse_args()
    if not (Path("outputs/tiny-bert") / "config.json").is_file():
        build_tiny_model(Path("outputs/tiny-bert"))
    tag = f"sig{args.signal.lower()}"
    reference, killed = args.work / "uninterrupted", args.work / f"killed-{tag}"
    for d in (reference, killed):
        d.mkdir(parents=True, exist_ok=True)
    record: dict = {"overrides": OVERRIDES, "load_before": Path("/proc/loadavg").read_text().split()[:3]}

    if not (reference / "results.json").is_file():
        code, seconds = run(train_command(reference, "overwrite=true"), reference / "console.log")
        record["uninterrupted"] = {"exit": code, "seconds": round(seconds, 1)}

    start = time.perf_counter()
    with open(killed / "console.log", "w") as fh:  # its own session: the signal reaches both ranks, like a scheduler's
        proc = subprocess.Popen(train_command(killed, "overwrite=true"), stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
        while proc.poll() is None and (last_step(killed) or 0) < args.kill_after:
            time.sleep(0.5)
        at = last_step(killed)
        os.killpg(proc.pid, getattr(signal, f"SIG{args.signal}"))
        code = proc.wait()
    time.sleep(2)  # rank 1 (same process group) is gone too
    record["killed"] = {"signal": f"SIG{args.signal}", "last_ckpt_step_at_kill": at, "exit": code,
                        "last_ckpt_step_after": last_step(killed), "seconds": round(time.perf_counter() - start, 1)}
    code, seconds = run(train_command(killed, "resume=true"), killed / "console-resume.log")
    info = json.loads((killed / "run_info.json").read_text())
    record["resumed"] = {"exit": code, "seconds": round(seconds, 1), "starts": info["starts"],
                         "final_step": info.get("summary", {}).get("final_step")}
    same_weights = weights_sha256(killed) == weights_sha256(reference)
    same_history = history(killed) == history(reference)
    record.update({"weights_sha256_equal": same_weights, "val_history_equal": same_history,
                   "sha256": weights_sha256(reference), "load_after": Path("/proc/loadavg").read_text().split()[:3]})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record_text = strict_json(record, indent=2).replace(f"{Path.cwd()}/", "")  # no machine paths in the record
    atomic_write_text(args.out.with_suffix(f".{tag}.json"), record_text + "\n")
    lines = [f"# 2-process CPU DDP run killed by SIG{args.signal} and resumed", "",
             f"Command: `PYTHONPATH=. nice -n 19 python experiments/demos/ddp_resume_demo.py --signal {args.signal}`; "
             f"each run is `python -m uwe_lightning.train {' '.join(OVERRIDES)} hydra.run.dir=<dir>`.", "",
             f"- killed when last.ckpt held step {at}; exit status {record['killed']['exit']}; last.ckpt after the "
             f"kill: step {record['killed']['last_ckpt_step_after']}",
             f"- resumed with `resume=true`: exit {code}, starts {[s['start_step'] for s in info['starts']]}, final "
             f"step {record['resumed']['final_step']}",
             f"- final weights equal to the uninterrupted run (sha256 of the state dict): **{same_weights}**",
             f"- validation history equal: **{same_history}**",
             f"- machine load (1/5/15 min) before / after: {record['load_before']} / {record['load_after']}", ""]
    atomic_write_text(args.out.with_suffix(f".{tag}.md"), "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
