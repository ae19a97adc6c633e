"""User errors on the command line: one line naming the key, file, row or field and what to do, exit status 2.

Bad input is the user's to fix, so ``train``, ``evaluate``, ``rank``, ``bench``, ``serve`` and ``export`` print
``[<tool>] error: ...`` instead of a traceback. ``HYDRA_FULL_ERROR=1`` (Hydra's own switch), ``UWE_DEBUG=1`` or a
``--debug`` argument keep the full traceback. Anything else (a bug) still raises. Hydra's own composition errors
(an unknown key, a malformed override) are one line already; their exit status becomes 2 as well.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from hydra.errors import InstantiationException
from omegaconf.errors import OmegaConfBaseException

from uwe_lightning.cli.output_dir import remove_created_empty_run_dir
from uwe_lightning.cli.quiet import quiet_libraries
from uwe_lightning.io import ConfigError, DataError, MissingDependencyError, ModelNotFoundError
from uwe_lightning.training.jobrecord import drop_held_log

T = TypeVar("T")
USER_ERROR_EXIT = 2
#: What counts as the user's input being wrong (files, data, config values, models, caches).
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, DataError, ModelNotFoundError, MissingDependencyError, FileNotFoundError, NotADirectoryError,
    IsADirectoryError, PermissionError, OmegaConfBaseException,
)
#: Lightning's "this Trainer setting cannot work here" (devices, strategy, plugins), looked up only where Lightning
#: is already loaded: importing it costs seconds, and tools that never train (report, rank, serve) never load it.
_LIGHTNING_MISCONFIGURATION = ("lightning.fabric.utilities.exceptions", "MisconfigurationException")
_state = {"internal_error": False}


def debug_enabled() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1" or os.environ.get("UWE_DEBUG") == "1"


def take_debug_flag(argv: list[str] | None = None) -> None:
    """Remove ``--debug`` from the command line (Hydra would reject it) and turn on full tracebacks."""
    argv = sys.argv if argv is None else argv
    if "--debug" in argv:
        argv.remove("--debug")
        os.environ["UWE_DEBUG"] = "1"
        os.environ["HYDRA_FULL_ERROR"] = "1"


def _loaded_lightning_errors() -> tuple[type[BaseException], ...]:
    module = sys.modules.get(_LIGHTNING_MISCONFIGURATION[0])
    return (getattr(module, _LIGHTNING_MISCONFIGURATION[1]),) if module is not None else ()


def user_error(err: BaseException) -> BaseException | None:
    """The user error behind ``err`` (itself, or the cause of a Hydra instantiation error), else None."""
    seen = err
    while isinstance(seen, InstantiationException) and seen.__cause__ is not None:
        seen = seen.__cause__
    if isinstance(seen, USER_ERRORS + _loaded_lightning_errors()):
        return seen
    if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        return seen
    return None


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if isinstance(err, (ConfigError, DataError)) else f"{type(err).__name__}: {text}"


def run_reporting_user_errors(tool: str, fn: Callable[[], T]) -> T:
    """``fn()``; a user error prints one line and exits 2 (unless debugging); other errors propagate.

    A user error is a refusal: the log lines held for the run directory are dropped (:mod:`~uwe_lightning.
    training.jobrecord`), so a refused command changes no byte there, and a run directory the command created
    is removed again while it is empty (:mod:`~uwe_lightning.cli.output_dir`).
    """
    try:
        return fn()
    except Exception as err:
        found = user_error(err)
        if found is not None:
            drop_held_log()
            remove_created_empty_run_dir()
        if found is None or debug_enabled():
            _state["internal_error"] = found is None
            raise
        print(f"[{tool}] error: {one_line(found)}", file=sys.stderr, flush=True)
        raise SystemExit(USER_ERROR_EXIT) from None


def hydra_entry_point(hydra_main: Callable[[], Any]) -> Callable[[], Any]:
    """Wrap a ``@hydra.main`` function: ``--debug`` handling, quiet library output (:mod:`~uwe_lightning.cli.
    quiet`), and exit 2 for Hydra's composition errors."""

    def main() -> Any:
        take_debug_flag()
        quiet_libraries()
        try:
            return hydra_main()
        except SystemExit as exit_:
            if exit_.code == 1 and not _state["internal_error"]:
                raise SystemExit(USER_ERROR_EXIT) from None
            raise

    main.__doc__ = hydra_main.__doc__
    return main


def compose_main(tool: str, usage: str, run: Callable[[list[str]], T], argv: list[str] | None = None) -> T:
    """The entry point of a command that composes its config itself (no Hydra app, no run directory): ``--debug``
    taken, ``-h``/``--help`` prints ``usage`` and exits 0, else ``run(argv)`` with user errors as one line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    take_debug_flag(argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(usage)
        raise SystemExit(0)
    return run_reporting_user_errors(tool, lambda: run(argv))


def refuse_added_keys(tool: str) -> None:
    """A ConfigError for a ``+key=value`` override in a command without a schema (``evaluate``, ``rank``): the key
    is not a setting of the command (a ``+`` adds keys the config does not have, which it would then ignore). A
    ``+<group>=<option>`` (a config group of ``conf/``) and ``++key`` (add or replace, on purpose) pass.
    """
    from hydra.core.hydra_config import HydraConfig

    from uwe_lightning.paths import CONF_DIR

    if not HydraConfig.initialized():
        return
    for override in HydraConfig.get().overrides.task:
        if not override.startswith("+") or override.startswith("++"):
            continue
        key = override[1:].split("=", 1)[0]
        if "." not in key and (CONF_DIR / key).is_dir():
            continue
        raise ConfigError(f"unknown key {key} ({override}): {tool} has no such setting, and would ignore it; "
                          f"fix the spelling (its settings: python -m uwe_lightning.{tool} --cfg job)")

