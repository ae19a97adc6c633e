"""The on-disk answer cache: one JSON file per request, so a crash or a re-run never pays for an answer twice.

The key is the SHA-256 of the request as generated: the endpoint's model name, the messages, the sampling
parameters and the round (a retry that must re-ask an identical prompt is another request). The base URL and the
API key are not part of it, so the same model served elsewhere reuses the answers and no key reaches the disk.
Files are published atomically (:func:`uwe_lightning.io.atomic_write_json`): a killed run leaves whole answers
or none, and the next run resumes with the first request that has no file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from uwe_lightning.io import atomic_write_json


def request_key(request: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``request`` (sorted keys, no whitespace)."""
    canonical = json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ResponseCache:
    """Answers by request key under ``root/<key[:2]>/<key>.json``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The cached record, or None (absent or unreadable: then the request is simply made again)."""
        path = self.path(key)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and "answer" in record else None

    def put(self, key: str, request: dict[str, Any], answer: dict[str, Any]) -> None:
        atomic_write_json(self.path(key), {"key": key, "request": request, "answer": answer})

    def __contains__(self, key: str) -> bool:
        return self.path(key).is_file()

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("*/*.json")) if self.root.is_dir() else 0
