#!/usr/bin/env bash
# CPU side of a GPU campaign through a copy limit (e.g. the device tool's 64 MiB per call):
#   bash experiments/gpu/prepare.sh [model=mpnet] [limit_mib=60]
# packs the offline bundle into gpu_bundle/ (parts <= 55 MiB) and groups its files into gpu_carry/1..N, each at
# most limit_mib, to copy one set per call (experiments/gpu/device.sh stage), then run on the last call.
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=mpnet; LIMIT=60
for arg in "$@"; do case $arg in model=*) MODEL=${arg#model=};; limit_mib=*) LIMIT=${arg#limit_mib=};; esac; done
PY=${PY:-.venv/bin/python}
rm -rf gpu_bundle gpu_carry
# pandas + xxhash: a bare image with torch/lightning/transformers may lack them (uwe_lightning imports pandas)
$PY -m uwe_lightning.bundle pack out=gpu_bundle model=$MODEL part_size=55MiB \
    'wheels.packages=[hydra-core,omegaconf,pandas,xxhash]' wheels.include_project=false
$PY - "$LIMIT" <<'PY'
import json, os, sys
from pathlib import Path
limit = int(sys.argv[1]) * 2**20
manifest = json.loads(Path("gpu_bundle/manifest.json").read_text())
files = [p["path"] for f in manifest["files"] for p in f["parts"]] + ["manifest.json", "UNPACK.md"]
sets, used = [[]], 0
for rel in sorted(files, key=lambda r: -os.path.getsize(f"gpu_bundle/{r}")):  # big first, then fill
    size = os.path.getsize(f"gpu_bundle/{rel}")
    best = next((s for s in sets if sum(os.path.getsize(f"gpu_bundle/{r}") for r in s) + size <= limit), None)
    if best is None:
        sets.append(best := [])
    best.append(rel)
for i, group in enumerate(sets, start=1):
    for rel in group:
        dest = Path(f"gpu_carry/{i}/{rel}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.link(f"gpu_bundle/{rel}", dest)
    print(f"gpu_carry/{i}: {len(group)} files, {sum(os.path.getsize(f'gpu_bundle/{r}') for r in group) / 2**20:.1f} MiB")
PY
