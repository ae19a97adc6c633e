#!/usr/bin/env bash
# GPU side (run from the repository root on the device machine, nothing reachable from it):
#   bash experiments/gpu/device.sh stage K             # copy the carried gpu_carry/K into /tmp/uwe-bundle
#   bash experiments/gpu/device.sh run BUDGET PLAN...  # unpack, install the wheels (never torch), run the campaign
# Results (small files) go to $OUT/campaign; device + versions to $OUT/device.txt.
set -euo pipefail
STAGE=/tmp/uwe-bundle; NODE=/tmp/uwe; OUT=${OUT:-/tmp/out}
case ${1:-} in
  stage)
    mkdir -p $STAGE && cp -r gpu_carry/$2/. $STAGE/ && du -sh $STAGE && ls $STAGE ;;
  run)
    BUDGET=$2; shift 2; PLANS=$(IFS=,; echo "$*")
    if [ -d gpu_carry ]; then for d in gpu_carry/*/; do cp -r $d. $STAGE/; done; fi
    python -m uwe_lightning.bundle unpack $STAGE target=$NODE
    # --no-deps: pip must never touch the image's torch / CUDA stack
    python -m pip install -q --no-index --no-deps --find-links $NODE/wheels hydra-core omegaconf antlr4-python3-runtime \
      || echo "some wheels did not install (already present?)"
    python -c "import pandas" 2>/dev/null || python -m pip install -q --no-index --find-links $NODE/wheels pandas
    python -c "import xxhash" 2>/dev/null || python -m pip install -q --no-index --no-deps --find-links $NODE/wheels xxhash || true
    { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
      python -c "import torch, transformers, lightning; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'transformers', transformers.__version__, 'lightning', lightning.__version__)"; } > $OUT/device.txt 2>&1 || true
    UWE_DATA_DIR=$NODE/data UWE_MODEL_DIR=$NODE/models python -m uwe_lightning.campaign budget_minutes=$BUDGET \
      "plan=[$PLANS]" out=$OUT/campaign work_dir=/tmp/uwe-work ;;
  *) echo "usage: device.sh stage K | run BUDGET PLAN..." >&2; exit 2 ;;
esac
