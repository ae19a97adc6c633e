"""``python -m uwe_lightning.train [+experiment=uwe] [key=value ...]``: one training run (or a ``-m`` sweep).

The run itself is :func:`uwe_lightning.training.run.train`; this module only binds it to ``conf/train.yaml``.
"""

from __future__ import annotations

import warnings

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import uwe_lightning.training.config  # noqa: F401  (registers the train_schema that train.yaml extends)
from uwe_lightning.cli.errors import hydra_entry_point, run_reporting_user_errors
from uwe_lightning.paths import CONF_DIR
from uwe_lightning.training.summary import objective

# Our hydra/launcher/*.yaml share their names with the launcher plugins' schemas, which Hydra then validates them
# against (typos in launcher keys fail); Hydra calls that matching deprecated. The files hold every key, so they
# keep working when the matching goes.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/(submitit_slurm|submitit_local|joblib)' is validated")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _main(cfg: DictConfig) -> float | None:
    """Train; returns the sweep objective (the best validation macro MAP). With a ``search`` section
    (``hparams_search=optuna``) run that Optuna study instead, one training run per trial.

    The training modules load here, after Hydra has composed the config: they import Lightning (~10 s on 2
    cores), which a mistyped key or ``--help`` should not wait for."""
    from uwe_lightning.training.optuna_study import run_study
    from uwe_lightning.training.run import train

    if cfg.get("search") is not None:
        overrides = list(HydraConfig.get().overrides.task)
        return run_reporting_user_errors("train", lambda: run_study(cfg, overrides))
    return run_reporting_user_errors("train", lambda: objective(train(cfg)))


main = hydra_entry_point(_main)
