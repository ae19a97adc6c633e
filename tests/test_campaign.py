"""The campaign runner: jobs inside a budget, skipped when they cannot fit, stopped at the deadline with partial
results, compact results; and every shipped plan composes."""

from __future__ import annotations

import json
import time

import pytest
from hydra import compose, initialize_config_dir

from tests.helpers.configs import base_overrides
from uwe_lightning.io import ConfigError
from uwe_lightning.paths import CONF_DIR
from uwe_lightning.training.campaign import PLAN_DIR, Campaign, Job, expand_sweep, job_dir, load_plan

PLANS = sorted(p.stem for p in PLAN_DIR.glob("*.yaml"))


@pytest.mark.parametrize("plan", PLANS)
def test_every_job_of_every_plan_composes(plan):
    jobs = load_plan(plan)
    assert jobs and len({j.name for j in jobs}) == len(jobs)
    for job in jobs:
        if job.command != "train":
            continue
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=[*job.overrides, "trainer.max_time='00:00:01:00'"])
        assert cfg.trainer.max_time == "00:00:01:00"


def test_ablation_plan_is_seed_major_and_reuses_no_cell():
    names = [j.name for j in load_plan("ablations_minilm") if j.name.startswith("table4/")]
    assert names[:3] == ["table4/seed=0,loss=infonce", "table4/seed=0,loss=mtm_pairwise", "table4/seed=0,loss=mtm"]
    assert len(names) == 15


def test_unknown_plan_and_bad_job_fail_clearly():
    with pytest.raises(ConfigError, match="known plans"):
        load_plan("no_such_plan")
    with pytest.raises(ConfigError, match="command"):
        Job("x", command="sing")
    assert expand_sweep({"name": "t"}, {"seed": [0]})[0]["overrides"] == ["seed=0"]
    assert job_dir("t/seed=0,loss=mtm") == "t/seed-0_loss-mtm"


@pytest.mark.slow  # a real 2.5-minute wall-clock budget: 2 min of the default suite, and load-sensitive by design
def test_a_campaign_skips_and_stops_jobs_inside_its_budget(tiny_model_dir, tmp_path):
    """A 2.5-minute budget (room for a loaded CI machine): one quick job runs in full, a fixed-length job predicted to miss the deadline is
    stopped after its probe steps and reported skipped, a partial-ok job is stopped at the deadline by
    trainer.max_time and still exports and tests, a last job finds too little time left and is skipped."""
    common = [o for o in base_overrides(None, tiny_model_dir, steps=4, every=None, test_tasks="[JobNorm]")
              if not o.startswith("trainer.max_steps")]
    quick = Job("quick", overrides=[*common, "trainer.max_steps=4", "validation.tasks=[]"], tail_minutes=0.2)
    fixed = Job("fixed_too_long", overrides=[*common, "trainer.max_steps=200000", "validation.tasks=[]"],
                partial=False, tail_minutes=0.2)
    long = Job("long", overrides=[*common, "trainer.max_steps=200000", "validation.tasks=[]"],
               tail_minutes=0.5, min_minutes=0.3)
    late = Job("late", overrides=[*common, "trainer.max_steps=4"], min_minutes=5)
    budget = 150.0
    out, work = tmp_path / "out", tmp_path / "work"
    start = time.time()
    records = Campaign([quick, fixed, long, late], budget, out, work, probe_steps=2, grace_seconds=10,
                       poll_seconds=0.5).run()
    elapsed = time.time() - start
    status = {r.name: r for r in records}
    assert elapsed <= budget + 5, elapsed
    assert status["quick"].status == "done" and status["quick"].steps == "4/4", status["quick"]
    assert status["quick"].test_macro_map is not None
    assert status["fixed_too_long"].status == "skipped" and "predicted" in status["fixed_too_long"].reason
    assert status["long"].status == "stopped", status["long"]
    assert status["long"].test_macro_map is not None  # partial results: exported and tested
    assert status["late"].status == "skipped" and "min_minutes" in status["late"].reason
    summary = json.loads((out / "campaign.json").read_text())
    assert [j["status"] for j in summary["jobs"]] == ["done", "skipped", "stopped", "skipped"]
    assert (out / "long" / "results.json").is_file() and (out / "campaign.md").is_file()
    small = [p for p in out.rglob("*") if p.is_file()]
    assert all(p.stat().st_size < 1_000_000 for p in small) and not list(out.rglob("*.ckpt"))
