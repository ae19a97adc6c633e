"""Launchers, shown for real where this machine can: a 2-job sweep through ``hydra/launcher=submitit_local``, and
what ``hydra/launcher=submitit_slurm`` would submit (the sweep's jobs and submitit's sbatch script; no cluster here).

    PYTHONPATH=. nice -n 19 .venv/bin/python experiments/demos/launcher_demo.py --out experiments/results/launchers

The sweep trains the tiny BERT (tests/helpers/models.py, built into outputs/tiny-bert) on the fixture graphs and
the miniature data pack (tests/fixtures), seeds 0 and 1, 4 steps each, as two submitit jobs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers.configs import base_overrides
from tests.helpers.launchers import compose_with_hydra, sbatch_script, sweep_jobs
from tests.helpers.models import build_tiny_model
from uwe_lightning.io import atomic_write_text, strict_json

SLURM = ["+experiment=ablation_loss", "trainer=gpu", "hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu",
         "hydra.launcher.account=my-project", "hydra.launcher.timeout_min=240"]
SLURM_DDP = ["-m", "+experiment=uwe", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2",
             "trainer.precision=bf16-mixed", "hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu",
             "hydra.launcher.account=my-project", "hydra.launcher.gpus_per_node=4", "hydra.launcher.nodes=2",
             "hydra.launcher.timeout_min=240"]


def local_sweep(sweep_dir: Path) -> tuple[list[str], dict]:
    tiny = Path("outputs/tiny-bert")
    if not (tiny / "config.json").is_file():
        build_tiny_model(tiny)
    overrides = [o for o in base_overrides(None, tiny, steps=4, every=2) if not o.startswith("validation.tasks")]
    overrides += ["validation.tasks=[JobNorm]", "trainer.enable_progress_bar=false"]
    cmd = [sys.executable, "-m", "uwe_lightning.train", "-m", "hydra/launcher=submitit_local", *overrides, "seed=0,1",
           f"hydra.sweep.dir={sweep_dir}"]
    shutil.rmtree(sweep_dir, ignore_errors=True)  # a fresh sweep (its job directories would refuse a second run)
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    jobs = {}
    for job in sorted(p for p in sweep_dir.iterdir() if p.name.isdigit()):
        info = json.loads((job / "run_info.json").read_text())
        jobs[job.name] = {"seed": info["config"]["seed"], "final_step": info["summary"]["final_step"],
                          "test_macro_map": info["summary"].get("test_macro", {}).get("map"),
                          "files": sorted(p.name for p in job.iterdir())}
    submitit = sorted(str(p.relative_to(sweep_dir)) for p in (sweep_dir / ".submitit").rglob("*") if p.is_file())
    return cmd, {"exit": result.returncode, "seconds": round(time.perf_counter() - start, 1), "jobs": jobs,
                 "submitit_files": submitit, "stderr_tail": result.stderr[-1500:]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("experiments/results/launchers"))
    p.add_argument("--work", type=Path, default=Path("outputs/launcher_demo"))
    p.add_argument("--reuse-sweep", action="store_true", help="report the last local sweep instead of a new one")
    args = p.parse_args()
    if args.reuse_sweep:
        recorded = json.loads((args.out / "submitit_local.json").read_text())
        cmd, sweep, load = recorded["command"], recorded, recorded["load"]
    else:
        load = Path("/proc/loadavg").read_text().split()[:3]
        cmd, sweep = local_sweep(args.work.resolve() / "submitit_local")
        sweep.update(command=cmd, load=load)
    lines = ["# Launchers", "", "Written by `PYTHONPATH=. nice -n 19 .venv/bin/python experiments/demos/launcher_demo.py "
             "--out experiments/results/launchers` (`--reuse-sweep` rewrites it from the last sweep's record).", "",
             "## A 2-job sweep through submitit_local (run here)", "",
             "The sweep command:", "", "```", " ".join(cmd), "```", "",
             f"Exit status {sweep['exit']}, {sweep['seconds']} s wall on the shared 2-core machine (load average "
             f"{load}).", "", "| job | seed | final step | test macro MAP | files |", "|---|---:|---:|---:|---|"]
    for name, job in sweep["jobs"].items():
        lines.append(f"| {name} | {job['seed']} | {job['final_step']} | {job['test_macro_map']} | "
                     f"{', '.join(job['files'])} |")
    lines += ["", "Four steps barely move a random tiny BERT's rankings, so the equal test MAPs say nothing about the "
              "seeds; what the sweep shows is both jobs running through submitit and writing complete run directories."]
    lines += ["", "submitit's bookkeeping under `<sweep dir>/.submitit/`: " + ", ".join(f"`{f}`" for f in
                                                                                        sweep["submitit_files"])]
    for title, overrides in (("a 15-job ablation sweep (one GPU per job)", SLURM),
                             ("one 8-GPU DDP job on 2 nodes x 4 GPUs", SLURM_DDP)):
        cfg = compose_with_hydra(*[o for o in overrides if o != "-m"],
                                 f"hydra.sweep.dir={args.work.resolve() / 'slurm'}", "hydra.job.name=train")
        jobs = sweep_jobs(cfg)
        script = sbatch_script(cfg, args.work.resolve() / "slurm")
        lines += ["", f"## submitit_slurm: {title} (not submitted: no cluster here)", "",
                  f"`python -m uwe_lightning.train {' '.join(overrides)}` makes "
                  + (f"{len(jobs)} jobs: " + "; ".join(" ".join(sorted(j)) for j in jobs) if any(jobs) else
                     "one job (`-m`: launchers only run multiruns; a sweep of one point)") + ".",
                  "", "The sbatch script submitit writes for each (its `#SBATCH` lines and the srun line):", "",
                  "```bash", *[ln for ln in script.splitlines() if ln.startswith(("#SBATCH", "srun", "export"))], "```"]
    args.out.mkdir(parents=True, exist_ok=True)

    def relative(text: str) -> str:  # no machine paths in the record
        return text.replace(f"{Path.cwd()}/", "").replace(sys.executable, "python")

    atomic_write_text(args.out / "README.md", relative("\n".join(lines) + "\n"))
    atomic_write_text(args.out / "submitit_local.json", relative(strict_json(sweep, indent=2) + "\n"))
    print(relative("\n".join(lines)))


if __name__ == "__main__":
    main()
