#!/usr/bin/env bash
# Issue 28, study 3 ("the backbone's share"): the untrained MiniLM and MPNet scored with every scorer (mean,
# MaxSim, SoftMax y-mean tau 0.5, SoftMax tau 0.1) on the validation subsets every training run validates on
# (the 7 validation tasks, 300 queries per task, seed 0: the same subsets as study 1's step 0). No training.
# One evaluation at a time; an evaluation with results.json is done. Run it from a clean, frozen checkout:
#   RUNS=<a directory outside the checkout>/step0 nohup experiments/learning_curves/step0_scorers.sh > step0.log 2>&1 &
# then the table:  python experiments/learning_curves/step0_table.py $RUNS > experiments/results/learning_curves/step0.md
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-outputs/step0_scorers}
PY=${PY:-.venv/bin/python}
JOBS=${JOBS:-"minilm:mean minilm:maxsim minilm:softmax_ymean minilm:softmax mpnet:mean mpnet:maxsim mpnet:softmax_ymean mpnet:softmax"}
TASKS='[Job2Skill@open,Skill2Job@open,SkillNorm@heldout,SkillExtr-H,SkillExtr-T,JobNorm,SkillSim]'
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "refusing to start: the checkout has uncommitted changes (run from a frozen worktree of one commit)" >&2
  exit 2
fi
mkdir -p "$RUNS"
for job in $JOBS; do
  model=${job%%:*}; scorer=${job##*:}
  dir="$RUNS/$model-$scorer"
  if [ -f "$dir/results.json" ]; then echo "[step0] $job: done"; continue; fi
  rm -rf "$dir"  # an evaluation that stopped has nothing to resume: it starts again
  echo "[step0] $job: starting in $dir at $(date -Is), commit $(git rev-parse --short HEAD), load $(cut -d' ' -f1-3 /proc/loadavg)"
  start=$(date +%s)
  "$PY" -m uwe_lightning.evaluate "model=$model" "scorer=$scorer" split=val "tasks=$TASKS" max_queries=300 seed=0 \
    show_progress=false "hydra.run.dir=$dir"
  echo "[step0] $job: finished at $(date -Is) in $(( $(date +%s) - start )) s, load $(cut -d' ' -f1-3 /proc/loadavg)"
done
