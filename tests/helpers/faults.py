"""Fault injection for training runs: stop a run at a chosen step the ways a real run stops."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path

import lightning.pytorch as pl


class Killed(BaseException):
    """Stands in for SIGKILL inside the test process: nothing after the kill point runs, nothing is saved.

    A ``BaseException`` so that no ``except Exception`` of the code under test can swallow it.
    """


class KillAt(pl.Callback):
    """At the end of training step ``step`` (``global_step == step``), or at the end of training
    (``step=-1``: after the last checkpoint), stop the run by ``how``: ``kill`` (like SIGKILL), or send
    the process a real ``SIGTERM`` / ``SIGINT``."""

    def __init__(self, step: int, how: str = "kill") -> None:
        if how not in ("kill", "SIGTERM", "SIGINT"):
            raise ValueError(f"how must be kill, SIGTERM or SIGINT, got {how!r}")
        self.step = step
        self.how = how

    def _fire(self) -> None:
        if self.how == "kill":
            raise Killed(f"killed at step {self.step}")
        os.kill(os.getpid(), getattr(signal, self.how))

    def on_train_batch_end(self, trainer: pl.Trainer, *args, **kwargs) -> None:
        if trainer.global_step == self.step:
            self._fire()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.step == -1:
            self._fire()


def tree_state(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (relative path -> sha256 of a file's bytes, ``"<dir>"`` for a directory): two
    equal states mean no byte, file or directory was added, removed or changed (what a refused command must
    leave behind)."""
    state = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        state[rel] = "<dir>" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def load_strict_json(path: Path):
    """``path`` parsed by a strict JSON reader: a bare NaN, Infinity or -Infinity (which Python's ``json`` writes
    but other readers reject) fails the test."""
    def refuse(name: str):
        raise AssertionError(f"{path} holds {name}: not strict JSON")

    return json.loads(Path(path).read_text(), parse_constant=refuse)
