"""``python -m uwe_lightning.campaign budget_minutes=N plan=[paper_uwe,...] [out=DIR] [dry_run=true]``.

Composes ``conf/campaign.yaml`` (Hydra's compose API: the campaign writes where ``out`` says) and runs
:class:`~uwe_lightning.training.campaign.Campaign`. Each job is its own ``python -m uwe_lightning.<command>``
process, so a crash or an OOM of one job never takes the campaign down.
"""

from __future__ import annotations

import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from uwe_lightning.cli.errors import compose_main
from uwe_lightning.io import ConfigError
from uwe_lightning.paths import CONF_DIR
from uwe_lightning.training.campaign import Campaign, job_command, job_dir, load_plan

TOOL = "campaign"
USAGE = """python -m uwe_lightning.campaign budget_minutes=N ['plan=[paper_uwe,...]'] [out=DIR] [work_dir=DIR] [dry_run=true]

Run the jobs of one or more plans (uwe_lightning/conf/campaign/<plan>.yaml) one after another, each its own
process, and never past the time budget: a job that cannot finish is skipped, a training job is stopped in time
to export and test. Small result files go to out, checkpoints and models to work_dir.

Convention: Hydra overrides (key=value) composed without a run directory: the campaign writes where out= says,
and each of its jobs is a Hydra run of its own.

Keys (default first): budget_minutes (required), plan=[paper_uwe] (paper_uwe | ablations_minilm | smoke),
  out=outputs/campaign/<time>, work_dir=<out>-work, probe_steps=10, grace_seconds=30, dry_run=false

Examples:
  python -m uwe_lightning.campaign budget_minutes=12 'plan=[paper_uwe]' dry_run=true
  python -m uwe_lightning.campaign budget_minutes=240 'plan=[ablations_minilm]' out=campaign_results

Docs: docs/how-to/gpu.md"""


def run(cfg: DictConfig) -> dict:
    try:
        budget = float(cfg.budget_minutes)
    except Exception:
        raise ConfigError("budget_minutes: give the time budget in minutes, e.g. budget_minutes=12") from None
    if budget <= 0:
        raise ConfigError(f"budget_minutes={cfg.budget_minutes}: must be > 0")
    plans = [cfg.plan] if isinstance(cfg.plan, str) else list(cfg.plan)
    jobs = [job for name in plans for job in load_plan(name)]
    out = Path(cfg.out) if cfg.out else Path("outputs/campaign") / time.strftime("%Y-%m-%d_%H-%M-%S")
    work = Path(cfg.work_dir) if cfg.work_dir else out.with_name(out.name + "-work")
    if cfg.dry_run:
        for job in jobs:
            est = f"~{job.estimate_minutes} min" if job.estimate_minutes else "no estimate"
            print(f"[campaign] {job.name} ({est}, {'partial ok' if job.partial else 'all or nothing'}): "
                  f"{' '.join(job_command(job, work / job_dir(job.name), None)[1:])}")
        return {"jobs": [job.name for job in jobs]}
    campaign = Campaign(jobs, budget * 60, out, work, probe_steps=int(cfg.probe_steps),
                        grace_seconds=float(cfg.grace_seconds), poll_seconds=float(cfg.poll_seconds))
    records = campaign.run()
    counts = {s: sum(r.status == s for r in records) for s in ("done", "stopped", "skipped", "failed")}
    print(f"[campaign] {out}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
          + f" in {(time.time() - campaign.start) / 60:.1f} of {budget:g} min; see {out}/campaign.md")
    return {"out": str(out), "records": records}


def _compose_and_run(argv: list[str]) -> dict:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("campaign", overrides=argv)
    return run(cfg)


def main(argv: list[str] | None = None) -> dict:
    return compose_main(TOOL, USAGE, _compose_and_run, argv)
