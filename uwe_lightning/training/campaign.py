"""A campaign: a list of jobs on one machine inside a fixed time budget, with compact results to copy back.

A GPU slot on a cluster is often short and fixed. :func:`run_campaign` runs the jobs of one or more plans
(``conf/campaign/<plan>.yaml``) one after another (or ``parallel`` at a time) and never runs past the budget:

- before a job starts, it is skipped when what is left is below its ``min_minutes``, or below the time an
  earlier job of the same ``shape`` took (when the job must run in full, ``partial: false``);
- a training job gets ``trainer.max_time`` = what is left minus its ``tail_minutes`` (export + test), so
  Lightning stops it cleanly at the deadline and it still exports and tests what it has (partial results);
- while it runs, ``progress.json`` (:class:`~uwe_lightning.training.callbacks.RunProgress`) gives its step
  rate after ``probe_steps``; a ``partial: false`` job (a fixed-length ablation) predicted to miss the deadline
  is stopped there and reported as skipped, so its time goes to the next job;
- past the hard deadline a job gets SIGTERM (checkpoint), then SIGKILL after ``grace_seconds``.

Heavy outputs (checkpoints, models) stay under ``work_dir``; ``out`` gets the small files only: per job
``run_info.json``, ``results.json``/``.md``, ``val_history.jsonl``, ``progress.json``, ``job.log`` (its tail),
and ``campaign.json`` + ``campaign.md`` (every job's status, reason, times, predictions, test macro MAP).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from uwe_lightning.io import ConfigError, atomic_copy, atomic_write_json, atomic_write_text
from uwe_lightning.paths import CONF_DIR, PROGRESS_FILE, REPO_DIR, RUN_INFO_FILE
from uwe_lightning.workbench.metric_names import MAP, VAL_MACRO_MAP, upgrade_run_summary

PLAN_DIR = CONF_DIR / "campaign"
SMALL_FILES = (RUN_INFO_FILE, "results.json", "results.md", "val_history.jsonl", PROGRESS_FILE,
               "knowledge_gain.md", "bench.md", "bench.json")
COMMANDS = {"train": "uwe_lightning.train", "bench": "uwe_lightning.bench", "evaluate": "uwe_lightning.evaluate"}
LOG_TAIL_BYTES = 20_000


@dataclass
class Job:
    """One command of a plan. ``overrides`` are its Hydra overrides; the runner adds the run directory."""

    name: str
    command: str = "train"
    overrides: list[str] = field(default_factory=list)
    estimate_minutes: float | None = None  # before anything is measured: used to skip a job that cannot fit
    min_minutes: float = 1.0               # skip when less is left
    tail_minutes: float = 1.0              # export + test after training stops (subtracted from max_time)
    partial: bool = True                   # may stop at the deadline with partial results (else: all or nothing)
    shape: str | None = None               # jobs of one shape cost the same: a measured one predicts the rest

    def __post_init__(self) -> None:
        if self.command not in COMMANDS:
            raise ConfigError(f"job {self.name}: command {self.command!r}; use one of {sorted(COMMANDS)}")


@dataclass
class JobRecord:
    name: str
    status: str = "pending"  # done | stopped | skipped | failed
    reason: str = ""
    command: str = ""
    started: float | None = None
    seconds: float | None = None
    predicted_seconds: float | None = None
    steps: str = ""
    returncode: int | None = None
    test_macro_map: float | None = None
    best_val: float | None = None


def expand_sweep(template: dict[str, Any], sweep: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """One job per point of ``sweep``, the LAST key varying fastest (put ``seed`` first: every cell gets seed 0
    before any cell gets seed 1, so a budget that runs out leaves whole seed rounds).

    >>> [j["name"] for j in expand_sweep({"name": "t4"}, {"seed": [0, 1], "loss": ["mtm", "infonce"]})]
    ['t4/seed=0,loss=mtm', 't4/seed=0,loss=infonce', 't4/seed=1,loss=mtm', 't4/seed=1,loss=infonce']
    """
    keys = list(sweep)
    jobs = []
    for values in itertools.product(*(sweep[k] for k in keys)):
        point = [f"{k}={v}" for k, v in zip(keys, values, strict=True)]
        job = dict(template)
        job["name"] = f"{template['name']}/{','.join(point)}"
        job["overrides"] = [*template.get("overrides", []), *point]
        jobs.append(job)
    return jobs


def load_plan(name: str) -> list[Job]:
    """The jobs of ``conf/campaign/<name>.yaml`` (``jobs:``, each optionally with a ``sweep:``)."""
    path = PLAN_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PLAN_DIR.glob("*.yaml"))
        raise ConfigError(f"plan={name!r}: no {path.relative_to(REPO_DIR)}; known plans: {known}")
    spec = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    jobs = []
    for raw in spec.get("jobs", []):
        raw = dict(raw)
        sweep = raw.pop("sweep", None)
        for item in expand_sweep(raw, sweep) if sweep else [raw]:
            try:
                jobs.append(Job(**item))
            except TypeError as err:
                raise ConfigError(f"{path.name}: job {item.get('name')!r}: {err}") from None
    return jobs


def job_dir(name: str) -> str:
    """A job name as a directory Hydra accepts in ``hydra.run.dir`` (no ``=`` or ``,``).

    >>> job_dir("table4/seed=0,loss=mtm")
    'table4/seed-0_loss-mtm'
    """
    return re.sub(r"[^A-Za-z0-9._/-]", "_", name.replace("=", "-"))


def max_time_string(seconds: float) -> str:
    """Lightning's ``max_time`` form ``DD:HH:MM:SS``.

    >>> max_time_string(3725.9)
    '00:01:02:05'
    """
    s = int(seconds)
    return f"{s // 86400:02d}:{s % 86400 // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def job_command(job: Job, run_dir: Path, max_time_s: float | None) -> list[str]:
    cmd = [sys.executable, "-m", COMMANDS[job.command], *job.overrides, f"hydra.run.dir={run_dir}"]
    if job.command == "train":
        cmd += ["hydra.mode=RUN"]  # an experiment file may set MULTIRUN: a campaign job is one run
        if max_time_s is not None:
            cmd.append(f"trainer.max_time='{max_time_string(max_time_s)}'")
    return cmd


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def predict_seconds(progress: dict[str, Any], tail_s: float) -> float | None:
    """Wall seconds the whole job will take, from its progress so far (training rate + validation share)."""
    step, total = progress.get("step", 0), progress.get("max_steps", 0)
    if step <= 0 or total <= 0:
        return None
    per_step = progress["elapsed_s"] / step  # validation so far included, at the rate it has been happening
    return per_step * total + tail_s


class Campaign:
    """Runs :class:`Job` s inside ``budget_s`` seconds from ``start``; see the module docstring."""

    def __init__(self, jobs: Sequence[Job], budget_s: float, out: Path, work_dir: Path, probe_steps: int = 10,
                 grace_seconds: float = 30.0, poll_seconds: float = 2.0, env: dict[str, str] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        names = [j.name for j in jobs]
        if len(set(names)) != len(names):
            raise ConfigError(f"two jobs share a name: {sorted({n for n in names if names.count(n) > 1})}")
        self.jobs, self.budget_s, self.out, self.work_dir = list(jobs), float(budget_s), out, work_dir
        self.probe_steps, self.grace_seconds, self.poll_seconds = probe_steps, grace_seconds, poll_seconds
        self.env, self.clock = env, clock
        self.start = clock()
        # SIGTERM -> SIGKILL takes up to grace_seconds, and the summary a moment: both inside the budget.
        self.deadline = self.start + self.budget_s - grace_seconds - 5.0
        self.records = [JobRecord(j.name) for j in jobs]
        self.shape_seconds: dict[str, float] = {}

    def left(self) -> float:
        return self.deadline - self.clock()

    def run(self) -> list[JobRecord]:
        self.out.mkdir(parents=True, exist_ok=True)
        for job, record in zip(self.jobs, self.records, strict=True):
            self.run_job(job, record)
            self.write_summary()
        return self.records

    def skip_reason(self, job: Job) -> str | None:
        left = self.left()
        if left < job.min_minutes * 60:
            return f"{left / 60:.1f} min left, below its min_minutes={job.min_minutes}"
        known = self.shape_seconds.get(job.shape) if job.shape else None
        need = known if known is not None else (job.estimate_minutes * 60 if job.estimate_minutes else None)
        if need is not None and not job.partial and need > left:
            return f"needs ~{need / 60:.1f} min ({'measured' if known else 'estimate'}), {left / 60:.1f} min left"
        return None

    def run_job(self, job: Job, record: JobRecord) -> None:
        reason = self.skip_reason(job)
        if reason:
            record.status, record.reason = "skipped", reason
            return
        run_dir = self.work_dir / job_dir(job.name)
        max_time = max(self.left() - job.tail_minutes * 60, 30.0) if job.command == "train" else None
        cmd = job_command(job, run_dir, max_time)
        record.command = shlex.join(cmd[1:])
        record.started = self.clock()
        log_path = self.work_dir / f"{job_dir(job.name)}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, cwd=os.getcwd(),
                                    env={**os.environ, **(self.env or {})}, start_new_session=True)
            stopped = self.watch(job, proc, run_dir, record)
        record.returncode = proc.returncode
        record.seconds = round(self.clock() - record.started, 1)
        self.collect(job, run_dir, log_path, record, stopped)

    def watch(self, job: Job, proc: subprocess.Popen, run_dir: Path, record: JobRecord) -> str | None:
        """Wait for the job; returns why it was stopped early (None: it ended by itself)."""
        stopped, term_at = None, None
        while proc.poll() is None:
            time.sleep(self.poll_seconds)
            progress = read_json(run_dir / PROGRESS_FILE) or {}
            if progress.get("step", 0) >= self.probe_steps and record.predicted_seconds is None:
                record.predicted_seconds = predict_seconds(progress, job.tail_minutes * 60)
                started_ago = self.clock() - (record.started or self.clock())
                if (not job.partial and record.predicted_seconds is not None
                        and record.predicted_seconds - started_ago > self.left()):
                    stopped = (f"predicted {record.predicted_seconds / 60:.1f} min after {progress['step']} steps, "
                               f"{(self.left() + started_ago) / 60:.1f} min were left")
                    term_at = self.clock()
                    os.killpg(proc.pid, signal.SIGTERM)
            if self.left() <= 0 and term_at is None:
                stopped, term_at = "hard deadline", self.clock()
                os.killpg(proc.pid, signal.SIGTERM)
            if term_at is not None and self.clock() - term_at > self.grace_seconds and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        return stopped

    def collect(self, job: Job, run_dir: Path, log_path: Path, record: JobRecord, stopped: str | None) -> None:
        dest = self.out / job_dir(job.name)
        dest.mkdir(parents=True, exist_ok=True)
        for name in SMALL_FILES:
            if (run_dir / name).is_file():
                atomic_copy(run_dir / name, dest / name)
        data = log_path.read_bytes() if log_path.is_file() else b""
        atomic_write_text(dest / "job.log", data[-LOG_TAIL_BYTES:].decode(errors="replace"))
        info = upgrade_run_summary((read_json(run_dir / RUN_INFO_FILE) or {}).get("summary") or {})
        progress = read_json(run_dir / PROGRESS_FILE) or {}
        if progress:
            record.steps = f"{progress.get('step')}/{progress.get('max_steps')}"
        test = info.get("test_macro") or {}
        record.test_macro_map = test.get(MAP)  # percent, as every score of a run
        record.best_val = (info.get("best_val") or {}).get(VAL_MACRO_MAP)
        finished = progress.get("max_steps") and progress.get("step") == progress.get("max_steps")
        if stopped and not job.partial:
            record.status, record.reason = "skipped", f"stopped early: {stopped}"
        elif stopped:
            record.status, record.reason = "stopped", stopped
        elif record.returncode != 0:
            record.status, record.reason = "failed", f"exit status {record.returncode} (see job.log)"
        elif job.command == "train" and not finished:
            record.status, record.reason = "stopped", f"trainer.max_time reached at step {record.steps}"
        else:
            record.status = "done"
            if job.shape and record.seconds is not None:
                self.shape_seconds.setdefault(job.shape, record.seconds)

    def write_summary(self) -> None:
        summary = {"budget_s": self.budget_s, "started": self.start, "elapsed_s": round(self.clock() - self.start, 1),
                   "jobs": [asdict(r) for r in self.records]}
        atomic_write_json(self.out / "campaign.json", summary)
        atomic_write_text(self.out / "campaign.md", summary_markdown(summary))


def summary_markdown(summary: dict[str, Any]) -> str:
    def fmt(x: float | None, scale: float = 1.0, digits: int = 1) -> str:
        return "" if x is None else f"{x * scale:.{digits}f}"

    lines = [f"# Campaign: {summary['elapsed_s'] / 60:.1f} of {summary['budget_s'] / 60:.1f} budget minutes", "",
             "| job | status | minutes | predicted | steps | best val MAP | test macro MAP | reason |",
             "|---|---|---:|---:|---|---:|---:|---|"]
    for r in summary["jobs"]:
        lines.append(f"| {r['name']} | {r['status']} | {fmt(r['seconds'], 1 / 60)} | "
                     f"{fmt(r['predicted_seconds'], 1 / 60)} | {r['steps']} | {fmt(r['best_val'], 1, 2)} | "
                     f"{fmt(r['test_macro_map'], 1, 2)} | {r['reason']} |")
    return "\n".join(lines) + "\n"
