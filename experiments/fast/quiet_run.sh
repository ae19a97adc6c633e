#!/usr/bin/env bash
# Every timing issue 16 asks for, in one run, on quiet cores (nothing else running on the machine).
#
#   experiments/fast/quiet_run.sh                 # check prepare peers eval readme  (~20-30 min on 2 quiet cores)
#   experiments/fast/quiet_run.sh mpnet           # optional, separately: the MPNet zero-shot test (~15-25 min)
#   experiments/fast/quiet_run.sh agreement       # optional: re-measure the (load-independent) top-10 agreement
#   QUIET_TINY=1 experiments/fast/quiet_run.sh    # smoke run: tiny settings, results under outputs/quiet_run_tiny
#
# Steps (each logged to $RESULTS/fast/quiet_run.md with its command, `uptime` before and after, wall time, exit):
#   check      refuses to start when the 1-min load average is above QUIET_MAX_LOAD (0.7; QUIET_FORCE=1 skips)
#   prepare    untimed: the cached target spaces (99k ESCO growth space, WorkBench test spaces), the ONNX + int8
#              exports, the 100k / 1M synthetic memory-mapped files (1M: ~5.5 GB under outputs/bench_peers/);
#              minutes the first time (more on a busy machine; it may run before the quiet window), seconds after
#   peers      experiments/bench/bench_peers.py (= make bench-peers): scoring vs target-space size with the peers
#              (sentence-transformers semantic_search, FAISS IndexFlatIP, padded-einsum MaxSim, the reference
#              path), end to end per query backend (torch / onnx / onnx_int8 / torch_int8, all four scorers, the
#              six WorkBench test target spaces), 100k and 1M mapped synthetic targets (memory, exact latency,
#              prefilter latency + recall@10) -> $RESULTS/bench_peers.{md,json} + bench_peers_latency_vs_targets.png
#   eval       the full zero-shot WorkBench test of MiniLM, wall + CPU time (= make bench-eval)
#              -> $RESULTS/bench_eval.{md,json}
#   agreement  (only when named, or QUIET_AGREEMENT=1) experiments/bench/fast_agreement.py: top-10 agreement and MAP of
#              fp16 storage and of the onnx / int8 query encoders vs fp32 -> $RESULTS/fast/agreement.{md,json}.
#              No timing in it, so it needs no quiet cores; ~30+ min (1000 queries per task). The committed
#              result stands unless the scoring code changed since (this step's log lists those commits).
#   mpnet      (only when named, or QUIET_MPNET=1) the same for MPNet -> $RESULTS/bench_eval_mpnet.{md,json}
#   readme     experiments/fast/where_the_time_goes.py: the README section from the json files
#              -> $RESULTS/fast/where_the_time_goes.md; with QUIET_README=1 also replaced in docs/results.md
#
# Environment: PY (python, default .venv/bin/python, else python3), QUIET_THREADS (2), QUIET_NICE (0),
# QUIET_PEERS_ARGS (extra bench_peers.py options), UWE_CACHE_DIR / UWE_DATA_DIR / UWE_MODEL_DIR as usual.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)

if [[ -z "${PY:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
THREADS=${QUIET_THREADS:-2}
NICE=${QUIET_NICE:-0}
TINY=${QUIET_TINY:-0}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

if [[ "$TINY" == 1 ]]; then
    RESULTS=${QUIET_OUT:-outputs/quiet_run_tiny}
    PEERS_SIZE=(--sizes 300 1000 --queries 3 --slow-queries 2 --warmup 1 --batch 8 --tasks JobNorm
                --e2e-queries 3 --synthetic 2000 5000 --synthetic-queries 3 --candidates 100)
    EVAL_SIZE=(--eval-tasks JobNorm --eval-max-queries 20)
    AGREE_SIZE=(--tasks JobNorm --max-queries 20 --scorers mean softmax --backends onnx_int8
                --reference-tasks JobNorm)
    MAX_LOAD=1000
else
    RESULTS=${QUIET_OUT:-experiments/results}
    PEERS_SIZE=()  # bench_peers.py's defaults: 30 timed queries per point, batch 256, 40 e2e queries per task
    EVAL_SIZE=()
    AGREE_SIZE=(--max-queries 1000)
    MAX_LOAD=${QUIET_MAX_LOAD:-0.7}
fi
# shellcheck disable=SC2206
PEERS_EXTRA=(${QUIET_PEERS_ARGS:-})
mkdir -p "$RESULTS/fast"
LOG="$RESULTS/fast/quiet_run.md"

if [[ $# -gt 0 ]]; then
    STEPS=("$@")
else
    STEPS=(check prepare peers eval)
    [[ "${QUIET_AGREEMENT:-0}" == 1 ]] && STEPS+=(agreement)
    [[ "${QUIET_MPNET:-0}" == 1 ]] && STEPS+=(mpnet)
    STEPS+=(readme)
fi

note() { echo "$*" | tee -a "$LOG"; }

if [[ ! -s "$LOG" ]]; then
    {
        echo "# quiet_run.sh: the timed runs of issue 16"
        echo
        echo "One entry per step: the command, \`uptime\` before and after, wall time, exit status."
    } >"$LOG"
fi
note ""
note "## Run started $(date -u '+%Y-%m-%d %H:%M:%S UTC') (steps: ${STEPS[*]}; tiny=$TINY)"
note ""
note "- commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)'), $(nproc) CPUs, threads $THREADS, nice $NICE, python $PY"
note "- $(uname -srm); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
note "- memory: $(free -g | awk '/Mem:/ {print $2 " GiB total, " $7 " GiB available"}')"

# step NAME COMMAND... : run it niced, log the command, load before / after, wall time; stop the run on failure.
step() {
    local name=$1
    shift
    local before after t0 t1 rc
    before=$(uptime)
    note ""
    note "### $name"
    note ""
    note "- command: \`$*\`"
    note "- before: \`${before# }\`"
    t0=$(date +%s)
    set +e
    nice -n "$NICE" "$@" 2>&1 | tee "$RESULTS/fast/quiet_run_$name.log"
    rc=${PIPESTATUS[0]}
    set -e
    t1=$(date +%s)
    after=$(uptime)
    note "- after: \`${after# }\`"
    note "- wall: $((t1 - t0)) s; exit $rc; output: $RESULTS/fast/quiet_run_$name.log"
    if [[ $rc -ne 0 ]]; then
        note "- **FAILED**: later steps not run"
        exit "$rc"
    fi
}

for s in "${STEPS[@]}"; do
    case "$s" in
    check)
        load=$(cut -d' ' -f1 /proc/loadavg)
        note ""
        note "### check"
        note ""
        note "- \`$(uptime | sed 's/^ //')\`; threshold $MAX_LOAD"
        if awk -v l="$load" -v m="$MAX_LOAD" 'BEGIN {exit !(l > m)}' && [[ "${QUIET_FORCE:-0}" != 1 ]]; then
            note "- **refused**: load $load > $MAX_LOAD (the cores are not quiet; QUIET_FORCE=1 runs anyway)"
            exit 3
        fi
        ;;
    prepare)
        step prepare "$PY" experiments/bench/bench_peers.py --prepare --threads "$THREADS" "${PEERS_SIZE[@]}" "${PEERS_EXTRA[@]}"
        ;;
    peers)
        step peers "$PY" experiments/bench/bench_peers.py --threads "$THREADS" "${PEERS_SIZE[@]}" "${PEERS_EXTRA[@]}" \
            --out "$RESULTS/bench_peers.md"
        ;;
    eval)
        step eval "$PY" experiments/bench/bench_peers.py --sections evaluate --model minilm --threads "$THREADS" \
            "${EVAL_SIZE[@]}" --out "$RESULTS/bench_eval.md"
        ;;
    mpnet)
        step mpnet "$PY" experiments/bench/bench_peers.py --sections evaluate --model mpnet --threads "$THREADS" \
            "${EVAL_SIZE[@]}" --out "$RESULTS/bench_eval_mpnet.md"
        ;;
    agreement)
        since=$(git log -1 --format=%H -- experiments/results/fast/agreement.json 2>/dev/null || true)
        if [[ -n "$since" ]]; then
            note ""
            note "Scoring-code commits since the committed agreement ($(git log -1 --format=%h "$since")):"
            git log --format='- %h %s' "$since"..HEAD -- uwe_lightning/ranking uwe_lightning/model/onnx.py \
                uwe_lightning/model/scoring.py experiments/bench/fast_agreement.py | cut -c1-140 | tee -a "$LOG"
        fi
        step agreement "$PY" experiments/bench/fast_agreement.py --threads "$THREADS" "${AGREE_SIZE[@]}" \
            --out "$RESULTS/fast/agreement.md"
        ;;
    readme)
        readme=()
        [[ "${QUIET_README:-0}" == 1 ]] && readme=(--readme docs/results.md)
        step readme "$PY" experiments/fast/where_the_time_goes.py --results "$RESULTS" \
            --out "$RESULTS/fast/where_the_time_goes.md" "${readme[@]}"
        ;;
    *)
        echo "unknown step: $s (check prepare peers eval agreement mpnet readme)" >&2
        exit 2
        ;;
    esac
done
note ""
note "Run finished $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
