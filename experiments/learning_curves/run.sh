#!/usr/bin/env bash
# Issue 28, study 1, one job at a time, resumable: a job with results.json is done; one with a last.ckpt is
# continued (resume=true: exact resume, the same batches and RNG); otherwise it starts. Run it from a clean,
# frozen checkout (a git worktree of the study's commit); every job records its commit in run_info.json.
#   RUNS=<a directory outside the checkout>/learning_curves nohup experiments/learning_curves/run.sh > run.log 2>&1 &
#   JOBS="mean:0 softmax:0" experiments/learning_curves/run.sh       # a subset, in this order
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-outputs/learning_curves}
PY=${PY:-.venv/bin/python}
JOBS=${JOBS:-"mean:0 softmax:0 mean:1 softmax:1"}   # seed-major: each seed is a complete pair before the next
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "refusing to start: the checkout has uncommitted changes (run from a frozen worktree of one commit)" >&2
  exit 2
fi
mkdir -p "$RUNS"
for job in $JOBS; do
  scorer=${job%%:*}; seed=${job##*:}
  dir="$RUNS/$scorer-seed$seed"
  if [ -f "$dir/results.json" ]; then echo "[study] $job: done"; continue; fi
  resume=false; overwrite=false
  if [ -f "$dir/checkpoints/last.ckpt" ]; then resume=true; elif [ -d "$dir" ]; then overwrite=true; fi  # stopped before its first checkpoint
  echo "[study] $job: $( $resume && echo resuming || echo starting ) in $dir at $(date -Is), load $(cut -d' ' -f1-3 /proc/loadavg)"
  "$PY" -m uwe_lightning.train +experiment=learning_curves scale=cpu logger=csv "scorer=$scorer" "seed=$seed" \
    hydra.mode=RUN "hydra.run.dir=$dir" "resume=$resume" "overwrite=$overwrite" "$@"
  echo "[study] $job: finished at $(date -Is)"
done
