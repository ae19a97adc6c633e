#!/usr/bin/env bash
# Issue 28, studies 1 and 2, one job at a time, resumable: a job with results.json is done; one with a last.ckpt
# is continued (resume=true: exact resume, the same batches and RNG); otherwise it starts. Run it from a clean,
# frozen checkout (a git worktree of the study's commit); every job records its commit in run_info.json.
#   RUNS=<a directory outside the checkout>/learning_curves nohup experiments/learning_curves/run.sh > run.log 2>&1 &
#   JOBS="mean:0 softmax:0" experiments/learning_curves/run.sh       # a subset, in this order
# Study 2, the batch-size axis (+experiment=batch_size; a job is <scorer>:<skills per step>, seed 0 in every cell):
#   STUDY=batch_size RUNS=<outside>/batch_size nohup experiments/learning_curves/run.sh > run.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/../.."
STUDY=${STUDY:-learning_curves}
PY=${PY:-.venv/bin/python}
case "$STUDY" in
  # seed-major: each seed is a complete pair before the next
  learning_curves) DEFAULT_JOBS="mean:0 softmax:0 mean:1 softmax:1" ;;
  # size-major: each size is a complete mean/softmax pair before the next (the cheapest pairs first)
  batch_size) DEFAULT_JOBS="mean:64 softmax:64 mean:128 softmax:128 mean:256 softmax:256" ;;
  *) echo "STUDY=$STUDY: must be learning_curves or batch_size" >&2; exit 2 ;;
esac
RUNS=${RUNS:-outputs/$STUDY}
JOBS=${JOBS:-$DEFAULT_JOBS}
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "refusing to start: the checkout has uncommitted changes (run from a frozen worktree of one commit)" >&2
  exit 2
fi
mkdir -p "$RUNS"
for job in $JOBS; do
  scorer=${job%%:*}; value=${job##*:}
  if [ "$STUDY" = batch_size ]; then
    dir="$RUNS/$scorer-skills$value"; job_args=("data.skills_per_step=$value" "seed=0")
  else
    dir="$RUNS/$scorer-seed$value"; job_args=("seed=$value")
  fi
  if [ -f "$dir/results.json" ]; then echo "[study] $job: done"; continue; fi
  resume=false; overwrite=false
  if [ -f "$dir/checkpoints/last.ckpt" ]; then resume=true; elif [ -d "$dir" ]; then overwrite=true; fi  # stopped before its first checkpoint
  echo "[study] $STUDY $job: $( $resume && echo resuming || echo starting ) in $dir at $(date -Is), load $(cut -d' ' -f1-3 /proc/loadavg)"
  "$PY" -m uwe_lightning.train "+experiment=$STUDY" scale=cpu logger=csv "scorer=$scorer" "${job_args[@]}" \
    hydra.mode=RUN "hydra.run.dir=$dir" "resume=$resume" "overwrite=$overwrite" "$@"
  echo "[study] $STUDY $job: finished at $(date -Is)"
done
