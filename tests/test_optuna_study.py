"""``hparams_search=optuna`` (:mod:`uwe_lightning.training.optuna_study`) on the tiny model: 3 trials, one pruned
on an intermediate validation, the study stopped mid-trial and resumed from its SQLite file (the stopped trial
continues from its own ``last.ckpt``), Optuna's plots written. Needs optuna>=4 (the [sweeps] extra)."""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir

from tests.helpers.configs import base_overrides
from uwe_lightning.io import ConfigError
from uwe_lightning.paths import CONF_DIR
from uwe_lightning.training.optuna_study import STUDY_DB, run_study

optuna = pytest.importorskip("optuna", minversion="4.0")


class PruneTrialOneStopTrialTwo(optuna.pruners.BasePruner):
    """Deterministic stand-in for the median pruner: prunes trial 1 at its first validation, and stops the study
    (as SIGTERM does: SystemExit 143) when trial 2 reports step 4, after its step-2 checkpoint."""

    def prune(self, study, trial) -> bool:
        if trial.number == 2 and trial.last_step == 4:
            raise SystemExit(143)
        return trial.number == 1


def study_cfg(study_dir, model_dir, *extra):
    overrides = ["hparams_search=optuna", *base_overrides(study_dir, model_dir, steps=6, every=2, test_tasks=None),
                 "search.n_trials=3", f"search.pruner._target_={__name__}.PruneTrialOneStopTrialTwo",
                 "~search.pruner.n_startup_trials", "~search.pruner.n_warmup_steps", *extra]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=overrides), overrides


def test_study_prunes_stops_and_resumes_from_sqlite(tmp_path, tiny_model_dir):
    study_dir = tmp_path / "study"
    cfg, overrides = study_cfg(study_dir, tiny_model_dir)
    assert list(cfg.test.tasks) == [] and cfg.search.n_trials == 3
    with pytest.raises(SystemExit):
        run_study(cfg, overrides)
    storage = f"sqlite:///{study_dir / STUDY_DB}"
    stopped = optuna.load_study(study_name="uwe_hparams", storage=storage).get_trials()
    assert [t.state.name for t in stopped] == ["COMPLETE", "PRUNED", "RUNNING"]
    assert sorted(stopped[1].intermediate_values) == [2]  # pruned at its first validation, 4 steps early
    assert (study_dir / "trial_002" / "checkpoints" / "last.ckpt").is_file()

    with pytest.raises(ConfigError, match="resume=true"):
        run_study(cfg, overrides)
    cfg, overrides = study_cfg(study_dir, tiny_model_dir, "resume=true")
    best = run_study(cfg, overrides)
    trials = optuna.load_study(study_name="uwe_hparams", storage=storage).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED", "FAIL", "COMPLETE"]
    retry = trials[3]
    assert retry.user_attrs["retry_of"] == 2 and retry.params == stopped[2].params
    assert retry.user_attrs["run_dir"] == str(study_dir / "trial_002")
    assert sorted(retry.intermediate_values) == [2, 4, 6]  # step 2 restored from the checkpoint, then live
    info = json.loads((study_dir / "trial_002" / "run_info.json").read_text())
    assert [s["start_step"] for s in info["starts"]] == [0, 2] and info["summary"]["final_step"] == 6
    assert info["config"]["optim"]["lr"] == retry.params["optim.lr"]
    assert best == max(t.value for t in trials if t.state.name == "COMPLETE")
    record = json.loads((study_dir / "study.json").read_text())
    assert (record["finished"], record["pruned"], record["best"]["value"]) == (3, 1, best)
    for name in ("optuna_history.png", "optuna_importance.png", "optuna_intermediate.png"):
        assert record["plots"][name] == "written" and (study_dir / name).stat().st_size > 5_000


def test_a_stopped_trial_whose_directory_is_gone_starts_again_afresh(tmp_path, tiny_model_dir):
    """The study's optuna.db carried to another machine without its trial directories (a checkpoint does not
    survive it): the stopped trial runs again with the same values in a new directory instead of failing."""
    import shutil

    study_dir = tmp_path / "study"
    cfg, overrides = study_cfg(study_dir, tiny_model_dir)
    with pytest.raises(SystemExit):
        run_study(cfg, overrides)
    shutil.rmtree(study_dir / "trial_002")
    cfg, overrides = study_cfg(study_dir, tiny_model_dir, "resume=true")
    run_study(cfg, overrides)
    trials = optuna.load_study(study_name="uwe_hparams", storage=f"sqlite:///{study_dir / STUDY_DB}").get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED", "FAIL", "COMPLETE"]
    retry = trials[3]
    assert retry.user_attrs["retry_of"] == 2 and retry.params == trials[2].params
    assert retry.user_attrs["run_dir"] == str(study_dir / "trial_003") and not (study_dir / "trial_002").exists()
    info = json.loads((study_dir / "trial_003" / "run_info.json").read_text())
    assert [s["start_step"] for s in info["starts"]] == [0] and sorted(retry.intermediate_values) == [2, 4, 6]
