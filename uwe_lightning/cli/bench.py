"""``make bench`` / ``python -m uwe_lightning.bench``: the Table 3 cost benchmark (see :mod:`uwe_lightning.efficiency`)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from uwe_lightning import efficiency
from uwe_lightning.cli.errors import hydra_entry_point, run_reporting_user_errors
from uwe_lightning.paths import CONF_DIR
from uwe_lightning.training.jobrecord import accept_run


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="bench")
def _main(cfg: DictConfig) -> None:
    """Run the benchmark into the Hydra run directory and print its report."""
    result = run_reporting_user_errors("bench", lambda: efficiency.run(cfg, cfg.paths.output_dir))
    accept_run(cfg)  # measured and written: Hydra's record and the held log join bench.json (a refusal writes none)
    print(efficiency.markdown(result))


main = hydra_entry_point(_main)
