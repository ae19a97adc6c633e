"""Read an offline W&B run file (``run-<id>.wandb``) into its protobuf records, without wandb's own reader
(wandb >= 0.2x writes it from Go and ships no Python scanner).

The file is a LevelDB-style log: a 7-byte header (``:W&B``, a 2-byte magic, a version byte), then 32 KiB blocks
of chunks, each ``crc32 (4) | length (2, little endian) | type (1: full, 2: first, 3: middle, 4: last)``.
"""

from __future__ import annotations

import struct
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7


def raw_records(path: Path) -> list[bytes]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    out, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:  # block trailer padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            continue
        pending += chunk
        if kind in (1, 4):
            out.append(pending)
            pending = b""
    return out


def records(path: Path) -> list:
    """The run file's records as ``wandb_internal_pb2.Record`` messages."""
    from wandb.proto import wandb_internal_pb2

    parsed = []
    for raw in raw_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        parsed.append(record)
    return parsed
