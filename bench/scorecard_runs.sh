#!/usr/bin/env bash
# The comparisons behind docs/scorecard.md: every task on both real models at budget `standard`
# (32 evaluation items per task), one torch thread each, then the scorecard from the saved folders.
#   bench/scorecard_runs.sh MODEL TASK OUT   # one comparison (MODEL: embedded | gemma3-270m)
#   bench/scorecard_runs.sh card OUTROOT     # the scorecard from OUTROOT/<model>/<task>
# Run two comparisons at a time on a 2-core machine (one per core).
set -euo pipefail
DATA=../shared/data
STEERING=baseline,prompting,mean_diff,pca_diff,probe,iti,learned,lora
if [ "$1" = card ]; then
    exec .venv/bin/steerlab scorecard "$2"/*/* -o docs/scorecard.md
fi
model=$1 task=$2 out=$3
case $task in
    sentiment) data=(-d "$DATA/sentiment_labelled_sentences") methods=$STEERING ;;
    persona) data=() methods=$STEERING ;;
    safety) data=(-d "$DATA/refusal_direction") methods=$STEERING,refusal,conditional ;;
    ab) data=(-d "$DATA/caa/sycophancy/generate.jsonl") methods=${STEERING/,learned/} ;;  # learned: long A/B prompts
    *) echo "unknown task $task" >&2; exit 2 ;;
esac
model_args=()
[ "$model" = embedded ] || model_args=(--model "$model")
mkdir -p "$(dirname "$out")"
OMP_NUM_THREADS=1 /usr/bin/time -f "wall %e s, cpu %U+%S s, max rss %M KB" \
    .venv/bin/steerlab compare --task "$task" "${data[@]}" "${model_args[@]}" --budget standard \
    --methods "$methods" --data-sizes 4,8,16 --seeds 0,1 \
    --capability "$DATA/caa/capability/mmlu_ab.jsonl" --capability-n 16 --threads 1 --quiet --out "$out"
