"""``hparams_search=optuna``: a current Optuna study over our own Hydra ``compose``, with pruning on the
intermediate validations, stored in a local SQLite file so that it resumes after an interruption.

Why not hydra-optuna-sweeper: it pins ``optuna<3`` (2.10.1, 2021) and launches whole jobs, so a trial can only
report its final value and nothing is pruned; see ``docs/how-to/search.md``. Here each trial is one
:func:`~uwe_lightning.training.run.train` run in ``<study dir>/trial_<n>/`` (``run_info.json``, checkpoints,
``val_history.jsonl`` as any run), composed from the study command's overrides plus the trial's values;
:class:`OptunaPruning` reports every WorkBench validation to the trial and stops it when the pruner says so.

Resume (``resume=true`` in the same ``hydra.run.dir``): the study is loaded from ``optuna.db``; a trial that was
stopped (SIGTERM, a kill: left RUNNING, or FAIL after Ctrl-C) is closed as FAIL and queued again with the same
values *in its own run directory*, so it continues from its ``last.ckpt`` exactly (and reports its restored
validations again); where that directory is gone (``optuna.db`` carried to another machine), it starts again
in a new one. ``search.n_trials`` counts finished trials (complete or pruned), retries not included.
One process per study: the SQLite file is a record, not a queue for parallel workers.

At the end: ``study.json`` (every trial: state, value, values, intermediate values, run dir) and Optuna's
history / importance / intermediate-value plots (``optuna.visualization.matplotlib``).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf

from uwe_lightning.io import ConfigError, atomic_save_figure, atomic_write_json, make_dirs, require
from uwe_lightning.paths import CONF_DIR
from uwe_lightning.training.callbacks import VAL_MONITOR, WorkBenchValidation
from uwe_lightning.training.jobrecord import accept_run
from uwe_lightning.training.rundir import existing_outputs
from uwe_lightning.training.summary import objective

log = logging.getLogger("uwe_lightning.train")

STUDY_DB = "optuna.db"
STUDY_JSON = "study.json"
PLOTS = ("optuna_history.png", "optuna_importance.png", "optuna_intermediate.png")
#: Overrides of the study command that each trial sets itself.
TRIAL_KEYS = ("resume", "overwrite", "paths.output_dir", "hydra.run.dir", "hydra.mode")
MIN_OPTUNA = (4, 0)


def require_optuna() -> Any:
    """Optuna >= 4, or one line saying how to get it."""
    optuna = require("optuna", "hparams_search=optuna")
    if tuple(int(p) for p in optuna.__version__.split(".")[:2]) < MIN_OPTUNA:
        raise ConfigError(f"hparams_search=optuna needs optuna>=4 (installed: {optuna.__version__}, which "
                          "hydra-optuna-sweeper pins); pip uninstall hydra-optuna-sweeper && pip install 'optuna>=4'")
    return optuna


class OptunaPruning(pl.Callback):
    """Report each WorkBench validation (``val_history``'s :data:`VAL_MONITOR`) to an Optuna trial; raise
    ``TrialPruned`` when its pruner says so (never at the final step: that value is the trial's result).

    Our validation runs in ``on_train_batch_end`` (:class:`WorkBenchValidation`), not in Lightning's validation
    loop, so a callback on ``on_validation_end`` (optuna-integration's) would never see it. A resumed trial
    reports the validations its checkpoint restored first."""

    def __init__(self, trial: Any) -> None:
        self.trial = trial
        self.reported: set[int] = set()

    @staticmethod
    def _history(trainer: pl.Trainer) -> list[dict[str, Any]]:
        validation = next((cb for cb in trainer.callbacks if isinstance(cb, WorkBenchValidation)), None)
        if validation is None:
            raise ConfigError("hparams_search=optuna prunes on validations: validation.tasks must not be empty")
        return validation.history

    def _report(self, record: dict[str, Any]) -> None:
        step = int(record["step"])
        if step not in self.reported:
            self.trial.report(float(record[VAL_MONITOR]), step)
            self.reported.add(step)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for record in self._history(trainer):
            self._report(record)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        history = self._history(trainer)
        if not history or history[-1]["step"] != trainer.global_step or trainer.global_step in self.reported:
            return
        self._report(history[-1])
        if trainer.global_step < trainer.max_steps and self.trial.should_prune():
            import optuna

            raise optuna.TrialPruned(f"pruned at step {trainer.global_step}: {VAL_MONITOR} "
                                     f"{history[-1][VAL_MONITOR]:.2f} %")


def search_space(cfg: DictConfig) -> dict[str, list[Any]]:
    """``search.params``: each key's categorical values (the grid's axes)."""
    params = OmegaConf.to_container(cfg.search.params, resolve=True) or {}
    for key, values in params.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"search.params.{key}: give a list of values, e.g. [0.01, 0.02]")
    return params


def compose_trial(overrides: Sequence[str], params: dict[str, Any], run_dir: Path, resume: bool) -> DictConfig:
    """The study command's config with the trial's values, in the trial's own run directory."""
    from hydra.core.global_hydra import GlobalHydra

    kept = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] not in (*TRIAL_KEYS, *params)]
    trial = [*kept, *(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in params.items()),
             f"paths.output_dir='{run_dir}'", f"resume={str(resume).lower()}", f"overwrite={str(not resume).lower()}"]
    if GlobalHydra.instance().is_initialized():  # inside `python -m uwe_lightning.train hparams_search=optuna`
        return hydra.compose("train", overrides=trial)
    with hydra.initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return hydra.compose("train", overrides=trial)


def requeue_stopped(study: Any) -> list[int]:
    """Close the trials a stopped study left (RUNNING, or FAIL without a retry) and queue each again in its own
    run directory (in a new one where that directory is gone); returns their numbers."""
    import optuna
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    requeued = []
    for t in trials:
        if t.state not in (TrialState.RUNNING, TrialState.FAIL) or t.number in retried or "run_dir" not in t.user_attrs:
            continue
        if t.state == TrialState.RUNNING:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.tell(t.number, state=TrialState.FAIL)
        attrs = {"retry_of": t.number}
        if existing_outputs(Path(t.user_attrs["run_dir"])):
            attrs["resume_dir"] = t.user_attrs["run_dir"]
        else:  # its directory is gone (the study's optuna.db carried to another machine): the same values, afresh
            log.warning("trial %d's directory %s holds no run: it starts again in a new one", t.number,
                        t.user_attrs["run_dir"])
        study.enqueue_trial(dict(t.params), user_attrs=attrs)
        requeued.append(t.number)
    return requeued


def study_record(study: Any) -> dict[str, Any]:
    """Every trial as plain data (``study.json``)."""
    trials = [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
               "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())},
               "run_dir": t.user_attrs.get("run_dir"), "retry_of": t.user_attrs.get("retry_of"),
               "seconds": t.duration.total_seconds() if t.duration else None}
              for t in study.get_trials(deepcopy=False)]
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    best = max(complete, key=lambda t: t["value"]) if complete else None
    return {"study_name": study.study_name, "metric": VAL_MONITOR, "direction": "maximize",
            "sampler": type(study.sampler).__name__, "pruner": type(study.pruner).__name__,
            "finished": sum(t["state"] in ("COMPLETE", "PRUNED") for t in trials),
            "pruned": sum(t["state"] == "PRUNED" for t in trials), "best": best, "trials": trials}


def write_plots(study: Any, out_dir: Path) -> dict[str, str]:
    """Optuna's history, importance and intermediate-value plots; what could not be drawn, and why."""
    import optuna
    from optuna.visualization import matplotlib as optuna_plots

    drawn: dict[str, str] = {}
    makers = dict(zip(PLOTS, (optuna_plots.plot_optimization_history, optuna_plots.plot_param_importances,
                              optuna_plots.plot_intermediate_values), strict=True))
    for name, make in makers.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                ax = make(study)
            atomic_save_figure(ax.figure, out_dir / name)
            drawn[name] = "written"
        except (ValueError, RuntimeError) as err:  # e.g. importance needs >= 2 complete trials
            drawn[name] = f"not drawn: {err}"
    return drawn


def run_study(cfg: DictConfig, overrides: Sequence[str]) -> float | None:
    """Run (or continue) the study of ``cfg.search`` in ``cfg.paths.output_dir``; returns the best value."""
    optuna = require_optuna()
    s = cfg.search
    study_dir = Path(cfg.paths.output_dir)
    db = study_dir / STUDY_DB
    if db.exists() and not cfg.resume:
        raise ConfigError(f"{study_dir} already holds a study ({STUDY_DB}): continue it with resume=true, or start "
                          "a new one with another hydra.run.dir=<dir>")
    make_dirs(study_dir)
    accept_run(cfg)  # the study command's .hydra/ record; each trial's own goes to .hydra/restarts/<time>/
    space = search_space(cfg)
    study = optuna.create_study(
        study_name=str(s.study_name), storage=s.storage or f"sqlite:///{db}", direction="maximize",
        sampler=hydra.utils.instantiate(s.sampler), pruner=hydra.utils.instantiate(s.pruner), load_if_exists=True)
    requeued = requeue_stopped(study)
    if requeued:
        log.info("resuming the study: trial(s) %s continue in their run directories", requeued)
    finished = sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.get_trials(deepcopy=False))

    def trial_objective(trial: Any) -> float:
        params = {key: trial.suggest_categorical(key, values) for key, values in space.items()}
        resume_dir = trial.user_attrs.get("resume_dir")
        run_dir = Path(resume_dir) if resume_dir else study_dir / f"trial_{trial.number:03d}"
        trial.set_user_attr("run_dir", str(run_dir))
        summary = train_trial(compose_trial(overrides, params, run_dir, resume=bool(resume_dir)), trial)
        value = objective(summary)
        if value is None:
            raise ConfigError(f"trial {trial.number} has no {VAL_MONITOR}: validation.tasks must not be empty")
        return value

    try:
        study.optimize(trial_objective, n_trials=max(0, int(s.n_trials) - finished), gc_after_trial=True)
    finally:
        record = study_record(study)
        record["plots"] = write_plots(study, study_dir)
        atomic_write_json(study_dir / STUDY_JSON, json.loads(json.dumps(record, default=str)))
    return record["best"]["value"] if record["best"] else None


def train_trial(trial_cfg: DictConfig, trial: Any) -> dict[str, Any]:
    from uwe_lightning.training.run import train

    return train(trial_cfg, extra_callbacks=[OptunaPruning(trial)])
