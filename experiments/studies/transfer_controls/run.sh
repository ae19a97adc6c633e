#!/usr/bin/env bash
# Issue 29 (is cross-task transfer real, or label overlap?), every training job, one at a time, resumable: a job
# with results.json is done; one with a last.ckpt is continued (resume=true: exact resume, the same batches and
# RNG); otherwise it starts. Run it from a clean, frozen checkout (a git worktree of the study's commit); every
# job records its commit, CPU and library versions in run_info.json.
#   RUNS=/path/to/studies/transfer_controls nohup experiments/studies/transfer_controls/run.sh > run.log 2>&1 &
#   JOBS="all:0 shuffled:0" experiments/studies/transfer_controls/run.sh      # a subset, in this order
# Jobs (<arm>:<seed>): all = the aligned all-graphs run of Figure 3 at length (also the controls' reference:
# scored on the holdout's seen / unseen halves too), shuffled = data.alignment=shuffled, holdout =
# data.skill_holdout=0.5, J / V / A = one graph's loss alone. Seed-major for the controls, so each seed's
# aligned / shuffled / holdout triple is complete before the next; Figure 3's single graphs last.
set -euo pipefail
cd "$(dirname "$0")/../../.."
RUNS=${RUNS:-outputs/transfer_controls}
PY=${PY:-.venv/bin/python}
JOBS=${JOBS:-"all:0 shuffled:0 holdout:0 all:1 shuffled:1 holdout:1 all:2 shuffled:2 holdout:2 J:0 V:0 A:0 J:1 V:1 A:1"}
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "refusing to start: the checkout has uncommitted changes (run from a frozen worktree of one commit)" >&2
  exit 2
fi
mkdir -p "$RUNS"
for job in $JOBS; do
  arm=${job%%:*}; seed=${job##*:}
  case "$arm" in
    all)      study=length;   args=(+experiment=transfer_length "data.graphs=[J,V,A]" test.skill_views=0.5) ;;
    J|V|A)    study=length;   args=(+experiment=transfer_length "data.graphs=[$arm]") ;;
    shuffled) study=shuffled; args=(+experiment=transfer_shuffled) ;;
    holdout)  study=holdout;  args=(+experiment=transfer_holdout) ;;
    *) echo "unknown job $job (arms: all, J, V, A, shuffled, holdout)" >&2; exit 2 ;;
  esac
  dir="$RUNS/$study/$arm-seed$seed"
  if [ -f "$dir/results.json" ]; then echo "[study] $job: done"; continue; fi
  resume=false; overwrite=false
  if [ -f "$dir/checkpoints/last.ckpt" ]; then resume=true; elif [ -d "$dir" ]; then overwrite=true; fi  # stopped before its first checkpoint
  echo "[study] $job: $( $resume && echo resuming || echo starting ) in $dir at $(date -Is), load $(cut -d' ' -f1-3 /proc/loadavg)"
  "$PY" -m uwe_lightning.train "${args[@]}" scale=cpu logger=csv "seed=$seed" \
    hydra.mode=RUN "hydra.run.dir=$dir" "resume=$resume" "overwrite=$overwrite" "$@"
  echo "[study] $job: finished at $(date -Is)"
done
