"""Sweep reports (``python -m uwe_lightning.report``) on synthetic run directories in the real layout.

Each run directory is written by hand as ``training.run`` leaves it (``run_info.json`` with the resolved
``config`` and ``summary``, ``results.json`` with ``tasks`` / ``macro`` / optional ``knowledge_gain``), with
the config's path and seed-following keys, so grouping must tell the sweep's factors from the noise.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from uwe_lightning.cli.report import main as report_main
from uwe_lightning.io import ConfigError
from uwe_lightning.paths import REPO_DIR
from uwe_lightning.studies import build_report, group_runs, load_runs, make_report, t_quantile
from uwe_lightning.studies.aggregate import choose_kind
from uwe_lightning.studies.runs import Run, find_run_dirs, flatten

TASKS = ("Job2Skill", "JobNorm", "SkillExtr-H")
#: The fixtures below are run directories as older runs wrote them (fractions, ``val/macro_map``); the report
#: reads every score in percent (uwe_lightning.workbench.metric_names), so expected values scale by P.
P = 100.0
T975 = {1: 12.706, 2: 4.303, 4: 2.776, 9: 2.262, 29: 2.045}
LOSSES = {  # as conf/loss/*.yaml: InfoNCE has one tau, MTM one per graph
    "infonce": {"tau": 0.05, "alpha": {"J": 1.0, "V": 1.0, "A": 1.0}},
    "mtm_pairwise": {"tau": {"J": 0.05, "V": 0.02, "A": 0.02}, "alpha": {"J": 1.0, "V": 0.5, "A": 0.5}},
    "mtm": {"tau": {"J": 0.05, "V": 0.02, "A": 0.02}, "alpha": {"J": 1.0, "V": 0.5, "A": 0.5}},
}
SCORER_TAU = {"mean": None, "maxsim": None, "softmax_ymean": 0.5, "softmax": 0.1}


def config(run_dir: Path, seed: int, task_name: str, loss: str = "mtm", scorer: str = "mean",
           tau: float | None = None, graphs: list[str] | None = None) -> dict[str, Any]:
    """A resolved config with what differs between jobs of any sweep: output paths, data.seed, resume."""
    out = str(run_dir)
    return {
        "task_name": task_name, "seed": seed, "resume": seed == 1, "overwrite": False,
        "paths": {"data_dir": "/data/uwe-data", "model_dir": "/models", "cache_dir": None, "output_dir": out},
        "model": {"_target_": "uwe_lightning.model.pretrained.ModelSpec", "name": "mpnet",
                  "backbone": "mpnet"},
        "scorer": {"_target_": "uwe_lightning.model.scoring.get_scorer", "name": scorer,
                   "tau": SCORER_TAU[scorer] if tau is None else tau},
        "loss": {"_target_": "uwe_lightning.losses.GraphLoss", "name": loss, **LOSSES[loss]},
        "data": {"graphs": graphs or ["J", "V", "A"], "skills_per_step": 512, "seed": seed,
                 "source": {"data_dir": "/data/uwe-data", "val_fraction": 0.1}},
        "trainer": {"max_steps": 600, "default_root_dir": out},
        "logger": {"csv": {"save_dir": out, "name": "csv"}},
        "callbacks": {"model_checkpoint": {"dirpath": f"{out}/checkpoints", "monitor": "val/macro_map"}},
        "test": {"tasks": list(TASKS), "knowledge_gain": False},
    }


def results(maps: dict[str, float], gain: dict[str, float] | None = None) -> dict[str, Any]:
    tasks = {t: {"map": m, "rp@10": m + 0.1, "n_queries": 50, "n_targets": 900, "seconds": 0.1}
             for t, m in maps.items()}
    macro = sum(maps.values()) / len(maps)
    out: dict[str, Any] = {
        "model": "train/best_model", "split": "test", "tasks": tasks,
        "unavailable": {"SkillSim": "not in the pack"},
        "macro": {"map": macro, "rp@10": macro + 0.1, "covers": list(maps), "groups": {t: [t] for t in maps}},
    }
    if gain is not None:
        out["knowledge_gain"] = {
            "tasks": {t: {"map_final": maps[t], "map_step0": maps[t] - g, "gain": g}
                      for t, g in gain.items()},
            "macro": {"map_final": macro, "map_step0": macro - sum(gain.values()) / len(gain),
                      "gain": sum(gain.values()) / len(gain)},
        }
    return out


def write_run(run_dir: Path, cfg: dict[str, Any], res: dict[str, Any] | None,
              summary: dict | None = None) -> None:
    """A run directory; ``res=None`` leaves results.json out, ``summary=None`` leaves the run unfinished."""
    (run_dir / ".hydra").mkdir(parents=True)
    info: dict[str, Any] = {"config": cfg, "git": {"commit": "abc", "dirty": False}, "starts": []}
    if summary is not None:
        info["summary"] = summary
    (run_dir / "run_info.json").write_text(json.dumps(info))
    if res is not None:
        (run_dir / "results.json").write_text(json.dumps(res))


def loss_map(loss: str, seed: int, task: str) -> float:
    base = {"infonce": 0.30, "mtm_pairwise": 0.32, "mtm": 0.33}[loss]
    return base + 0.01 * seed ** 2 + 0.05 * TASKS.index(task)


@pytest.fixture
def loss_sweep(tmp_path: Path) -> Path:
    """Hydra multirun of 3 losses x 3 seeds: job 5 (mtm_pairwise, seed 2) unfinished, job 9 killed before its
    run_info.json, job 10 a skipped grid point."""
    sweep = tmp_path / "ablation_loss"
    job = 0
    for loss in LOSSES:
        for seed in range(3):
            run_dir = sweep / str(job)
            cfg = config(run_dir, seed, "ablation_loss", loss=loss)
            if job == 5:
                write_run(run_dir, cfg, None)
            else:
                maps = {t: loss_map(loss, seed, t) for t in TASKS}
                write_run(run_dir, cfg, results(maps), {"final_step": 600})
            job += 1
    (sweep / "9" / ".hydra").mkdir(parents=True)
    write_run(sweep / "10", config(sweep / "10", 0, "ablation_loss"), None,
              {"skipped": "every loss weight 0"})
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    return sweep


def ci(values: list[float]) -> float:
    return T975[len(values) - 1] * statistics.stdev(values) / math.sqrt(len(values))


def test_t_quantile_matches_tables():
    for df, expected in T975.items():
        assert t_quantile(0.975, df) == pytest.approx(expected, abs=5e-4)
    assert t_quantile(0.975, 10**7) == pytest.approx(1.95996, abs=1e-4)
    assert t_quantile(0.025, 4) == pytest.approx(-2.776, abs=5e-4)


@pytest.mark.parametrize("p", [0.975, 0.95, 0.995, 0.6, 0.025])
def test_t_quantile_equals_scipy(p):
    """Our t quantile (kept so that reporting does not import scipy, see docs) is scipy.stats.t.ppf to 1e-9."""
    stats = pytest.importorskip("scipy.stats")
    for df in [*range(1, 31), 50, 100, 1000]:
        assert t_quantile(p, df) == pytest.approx(float(stats.t.ppf(p, df)), rel=1e-9)


def test_loss_sweep_groups_counts_and_ci(loss_sweep: Path, tmp_path: Path):
    out = tmp_path / "report"
    report, written = make_report([loss_sweep], out, command="python -m uwe_lightning.report test")
    assert report["study"] == "ablation_loss"
    assert report["group_keys"] == ["loss.name"]
    assert "loss.tau" in report["derived_keys"] and "loss.alpha.V" in report["derived_keys"]
    assert not any(k.startswith(("paths.", "seed", "data.seed", "resume", "trainer.default_root_dir"))
                   for k in report["group_keys"] + report["derived_keys"])
    groups = {g["label"]: g for g in report["groups"]}
    assert list(groups) == ["infonce", "mtm_pairwise", "mtm"]  # the sweep's order (jobs sorted 0, 1, ..., 10)
    assert [g["n_runs"] for g in groups.values()] == [3, 2, 3]
    assert groups["mtm_pairwise"]["seeds"] == [0, 1]
    assert sorted(s["dir"].rsplit("/", 1)[-1] for s in report["skipped"]) == ["10", "5", "9"]

    for loss, seeds in (("mtm", [0, 1, 2]), ("mtm_pairwise", [0, 1])):
        cell = groups[loss]["tasks"]["JobNorm"]["map"]
        values = [P * loss_map(loss, s, "JobNorm") for s in seeds]
        assert cell["n"] == len(seeds)
        assert cell["mean"] == pytest.approx(statistics.mean(values))
        assert cell["sd"] == pytest.approx(statistics.stdev(values))
        assert cell["ci95"] == pytest.approx(ci(values), rel=1e-3)
        macro = [P * statistics.mean(loss_map(loss, s, t) for t in TASKS) for s in seeds]
        assert groups[loss]["macro"]["map"]["mean"] == pytest.approx(statistics.mean(macro))
        assert groups[loss]["macro"]["map"]["ci95"] == pytest.approx(ci(macro), rel=1e-3)
    assert report["unavailable"] == ["SkillSim"]

    assert report["kind"] == "bars"
    assert {p.name for p in written} == {"bars_macro.png", "bars_tasks.png", "report.json", "report.md"}
    for name in ("bars_macro.png", "bars_tasks.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / name).stat().st_size > 1000
    assert json.loads((out / "report.json").read_text())["plots"] == ["bars_macro.png", "bars_tasks.png"]
    md = (out / "report.md").read_text()
    mtm = [statistics.mean(loss_map("mtm", s, t) for t in TASKS) for s in range(3)]
    assert f"{100 * statistics.mean(mtm):.1f} ± {100 * ci(mtm):.1f} (n=3)" in md
    assert "(n=2)" in md and "`loss.name`" in md and "python -m uwe_lightning.report test" in md
    assert "8 finished of 11 run directories found below" in md and "every loss weight 0" in md


def test_paired_differences_over_shared_seeds(loss_sweep: Path, tmp_path: Path):
    """Each group minus the first, seed by seed: the seed-to-seed spread both share cancels."""
    report, _ = make_report([loss_sweep], tmp_path / "report", command="test", kind="none")
    groups = {g["label"]: g for g in report["groups"]}
    assert "paired" not in groups["infonce"]
    pairwise, mtm = groups["mtm_pairwise"]["paired"], groups["mtm"]["paired"]
    assert pairwise["reference"] == "infonce" and pairwise["seeds"] == [0, 1]  # seed 2 of mtm_pairwise unfinished
    assert mtm["seeds"] == [0, 1, 2]
    assert mtm["macro"]["map"]["mean"] == pytest.approx(3.0) and mtm["macro"]["map"]["sd"] == pytest.approx(0, abs=1e-10)
    assert groups["mtm"]["macro"]["map"]["ci95"] > 1.0  # unpaired: the seeds' spread is in the CI
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Paired differences" in md and "| `mtm` | 0, 1, 2 | +3.0 ± 0.0 (n=3) |" in md


def test_runs_of_two_experiments_take_the_name_most_runs_have(tmp_path: Path):
    """Table 5 reuses Table 4's mean cell: the report is named after the experiment most of its runs belong to."""
    maps = {t: 0.3 for t in TASKS}
    write_run(tmp_path / "t4" / "0", config(tmp_path / "t4" / "0", 0, "ablation_loss"), results(maps), {"s": 1})
    for i, scorer in enumerate(["maxsim", "softmax"]):
        run = tmp_path / "t5" / str(i)
        write_run(run, config(run, 0, "ablation_late_interaction", scorer=scorer), results(maps), {"s": 1})
    report = build_report([tmp_path / "t4", tmp_path / "t5"])
    assert report["study"] == "ablation_late_interaction"
    assert report["group_keys"] == ["scorer.name"]  # task_name is the experiment's label, not a factor
    named, _ = make_report([tmp_path / "t4", tmp_path / "t5"], tmp_path / "figure4", command="t", kind="none")
    assert named["study"] == "figure4"  # mixed experiments: the study folder names the study


def own_graph_results(edges_map: float, step0: float, popularity: float, tfidf: float | None) -> dict[str, Any]:
    """results.json of a ``data=edges`` run: no WorkBench task (macro None), the ``own`` suite, step 0 and the
    baselines evaluated on the same held-out queries."""
    def evaluated(value: float, **extra: Any) -> dict[str, Any]:
        return {"tasks": {"edges": {"map": value, "rp@10": value + 0.1, "n_queries": 10, "n_targets": 24,
                                    "seconds": 0.1}},
                "macro": {"map": None, "rp@10": None, "covers": [], "groups": {}},
                "suites": {"own": {"map": value, "rp@10": value + 0.1, "covers": ["edges"]}}, **extra}

    baselines = {"popularity": evaluated(popularity, model="popularity", ties="expected")}
    if tfidf is not None:
        baselines["tfidf"] = evaluated(tfidf, model="tfidf", ties="first")
    return {"model": "own_graph/best_model", "split": "test", **evaluated(edges_map), "unavailable": {},
            "step0": evaluated(step0), "baselines": baselines}


def test_baselines_and_step0_beside_each_group(tmp_path: Path):
    """Runs on one's own graph: the report's average is the held-out edges' (no WorkBench macro), and the
    popularity / TF-IDF rows and step 0 that results.json holds stand beside the trained model."""
    sweep = tmp_path / "own_graph"
    for i, (scorer, seed) in enumerate([("mean", 0), ("mean", 1), ("softmax", 0)]):
        run = sweep / str(i)
        cfg = config(run, seed, "own_graph", scorer=scorer)
        res = own_graph_results(0.40 + 0.1 * i, 0.10, 0.25, 0.30 if scorer == "mean" else None)
        write_run(run, cfg, res, {"final_step": 4})
    report, _ = make_report([sweep], tmp_path / "out", command="t", kind="none")
    groups = {g["label"]: g for g in report["groups"]}
    assert groups["mean"]["macro"]["map"]["mean"] == pytest.approx(45.0)  # the own suite's average, not None
    assert list(groups["mean"]["beside"]) == ["zero-shot (step 0)", "popularity", "tfidf"]
    assert groups["mean"]["beside"]["popularity"]["tasks"]["edges"]["map"]["mean"] == pytest.approx(25.0)
    assert groups["mean"]["beside"]["tfidf"]["macro"]["map"]["n"] == 2
    assert list(groups["softmax"]["beside"]) == ["zero-shot (step 0)", "popularity"]  # no TF-IDF in its runs
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Beside the baselines: MAP (%), same test queries" in md
    assert "| `softmax` | popularity | 25.0 (n=1, no CI) | 25.0 (n=1, no CI) |" in md
    assert "| `mean` | zero-shot (step 0) | 10.0 ± 0.0 (n=2) | 10.0 ± 0.0 (n=2) |" in md
    assert "| `mean` | tfidf | 30.0 ± 0.0 (n=2) |" in md and "| `softmax` | tfidf |" not in md
    assert "popularity: mean over a uniformly random order within tied scores" in md
    assert [r["test/macro/map"] for r in report["runs"]] == pytest.approx([40.0, 50.0, 60.0])
    plain, _ = make_report([tmp_path / "own_graph" / "0"], tmp_path / "plain", command="t", kind="none")
    assert plain["groups"][0]["beside"]  # one run: its baselines too


def test_no_baseline_section_without_baselines(loss_sweep: Path, tmp_path: Path):
    make_report([loss_sweep], tmp_path / "out", command="t", kind="none")
    assert "Beside the baselines" not in (tmp_path / "out" / "report.md").read_text()


def test_cli_warns_per_left_out_run(loss_sweep: Path, tmp_path: Path, capsys):
    out = tmp_path / "cli"
    report_main([str(loss_sweep), f"out={out}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("[report] warning: left out ") for line in err)
    assert any("no summary" in line for line in err) and any("skipped run" in line for line in err)
    assert (out / "report.md").is_file() and (out / "bars_macro.png").stat().st_size > 0


def test_single_seed_cells_say_no_ci(loss_sweep: Path, tmp_path: Path):
    """Run directories given one by one; one run per group: no CI, and the table says so."""
    report, _ = make_report([loss_sweep / "0", loss_sweep / "6"], tmp_path / "one", kind="none")
    assert report["group_keys"] == ["loss.name"] and report["plots"] == []
    cell = report["groups"][0]["macro"]["map"]
    assert cell["n"] == 1 and cell["ci95"] is None and cell["sd"] is None
    assert "(n=1, no CI)" in (tmp_path / "one" / "report.md").read_text()


def test_late_interaction_ablation_is_bars():
    """scorer=mean,maxsim,softmax_ymean,softmax also changes scorer.tau, which follows from the name."""
    runs = [_run(config(Path(f"/runs/{scorer}/{seed}"), seed, "ablation_late_interaction", scorer=scorer))
            for scorer in SCORER_TAU for seed in (0, 1)]
    grouping = group_runs(runs)
    assert grouping.keys == ["scorer.name"] and grouping.derived == ["scorer.tau"]
    assert choose_kind(grouping, runs) == "bars"


def _run(cfg: dict[str, Any]) -> Run:
    return Run(path=Path(cfg["paths"]["output_dir"]), config=cfg, flat=flatten(cfg),
               results=results({t: 0.3 for t in TASKS}))


def test_temperature_sweep_is_a_curve(tmp_path: Path):
    sweep = tmp_path / "temperature"
    points = [("softmax", tau) for tau in (2.0, 1.0, 0.5, 0.1)]
    points += [("softmax_ymean", 0.5), ("softmax_ymean", 1.0), ("maxsim", None)]
    job = 0
    for scorer, tau in points:
        for seed in (0, 1):
            run_dir = sweep / str(job)
            maps = {t: 0.35 - 0.02 * (tau or 0.0) + 0.01 * seed for t in TASKS}
            cfg = config(run_dir, seed, "ablation_late_interaction", scorer=scorer, tau=tau)
            write_run(run_dir, cfg, results(maps), {"final_step": 600})
            job += 1
    out = tmp_path / "curve"
    report, written = make_report([sweep], out)
    assert report["group_keys"] == ["scorer.name", "scorer.tau"]
    assert report["kind"] == "curve"
    assert (out / "curve.png").stat().st_size > 1000 and out / "curve.png" in written
    groups = {(g["scorer"]["name"], g["scorer"]["tau"]): g for g in report["groups"]}
    assert len(groups) == 7 and all(g["n_runs"] == 2 for g in groups.values())
    cell = groups[("softmax", 0.1)]["macro"]["map"]
    values = [P * (0.35 - 0.002), P * (0.35 - 0.002 + 0.01)]
    assert cell["mean"] == pytest.approx(statistics.mean(values))
    assert cell["ci95"] == pytest.approx(12.706 * statistics.stdev(values) / math.sqrt(2), rel=1e-3)
    assert groups[("maxsim", None)]["labels"]["scorer.tau"] == "null"


def test_cross_task_transfer_is_a_heatmap(tmp_path: Path):
    sweep = tmp_path / "transfer"
    gains = {"J": (0.06, 0.04, 0.02), "V": (0.01, 0.0, 0.05), "A": (0.0, -0.01, 0.01)}
    job = 0
    for graph, base in gains.items():
        for seed in range(3):
            run_dir = sweep / str(job)
            gain = {t: g + 0.002 * seed for t, g in zip(TASKS, base, strict=True)}
            cfg = config(run_dir, seed, "cross_task_transfer", graphs=[graph])
            cfg["test"]["knowledge_gain"] = True
            write_run(run_dir, cfg, results({t: 0.4 for t in TASKS}, gain), {"final_step": 300})
            job += 1
    out = tmp_path / "heat"
    report, _ = make_report([sweep], out)
    assert report["group_keys"] == ["data.graphs"] and report["kind"] == "heatmap"
    assert [g["label"] for g in report["groups"]] == ["[J]", "[V]", "[A]"]
    cell = report["groups"][0]["knowledge_gain"]["tasks"]["Job2Skill"]
    values = [6.0, 6.2, 6.4]
    assert cell["n"] == 3 and cell["mean"] == pytest.approx(6.2)
    assert cell["se"] == pytest.approx(statistics.stdev(values) / math.sqrt(3))
    assert (out / "heatmap.png").stat().st_size > 1000
    md = (out / "report.md").read_text()
    assert "Knowledge gain" in md and "+6.2 ± 0.1 (n=3)" in md

    report, written = make_report([sweep], tmp_path / "as_bars", kind="bars")  # kind= overrides the choice
    assert report["kind"] == "bars" and {p.name for p in written} >= {"bars_macro.png", "bars_tasks.png"}


def test_bad_kind_and_impossible_kind(loss_sweep: Path):
    with pytest.raises(ConfigError, match="unknown plot kind"):
        build_report([loss_sweep], kind="pie")
    with pytest.raises(ConfigError, match="knowledge_gain"):
        build_report([loss_sweep], kind="heatmap")


def test_discovery_finds_each_run_once(loss_sweep: Path):
    dirs = find_run_dirs([loss_sweep, loss_sweep / "3", loss_sweep / "3" / "results.json"])
    assert [d.name for d in dirs] == [str(i) for i in range(11)]
    runs, skipped = load_runs(dirs)
    assert len(runs) == 8 and len(skipped) == 3


def test_only_unfinished_runs_is_one_error_line(loss_sweep: Path, capsys):
    with pytest.raises(SystemExit) as exit_:
        report_main([str(loss_sweep / "5"), str(loss_sweep / "9")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("[report] error: no finished run under ")


def test_unknown_option_is_a_user_error(loss_sweep: Path, capsys):
    with pytest.raises(SystemExit) as exit_:
        report_main([str(loss_sweep), "outdir=x"])
    assert exit_.value.code == 2 and "unknown option outdir=" in capsys.readouterr().err


def test_help_names_the_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        report_main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "out=DIR" in out and "kind=KIND" in out


def test_empty_dir_exits_2_with_one_line(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run([sys.executable, "-m", "uwe_lightning.report", str(empty)], cwd=REPO_DIR,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("[report] error: no run directory"), proc.stderr


def _write_history(run_dir: Path, curve: dict[int, float]) -> None:
    lines = [json.dumps({"step": s, "val/macro_map": m, "val/JobNorm/map": m + 0.1, "val/JobNorm/rp@10": m})
             for s, m in curve.items()]
    (run_dir / "val_history.jsonl").write_text("\n".join(lines) + "\n")


def test_learning_curves_from_val_history(tmp_path: Path):
    """Runs that validated every 50 steps: the report draws learning curves, writes curves.json (percent), the
    mean and CI per step, and the first step at which softmax reaches mean (here 100; seed 1 of mean resumed and
    repeated step 100: the last record wins)."""
    sweep = tmp_path / "learning_curves"
    steps = range(0, 250, 50)
    job = 0
    for scorer in ("mean", "softmax"):
        for seed in (0, 1):
            run_dir = sweep / str(job)
            cfg = config(run_dir, seed, "learning_curves", scorer=scorer)
            write_run(run_dir, cfg, results({t: 0.3 for t in TASKS}), {"final_step": 200})
            curve = {s: (0.30 + 0.0002 * s if scorer == "mean" else 0.28 + 0.0004 * s) + 0.01 * seed for s in steps}
            _write_history(run_dir, curve)
            if scorer == "mean" and seed == 1:  # a resume repeats step 100 with its final value
                with (run_dir / "val_history.jsonl").open("a") as fh:
                    fh.write(json.dumps({"step": 100, "val/macro_map": curve[100]}) + "\n")
            job += 1
    out = tmp_path / "report"
    report, written = make_report([sweep], out)
    assert report["kind"] == "learning"
    assert {p.name for p in written} >= {"learning_curves.png", "learning_curves_tasks.png", "curves.json"}
    records = json.loads((out / "curves.json").read_text())
    assert len(records) == 4 and {r["scorer"] for r in records} == {"mean", "softmax"}
    first = next(r for r in records if r["scorer"] == "softmax" and r["seed"] == 0)
    assert first["steps"] == list(steps) and first["val_macro_map"][-1] == pytest.approx(100 * (0.28 + 0.08))
    curves = report["learning_curves"]
    assert curves["reference"] == "mean" and curves["first_step_reaching_reference"] == {"softmax": 100}
    point = curves["groups"]["softmax"]["macro"]["points"][-1]
    assert point["n"] == 2 and point["mean"] == pytest.approx(100 * (0.36 + 0.005))
    assert point["ci95"] == pytest.approx(12.706 * statistics.stdev([36.0, 37.0]) / math.sqrt(2), rel=1e-3)
    assert "## Learning curves" in (out / "report.md").read_text()
    with pytest.raises(ConfigError, match="kind=learning needs"):
        build_report([_no_history(tmp_path)], kind="learning")


def test_two_validations_give_bars_and_curves_json(tmp_path: Path):
    """A study that validates only at step 0 and at the end (issue 28's batch-size axis) is drawn as bars, and
    still gets curves.json (one record per run, both points) and the by-step table; a run without any
    validation history means no curves.json."""
    sweep = tmp_path / "batch_size"
    for job, (scorer, skills) in enumerate([("mean", 64), ("softmax", 64), ("mean", 128), ("softmax", 128)]):
        run_dir = sweep / str(job)
        cfg = config(run_dir, 0, "batch_size", scorer=scorer)
        cfg["data"]["skills_per_step"] = skills
        write_run(run_dir, cfg, results({t: 0.3 for t in TASKS}), {"final_step": 200})
        _write_history(run_dir, {0: 0.30, 200: 0.33 + skills / 10000})
    out = tmp_path / "report"
    report, written = make_report([sweep], out)
    assert report["kind"] == "bars" and "learning_curves.png" not in {p.name for p in written}
    records = json.loads((out / "curves.json").read_text())
    assert len(records) == 4 and {r["skills_per_step"] for r in records} == {64, 128}
    assert all(r["steps"] == [0, 200] for r in records)
    assert next(r for r in records if r["skills_per_step"] == 128)["val_macro_map"][-1] == pytest.approx(34.28)
    assert "## Learning curves" in (out / "report.md").read_text()
    plain = tmp_path / "plain_report"
    make_report([_no_history(tmp_path)], plain)
    assert not (plain / "curves.json").exists()


def _no_history(tmp_path: Path) -> Path:
    run_dir = tmp_path / "plain" / "0"
    write_run(run_dir, config(run_dir, 0, "x"), results({t: 0.3 for t in TASKS}), {"final_step": 1})
    return run_dir


def _views(unseen: dict[str, float], seen: dict[str, float]) -> dict[str, Any]:
    return {name: {"tasks": {t: {"map": m, "rp@10": m, "n_queries": 20, "n_targets": 900, "seconds": 0.1}
                             for t, m in maps.items()}, "macro": {"map": sum(maps.values()) / len(maps)}}
            for name, maps in (("unseen", unseen), ("seen", seen))}


def test_controls_paired_by_seed_per_task_and_per_view(tmp_path: Path):
    """Issue 29: shuffled alignment and a skill holdout against the aligned run, paired by seed per task (95 %
    CI) and on the seen / unseen views, with each view's gain over the run's own step-0 model."""
    shift = {"aligned": 0.0, "shuffled": -0.02, "holdout": -0.01}
    for arm, delta in shift.items():
        for seed in range(3):
            run = tmp_path / arm / f"seed{seed}"
            cfg = config(run, seed, f"transfer_{arm}")
            cfg["data"]["alignment"] = "shuffled" if arm == "shuffled" else "aligned"
            cfg["data"]["skill_holdout"] = 0.5 if arm == "holdout" else None
            maps = {t: 0.3 + 0.02 * seed + delta + 0.01 * i for i, t in enumerate(TASKS)}  # seed spread 4 points
            res = results(maps)
            unseen = {"Job2Skill": 0.10 + 0.02 * seed + (-0.03 if arm == "holdout" else 0.0)}
            seen = {"Job2Skill": 0.20 + 0.02 * seed}
            res["views"] = _views(unseen, seen)
            res["step0"] = {"tasks": res["tasks"], "macro": res["macro"],
                            "views": _views({"Job2Skill": 0.09 + 0.02 * seed}, {"Job2Skill": 0.19 + 0.02 * seed})}
            write_run(run, cfg, res, {"final_step": 300})
    report, _ = make_report([tmp_path / "aligned", tmp_path / "shuffled", tmp_path / "holdout"], tmp_path / "out",
                            command="test", kind="none")
    assert report["group_keys"] == ["data.alignment", "data.skill_holdout"]
    groups = {g["values"]["data.alignment"] + str(g["values"]["data.skill_holdout"]): g for g in report["groups"]}
    shuffled, holdout = groups["shuffledNone"]["paired"], groups["aligned0.5"]["paired"]
    assert shuffled["seeds"] == [0, 1, 2]
    cell = shuffled["tasks"]["JobNorm"]["map"]
    assert cell["mean"] == pytest.approx(-2.0) and cell["ci95"] == pytest.approx(0, abs=1e-7)  # the seed spread cancels
    assert groups["shuffledNone"]["tasks"]["JobNorm"]["map"]["ci95"] > 1.0  # unpaired it does not
    assert holdout["views"]["unseen"]["Job2Skill"]["mean"] == pytest.approx(-3.0)
    assert holdout["views"]["seen"]["Job2Skill"]["mean"] == pytest.approx(0.0, abs=1e-10)
    view = groups["aligned0.5"]["views"]["unseen"]["Job2Skill"]
    assert view["gain"]["mean"] == pytest.approx(-2.0) and view["map_step0"]["mean"] == pytest.approx(11.0)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Paired differences per task" in md and "-2.0 ± 0.0 (n=3)" in md
    assert "### View `unseen`" in md and "### View `seen`" in md
    assert "-3.0 ± 0.0 (n=3)" in md  # holdout - aligned on unseen Job2Skill


LEGACY_RUN = Path(__file__).parent / "fixtures" / "legacy_run"  # run_info / results / val_history of a real run
# (learning_curves mean-seed0, 2026-12-07) written before scores were percent: fractions and val/macro_map


def test_report_reads_a_run_dir_written_before_percent(tmp_path: Path):
    """An older run directory (fractions, ``val/macro_map``) reads as a new one: every score in percent under
    today's names, so old and new runs pool in one report."""
    old_results = json.loads((LEGACY_RUN / "results.json").read_text())
    old_history = [json.loads(line) for line in (LEGACY_RUN / "val_history.jsonl").read_text().splitlines()]
    assert "unit" not in old_results and "val/macro_map" in old_history[0]  # the fixture is of the old format
    runs = tmp_path / "learning_curves"
    for seed in (0, 1):  # two copies: a learning-curve report needs a group
        run = runs / f"mean-seed{seed}"
        run.mkdir(parents=True)
        for name in ("run_info.json", "results.json", "val_history.jsonl"):
            (run / name).write_bytes((LEGACY_RUN / name).read_bytes())
    out = tmp_path / "report"
    done = subprocess.run([sys.executable, "-m", "uwe_lightning.report", str(runs), f"out={out}"], cwd=REPO_DIR,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    want = P * old_results["macro"]["map"]
    assert report["runs"][0]["test/macro/map"] == pytest.approx(want, rel=1e-12)
    assert report["groups"][0]["macro"]["map"]["mean"] == pytest.approx(want, rel=1e-12)
    assert f"{want:.1f}" in (out / "report.md").read_text()
    curves = json.loads((out / "curves.json").read_text())
    by_step = {h["step"]: P * h["val/macro_map"] for h in old_history}  # a resume's repeat: the last wins
    assert curves[0]["val_macro_map"] == pytest.approx([by_step[s] for s in sorted(by_step)], abs=1e-4)  # 4 decimals
