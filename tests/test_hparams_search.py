"""Issue 30's one-axis grid: its plans (pass 1, pass 2, main-length check), its driver (fake training, real
planner) and the ``kind=search`` report, on fake run directories. No training runs here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from uwe_lightning.cli.report import main as report_main
from uwe_lightning.io import ConfigError
from uwe_lightning.paths import REPO_DIR
from uwe_lightning.studies.curves import MACRO
from uwe_lightning.studies.search import (
    PAPER_BOLD,
    axis_tables,
    default_centre,
    grid_axes,
    load_pool,
    load_search_run,
    one_axis_grid,
    plan,
)
from uwe_lightning.studies.search_report import build_search_report

AXES = grid_axes()
SETUP = default_centre(AXES)
CENTRE, STEPS = SETUP
#: A made-up landscape: lr 1e-4 and scorer.tau 2.0 beat the centre, loss.tau.J 0.1 a little; the rest lose.
BONUS = {("optim.lr", 1e-4): 0.010, ("scorer.tau", 2.0): 0.020, ("loss.tau.J", 0.1): 0.002}


def fake_objective(values: dict[str, float], steps: int) -> float:
    score = 0.35 + (0.03 if steps != STEPS else 0.0)
    for (key, value), bonus in BONUS.items():
        if abs(values[key] - value) < 1e-12:
            score += bonus
    return score - sum(0.001 for k, v in values.items() if abs(v - CENTRE[k]) > 1e-12
                       and (k, v) not in {kv for kv in BONUS})


def nested(flat: dict[str, object]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in flat.items():
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def write_run(run_dir: Path, values: dict[str, float], steps: int, finished: bool = True,
              started: str = "2026-12-07T21:00:00", wall_s: float = 300.0) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    info = {"config": nested({**values, "trainer.max_steps": steps, "task_name": "hparams_grid", "seed": 0}),
            "starts": [{"started": started}]}
    if finished:
        info["summary"] = {"best_val": {"step": steps, MACRO: 100 * fake_objective(values, steps)}, "unit": "percent",
                           "wall_s": wall_s}
    (run_dir / "run_info.json").write_text(json.dumps(info))


def run_points(root: Path, jobs) -> None:
    for job in jobs:
        values = {k: float(v) for k, _, v in (o.partition("=") for o in job.overrides) if k in CENTRE}
        steps = 600 if any(o.startswith("trainer.max_steps=") for o in job.overrides) else STEPS
        write_run(root / job.dir, values, steps)


def test_the_grid_is_29_cells_in_22_runs():
    assert [a.name for a in AXES] == ["scorer_tau", "alpha_j", "alpha_v", "alpha_a", "lr", "loss_tau_j",
                                      "loss_tau_v", "loss_tau_a"]
    assert sum(len(a.values) for a in AXES) == 29 and STEPS == 75
    assert set(CENTRE) == set(PAPER_BOLD) and CENTRE["scorer.tau"] == 0.1 and CENTRE["optim.lr"] == 8e-5
    points = one_axis_grid(CENTRE, AXES)
    assert len(points) == 22 and points[0].name == "centre"
    for p in points[1:]:  # every point differs from the centre in its own axis's key only
        assert [k for k in CENTRE if p.values[k] != CENTRE[k]] == [next(a.key for a in AXES if a.name == p.axis)]
    grid = plan("grid", Path("/nonexistent"), SETUP, AXES)
    assert len(grid.jobs) == 22 and grid.jobs[0].dir == "pass1/centre"
    assert "loss.alpha.J=1.0" in grid.jobs[0].overrides  # floats stay floats on the command line
    assert "optim.lr=8e-05" in grid.jobs[0].overrides


def test_second_pass_and_main_check_follow_the_moved_axes(tmp_path):
    with pytest.raises(ConfigError, match="grid is not finished"):
        plan("pass2", tmp_path, SETUP, AXES)
    run_points(tmp_path, plan("grid", tmp_path, SETUP, AXES).jobs)
    second = plan("pass2", tmp_path, SETUP, AXES)
    moved = {"scorer_tau", "lr", "loss_tau_j"}
    assert "3 moved axes" in second.note
    # around the pass-1 optimum: each moved axis's values (4 + 4 + 4 cells, the new centre once), minus what
    # pass 1 already ran at the same config (none: every pass-2 point has >= 2 keys off the old centre)
    assert len(second.jobs) == 1 + 3 * 3
    assert all(j.dir.startswith("pass2/") for j in second.jobs)
    assert {o.split("=")[1] for j in second.jobs for o in j.overrides if o.startswith("hparams_search=")} <= moved
    with pytest.raises(ConfigError, match="pass2 is not finished"):
        plan("main", tmp_path, SETUP, AXES)
    run_points(tmp_path, second.jobs)
    main = plan("main", tmp_path, SETUP, AXES)
    assert [j.dir for j in main.jobs] == ["main/optimum", "main/scorer_tau=0.1", "main/lr=8e-05"]
    assert all("trainer.max_steps=${scale.steps.main}" in j.overrides for j in main.jobs)
    assert "scorer.tau=2.0" in main.jobs[0].overrides and "optim.lr=0.0001" in main.jobs[0].overrides

    run_points(tmp_path, main.jobs)
    report = build_search_report(tmp_path, SETUP, AXES)
    assert [p["name"] for p in report["passes"]] == ["pass1", "pass2"]
    assert report["optimum"]["scorer.tau"] == 2.0 and report["optimum"]["optim.lr"] == 1e-4
    assert len(report["main_check"]) == 3


def test_one_moved_axis_needs_no_second_pass(tmp_path):
    for point in one_axis_grid(CENTRE, AXES):
        values = dict(point.values)
        write_run(tmp_path / "pass1" / point.name, values, STEPS)
        if point.axis not in ("lr", None):  # only lr can beat the centre
            summary = json.loads((tmp_path / "pass1" / point.name / "run_info.json").read_text())
            summary["summary"]["best_val"][MACRO] = 30.0
            (tmp_path / "pass1" / point.name / "run_info.json").write_text(json.dumps(summary))
    result = plan("pass2", tmp_path, SETUP, AXES)
    assert result.jobs == [] and "1 axis moved (lr)" in result.note


def test_report_kind_search_writes_a_table_and_plot_per_axis(tmp_path, capsys):
    runs = tmp_path / "runs"
    run_points(runs, plan("grid", runs, SETUP, AXES).jobs)
    write_run(runs / "pass1" / "unfinished", dict(CENTRE), STEPS, finished=False)
    report_main([str(runs), "kind=search", f"out={tmp_path / 'out'}"])
    md = (tmp_path / "out" / "report.md").read_text()
    assert md.count("### ") == 8 + 3  # pass 1's axes, and pass 2's three moved ones (not run yet: "–")
    assert "## pass2" in md and "| 2 (centre) | – | – |" in md
    assert "| **0.5** | 34.90 | 75 |" in md  # scorer.tau: the paper's bold value (0.1 below the centre)
    assert "| 2 | 37.00 ← | 75 |" in md  # scorer.tau 2.0 (+2.0 over the centre) is the optimum
    assert "| 0.1 (centre) | 35.00 | 75 |" in md
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["finished_runs"] == 22 and data["runs"] == 23
    assert (tmp_path / "out" / "search_pass1.png").stat().st_size > 10_000
    with pytest.raises(SystemExit) as exit_info:
        report_main([str(tmp_path / "empty"), "kind=search"])
    assert exit_info.value.code == 2


def test_a_temperature_of_a_graph_weighted_0_is_the_centres_run(tmp_path):
    """With loss.alpha.J = 0 the loss skips graph J, so loss.tau.J cannot change the run: its cells are the
    centre's run, not 3 more jobs (pass 2 of the real grid moved alpha J to 0)."""
    centre = {**CENTRE, "loss.alpha.J": 0.0}
    points = one_axis_grid(centre, AXES)
    assert len(points) == 22 - 3 and not any(p.axis == "loss_tau_j" for p in points)
    runs = tmp_path / "runs"
    write_run(runs / "pass2" / "centre", centre, STEPS)
    tau_j = next(t for t in axis_tables(load_pool([runs / "pass2"]), centre, AXES, STEPS) if t["axis"] == "loss_tau_j")
    assert [r["run"] for r in tau_j["rows"]] == [str(runs / "pass2" / "centre")] * 4
    assert tau_j["complete"] and not tau_j["moved"]
    alpha_j = next(t for t in axis_tables(load_pool([runs / "pass2"]), CENTRE, AXES, STEPS) if t["axis"] == "alpha_j")
    assert [r["best_val"] is not None for r in alpha_j["rows"]] == [True, False, False]  # alpha J 0 only


def test_report_compares_the_grid_with_optuna_at_equal_hours(tmp_path):
    runs = tmp_path / "runs"
    for i, job in enumerate(plan("grid", runs, SETUP, AXES).jobs):  # 22 jobs of 5 min: 1.83 h, in plan order
        values = {k: float(v) for k, _, v in (o.partition("=") for o in job.overrides) if k in CENTRE}
        write_run(runs / job.dir, values, STEPS, started=f"2026-12-07T21:{i:02d}:00")
    trials = [  # 1 h: a complete trial of 36.50 after 0.5 h, one pruned, then one of 38.00 that ends past the grid's last
        {"number": 0, "state": "COMPLETE", "value": 36.5, "params": {"optim.lr": 1e-4}, "seconds": 1800.0},
        {"number": 1, "state": "PRUNED", "value": None, "params": {"optim.lr": 1e-5}, "seconds": 1800.0},
        {"number": 2, "state": "COMPLETE", "value": 38.0, "params": {"optim.lr": 8e-5}, "seconds": 7200.0},
        {"number": 3, "state": "RUNNING", "value": None, "params": {}, "seconds": None}]
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "study.json").write_text(json.dumps({"trials": trials}))
    report_main([str(runs), "kind=search", f"out={tmp_path / 'out'}", f"optuna={tmp_path / 'study'}"])
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    c = data["comparison"]
    assert c["equal_budget_hours"] == pytest.approx(22 * 300 / 3600)  # the grid's total is the smaller one
    assert c["evaluations"] == {"grid": 22, "optuna": 3, "optuna_finished": 2}  # the running trial is left out
    assert c["best_at_equal_budget"]["grid"]["value"] == pytest.approx(37.0)  # scorer.tau 2.0
    assert c["best_at_equal_budget"]["optuna"]["value"] == pytest.approx(36.5)  # trial 2 ends after the budget
    assert c["best_overall"]["optuna"]["value"] == pytest.approx(38.0)
    assert c["optuna_minus_grid"] == pytest.approx(-0.5) and c["verdict"] == "the grid found the better setting"
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Grid vs Optuna at equal machine-hours" in md and "Equal budget: **1.83 h**" in md
    assert "Optimum 2: +2.00 over the centre value (above seed noise" in md  # scorer.tau
    assert "Optimum 0.1: +0.20 over the centre value (within seed noise" in md  # loss.tau.J
    with pytest.raises(SystemExit) as exit_info:  # not a study record: one line, exit 2
        report_main([str(runs), "kind=search", f"out={tmp_path / 'out2'}", f"optuna={tmp_path / 'nothing'}"])
    assert exit_info.value.code == 2


# -- the driver ---------------------------------------------------------------------------------------------

DRIVER_DIR = REPO_DIR / "experiments" / "studies" / "hparams_search"
FAKE_PY = """#!{python}
import json, os, pathlib, sys
args = sys.argv[1:]
if args[:2] != ["-m", "uwe_lightning.train"]:  # the planner runs for real
    os.execv({python!r}, [{python!r}, *args])
from hydra.core.override_parser.overrides_parser import OverridesParser
parsed = OverridesParser.create().parse_overrides(args[2:])  # as Hydra does first: a malformed override fails here
opts = {{o.key_or_group: str(o.value()) for o in parsed}}
run_dir = pathlib.Path(opts["hydra.run.dir"])
with open(pathlib.Path(sys.argv[0]).parent / "calls.txt", "a") as fh:
    fh.write(" ".join(args[2:]) + "\\n")
centre, bonus = json.loads({centre!r}), json.loads({bonus!r})
values = {{k: float(opts[k]) for k in centre}}
steps = 600 if "trainer.max_steps" in opts else 75
score = 0.35 + (0.03 if steps == 600 else 0.0) + sum(b for k, v, b in bonus if abs(values[k] - v) < 1e-12)
score -= 0.001 * sum(1 for k, v in values.items() if abs(v - centre[k]) > 1e-12
                     and not any(k == bk and abs(v - bv) < 1e-12 for bk, bv, _ in bonus))
config = {{"trainer": {{"max_steps": steps}}, "seed": 0}}
for key, value in values.items():
    node = config
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {{}})
    node[last] = value
run_dir.mkdir(parents=True, exist_ok=True)
info = {{"config": config, "summary": {{"best_val": {{"step": steps, {macro!r}: 100 * score}}, "unit": "percent"}}}}
(run_dir / "run_info.json").write_text(json.dumps(info))
"""


def _driver_repo(tmp_path: Path) -> tuple[Path, Path]:
    repo = tmp_path / "repo"
    (repo / "experiments" / "studies").mkdir(parents=True)
    shutil.copytree(DRIVER_DIR, repo / "experiments" / "studies" / "hparams_search")
    fake = tmp_path / "fake_python"
    fake.write_text(FAKE_PY.format(python=sys.executable, centre=json.dumps(CENTRE), macro=MACRO,
                                   bonus=json.dumps([[k, v, b] for (k, v), b in BONUS.items()])))
    fake.chmod(0o755)
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "x"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    return repo, fake


def _drive(repo: Path, fake: Path, runs: Path, mode: str = "grid", jobs: str | None = None):
    env = {**os.environ, "RUNS": str(runs), "PY": str(fake), "MODE": mode, "PYTHONPATH": str(REPO_DIR)}
    if jobs is not None:
        env["JOBS"] = jobs
    return subprocess.run(["bash", str(repo / "experiments/studies/hparams_search/run.sh")], env=env,
                          capture_output=True, text=True)


def calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "calls.txt"
    return path.read_text().splitlines() if path.exists() else []


def test_driver_runs_the_plan_one_job_at_a_time_and_resumes(tmp_path):  # ~20 s: in the default suite, since a
    # job name with '=' once stopped the real study at its second job (hydra.run.dir must be quoted)
    repo, fake = _driver_repo(tmp_path)
    runs = tmp_path / "runs"
    (runs / "pass1" / "lr=1e-05" / "checkpoints").mkdir(parents=True)
    (runs / "pass1" / "lr=1e-05" / "checkpoints" / "last.ckpt").write_text("")
    (runs / "pass1" / "lr=5e-05").mkdir(parents=True)  # stopped before its first checkpoint
    subset = _drive(repo, fake, runs, jobs="pass1/centre pass1/lr=1e-05 pass1/lr=5e-05")
    assert subset.returncode == 0, subset.stderr
    made = calls(tmp_path)
    assert len(made) == 3 and made[0].startswith("hparams_search=scorer_tau scorer.tau=0.1 ")
    assert "scale=cpu" in made[0] and "task_name=hparams_grid" in made[0] and "hydra.mode=RUN" in made[0]
    assert "overwrite=true" in made[1] and "resume=true" in made[2] and "resume=false overwrite=false" in made[0]  # plan order
    assert "pass 1: 22 runs" in subset.stderr
    assert _drive(repo, fake, runs, mode="pass2").returncode == 2  # pass 1 unfinished: nothing runs
    full = _drive(repo, fake, runs)
    assert full.returncode == 0 and full.stdout.count(": done") == 3 and len(calls(tmp_path)) == 22
    second = _drive(repo, fake, runs, mode="pass2")
    assert second.returncode == 0 and len(calls(tmp_path)) == 22 + 10
    main = _drive(repo, fake, runs, mode="main")
    assert main.returncode == 0 and len(calls(tmp_path)) == 35
    assert "trainer.max_steps=${scale.steps.main}" in calls(tmp_path)[-1]
    assert "unknown" in _drive(repo, fake, runs, mode="bogus").stderr


def test_driver_refuses_a_dirty_checkout(tmp_path):
    repo, fake = _driver_repo(tmp_path)
    script = repo / "experiments/studies/hparams_search/run.sh"
    script.write_text(script.read_text() + "\n# edited\n")
    result = _drive(repo, fake, tmp_path / "runs")
    assert result.returncode == 2 and "refusing to start" in result.stderr and not calls(tmp_path)


def test_a_run_written_before_percent_reads_as_percent(tmp_path):
    """Runs of an older checkout (``val/macro_map`` as a fraction) join the tables on the same scale."""
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    info = {"config": nested({**CENTRE, "trainer.max_steps": STEPS}),
            "summary": {"best_val": {"step": STEPS, "val/macro_map": 0.3512}}}
    (run_dir / "run_info.json").write_text(json.dumps(info))
    run = load_search_run(run_dir)
    assert run is not None and run.finished and abs(run.best_val - 35.12) < 1e-9
