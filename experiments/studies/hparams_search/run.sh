#!/usr/bin/env bash
# Issue 30: the Appendix A one-axis grid at CPU scale (validation only), one job at a time, resumable: a job whose
# run_info.json holds its summary is done; one with a last.ckpt is continued (resume=true: exact resume, the same
# batches and RNG); otherwise it starts (a grid job validates, and so checkpoints, only at its end: a stopped one
# starts again, at most one ~6-minute job lost). Run it from a clean, frozen checkout (a git worktree of the
# study's commit); every job records its commit, CPU model and library versions in run_info.json (a resume on
# another CPU type is marked other_cpu_than_first_start).
#   RUNS=/path/to/studies/hparams_search nohup experiments/studies/hparams_search/run.sh > run.log 2>&1 &
#   MODE=pass2 RUNS=... experiments/studies/hparams_search/run.sh   # after pass 1: the axes whose optimum moved
#   MODE=main RUNS=... experiments/studies/hparams_search/run.sh    # then: the two axes that moved most, main length
#   JOBS="pass1/centre pass1/lr=1e-05" ... run.sh                   # a subset (names as the plan prints them)
# MODE=grid (pass 1) runs the 29 cells of the 8 axes as 22 runs (the centre, where every axis sits at its
# default, once); the plan of each mode is experiments/studies/hparams_search/plan.py (printed to the log).
set -euo pipefail
cd "$(dirname "$0")/../../.."
RUNS=${RUNS:-outputs/hparams_search}
PY=${PY:-.venv/bin/python}
MODE=${MODE:-grid}
JOBS=${JOBS:-}
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "refusing to start: the checkout has uncommitted changes (run from a frozen worktree of one commit)" >&2
  exit 2
fi
mkdir -p "$RUNS"
plan=$(PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" "$PY" experiments/studies/hparams_search/plan.py "$MODE" "$RUNS")
mapfile -t lines <<< "$plan"
for line in "${lines[@]}"; do
  [ -n "$line" ] || continue
  read -r name rest <<< "$line"
  read -ra overrides <<< "$rest"   # the plan's overrides: words without spaces
  if [ -n "$JOBS" ] && [[ " $JOBS " != *" $name "* ]]; then continue; fi
  dir="$RUNS/$name"
  if [ -f "$dir/run_info.json" ] && grep -q '"summary":' "$dir/run_info.json"; then echo "[study] $name: done"; continue; fi
  resume=false; overwrite=false
  if [ -f "$dir/checkpoints/last.ckpt" ]; then resume=true; elif [ -d "$dir" ]; then overwrite=true; fi  # stopped before its first checkpoint
  echo "[study] $name: $( $resume && echo resuming || echo starting ) in $dir at $(date -Is), load $(cut -d' ' -f1-3 /proc/loadavg)"
  "$PY" -m uwe_lightning.train "${overrides[@]}" scale=cpu logger=csv task_name=hparams_grid \
    hydra.mode=RUN "hydra.run.dir='$dir'" "resume=$resume" "overwrite=$overwrite" "$@"  # quoted: job names hold '='
  echo "[study] $name: finished at $(date -Is)"
done
