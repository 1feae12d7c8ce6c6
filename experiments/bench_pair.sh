#!/bin/bash
# The bench of a baseline commit and of this tree in one run (issue 24: "same run, load
# printed"): `cpo-opt bench --n 3000000 --batch 16384 --json` (float32) for Megatron-1T/Selene
# and DeepSeek-V3/GB200, alternating the two trees, REPS times; one line per run with the
# rate, XLA's cost per plan and the load average.
#
#   experiments/bench_pair.sh [BASE_COMMIT]     (default df6fcd3: main before round 4,
#                                                the tree issue 24 measured)
#
# The baseline is checked out in a temporary git worktree and run from its own directory
# with PYTHONPATH (the installed jax/numpy serve both).
set -euo pipefail
BASE=${1:-df6fcd3}
REPS=${REPS:-2}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python}
WT=$(mktemp -d)
trap 'git -C "$HERE" worktree remove --force "$WT" >/dev/null 2>&1 || rm -rf "$WT"' EXIT
git -C "$HERE" worktree add --detach -f "$WT" "$BASE" -q
for rep in $(seq 1 "$REPS"); do
  for tree in "$WT" "$HERE"; do
    name=$([ "$tree" = "$HERE" ] && echo "this-tree" || echo "$BASE")
    for ms in "megatron-1t dgx-a100-selene" "deepseek-v3 gb200-nvl72"; do
      set -- $ms
      out=$(cd "$tree" && PYTHONPATH="$tree" "$PY" -m cpo_opt bench --model "$1" --system "$2" \
            --n 3000000 --batch 16384 --json 2>/dev/null)
      line=$(echo "$out" | "$PY" -c "import json,sys; d=json.load(sys.stdin); c=d.get('cost_per_plan',{}); print('%.3g plans/s, %s flop/plan, %s B/plan' % (d['evaluations_per_s'], round(c.get('flops',0)), round(c.get('bytes',0))))")
      echo "rep $rep $name $1: $line, load $(cut -d' ' -f1 /proc/loadavg)"
    done
  done
done
