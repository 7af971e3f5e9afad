#!/usr/bin/env bash
# Issue 20, item 4, as one command on one GPU: configs/act_aloha.yaml with random weights, batch-1
# latency per action chunk at 480x640 (eager fp32, eager bf16, the bf16 call as a CUDA graph) and
# training steps/s at batch 8 through the Trainer (bf16 autocast, fused AdamW, DataLoader workers
# with pinned memory) on a small random dataset it writes. Sized for under 5 minutes on one H100/H200
# (targets: <= 2 ms per chunk, >= 40 steps/s); tools/gpu_speed.py says what is timed and how.
#
#   bash tools/gpu_speed.sh [OUT]           # OUT: default runs/gpu_speed; writes OUT/summary.json
#   DRY_RUN=1 bash tools/gpu_speed.sh OUT   # the same code paths on a CPU at tiny sizes (a test runs it)
#
# Settings (environment): STEPS (training steps, default 400), CALLS (timed calls per latency
# variant, 200), WORKERS (DataLoader workers, 8). Needs a CUDA build of torch and the package
# installed with the `data` extra (h5py).
set -euo pipefail

out=${1:-runs/gpu_speed}
root=$(cd "$(dirname "$0")/.." && pwd)
args=()
if [ "${DRY_RUN:-0}" = 1 ]; then
    : "${STEPS:=6}" "${CALLS:=3}" "${WORKERS:=1}"
    args=(--dry-run --warmup 1 --log-every 2 --batch-size 2 --frames 20)
fi
python "$root/tools/gpu_speed.py" "$out" --steps "${STEPS:-400}" --calls "${CALLS:-200}" \
    ${WORKERS:+--workers "$WORKERS"} ${args[@]+"${args[@]}"}
