"""The lock file: ``make install`` installs its exact versions, and ``run_info.json`` records its sha256 and every
installed version that differs from it."""

from __future__ import annotations

import importlib.metadata

from uwe_lightning.integrity import sha256_file
from uwe_lightning.training.provenance import LOCK_FILE, lock_record


def test_lock_record_names_what_differs(tmp_path):
    torch_version = importlib.metadata.version("torch")
    lock = tmp_path / "lock.txt"
    lock.write_text(f"# header\nTorch=={torch_version}\nnumpy==0.0.1\nno-such-package-here==1.0\n")
    record = lock_record(lock)
    assert record["sha256"] == sha256_file(lock) and record["file"] == "lock.txt"
    assert record["differ"] == {"numpy": {"lock": "0.0.1", "installed": importlib.metadata.version("numpy")},
                                "no-such-package-here": {"lock": "1.0", "installed": "not installed"}}


def test_the_committed_lock_pins_the_core_dependencies():
    pins = {line.split("==")[0].lower() for line in LOCK_FILE.read_text().splitlines()
            if "==" in line and not line.startswith("#")}
    assert {"lightning", "transformers", "hydra-core", "tokenizers", "safetensors", "numpy"} <= pins
    assert "torch" not in pins  # the Makefile pins torch itself (CPU build)
