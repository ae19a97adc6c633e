"""Quiet consoles: the library messages a user of these commands cannot act on are left out.

Every entry point (:func:`uwe_lightning.cli.errors.hydra_entry_point`) calls :func:`quiet_libraries` first. It
hides, and only hides (nothing a run computes changes):

- the library deprecation warnings listed in :data:`LIBRARY_WARNINGS` (they concern the libraries' code, not
  the user's config);
- transformers' per-load ``Loading weights`` progress bars;
- Lightning's advertisement for its cloud logger.

Our own warnings (``uwe_lightning.*`` loggers, data and config warnings) and every error are kept. See them all
again with ``UWE_SHOW_WARNINGS=1`` (or ``--debug`` / ``UWE_DEBUG=1``).
"""

from __future__ import annotations

import logging
import os
import warnings

#: Regular expressions of warning messages from libraries that are about the libraries themselves.
LIBRARY_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning on torch's pytree API
    r".*does not have many workers which may be a bottleneck",  # Lightning: the data stream is built in-process
    r".*The number of training batches \(.*\) is smaller than the logging interval",
    r".*Your `IterableDataset` has `__len__` defined",
    r".*Checkpoint directory .* exists and is not empty",  # resume=true: the run's own (prepare_run_dir guards)
    r".*`resume_download` is deprecated",
    r".*TypedStorage is deprecated",
    r".*'hydra/launcher/(submitit_slurm|submitit_local|joblib)' is validated",
)
#: Log records (logger name, message start) that advertise instead of inform.
ADVERTISEMENTS = (("lightning.pytorch.utilities.rank_zero", "💡 Tip:"),)


def show_everything() -> bool:
    return any(os.environ.get(name) == "1" for name in ("UWE_SHOW_WARNINGS", "UWE_DEBUG", "HYDRA_FULL_ERROR"))


class _DropAdvertisements(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def quiet_libraries() -> bool:
    """Install the filters (once; a no-op with ``UWE_SHOW_WARNINGS=1``); returns whether they are on."""
    if show_everything():
        return False
    for pattern in LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name, prefix in ADVERTISEMENTS:
        target = logging.getLogger(name)
        if not any(isinstance(f, _DropAdvertisements) for f in target.filters):
            target.addFilter(_DropAdvertisements(prefix))
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # transformers is a dependency; a stripped install still runs the commands
        pass
    return True
