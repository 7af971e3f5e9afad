#!/usr/bin/env bash
# ACT from pixels on one GPU, end to end as one command: scripted transfer-cube demonstrations with
# the top camera at 480x640, configs/act_aloha.yaml (ACT's sizes, the pretrained backbone, bf16)
# trained on them, and 50 rollout episodes (seeds from 100000, disjoint from the demos), sized for
# about 9 minutes of wall time on one H100/H200 with 16 cores.
#
#   bash tools/gpu_act_aloha.sh [OUT]          # OUT: default runs/gpu_act_aloha
#   DRY_RUN=1 bash tools/gpu_act_aloha.sh OUT   # the same commands at tiny sizes on a CPU (a test runs it)
#
# Settings (environment): STEPS (training steps, default 6000), EPISODES (demonstrations, 50),
# EVAL_EPISODES (50), WORKERS (processes that render demonstrations and rollouts, 16). Needs the
# package installed with the `sim` extra and a CUDA build of torch. Prints the time of each phase,
# the training speed and the success rate; writes OUT/summary.json.
set -euo pipefail

out=${1:-runs/gpu_act_aloha}
root=$(cd "$(dirname "$0")/.." && pwd)
export MUJOCO_GL=${MUJOCO_GL:-egl}
size=(480 640)
extra=()
if [ "${DRY_RUN:-0}" = 1 ]; then
    size=(48 64)
    : "${STEPS:=2}" "${EPISODES:=2}" "${EVAL_EPISODES:=2}" "${WORKERS:=2}"
    extra=(--set model.d_model=32 --set model.targets.action.decoder.ff_dim=64 --set model.targets.action.decoder.encoder_layers=1
           --set model.targets.action.decoder.decoder_layers=1 --set model.posterior.layers=1 --set model.posterior.ff_dim=64
           --set train.batch_size=2 --set train.num_workers=0)
fi
steps=${STEPS:-6000}
episodes=${EPISODES:-50}
eval_episodes=${EVAL_EPISODES:-50}
workers=${WORKERS:-16}
device=$(python -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
mkdir -p "$out"
phase() { echo "[$(date +%T)] $*"; }
start=$SECONDS

phase "demonstrations: $episodes episodes at ${size[0]}x${size[1]}, $workers processes"
python -m cvae_bridge.cli demos --suite aloha --tasks transfer_cube --episodes "$episodes" --image-size "${size[@]}" \
    --workers "$workers" --out "$out/data"
demos_s=$((SECONDS - start))

phase "training: $steps steps on $device"
python -m cvae_bridge.cli train "$root/configs/act_aloha.yaml" --set "data.path=$out/data" --set "train.output_dir=$out/run" \
    --set "train.steps=$steps" --set "data.image_size=[${size[0]}, ${size[1]}]" --set "model.conditions.top.size=[${size[0]}, ${size[1]}]" \
    --set train.checkpoint_every=0 --set train.eval_every=0 --set train.progress_bar=false --set train.log_every=50 \
    ${extra[@]+"${extra[@]}"}
train_s=$((SECONDS - start - demos_s))

# Rendering runs on the CPU unless EGL finds the GPU: the episodes are split over processes.
phase "rollout: $eval_episodes episodes over $workers processes"
per=$(( (eval_episodes + workers - 1) / workers ))
pids=()
for ((first = 0; first < eval_episodes; first += per)); do
    n=$(( eval_episodes - first < per ? eval_episodes - first : per ))
    python -m cvae_bridge.cli rollout --model "$out/run/model" --suite aloha --tasks transfer_cube --episodes "$n" \
        --seed $((100000 + first)) --device "$device" --out "$out/rollout/part_$first" > "$out/rollout_$first.log" 2>&1 &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
rollout_s=$((SECONDS - start - demos_s - train_s))

python - "$out" "$demos_s" "$train_s" "$rollout_s" <<'EOF'
import json, statistics, sys
from pathlib import Path

out, demos_s, train_s, rollout_s = Path(sys.argv[1]), *map(int, sys.argv[2:])
parts = [json.loads(p.read_text()) for p in sorted((out / "rollout").glob("part_*/success.json"))]
results = [r for part in parts for r in part["tasks"]["transfer_cube"]["results"]]
log = [json.loads(line) for line in (out / "run" / "log.jsonl").read_text().splitlines()]
rates = [row["examples_per_s"] for row in log if "examples_per_s" in row]
batch = json.loads((out / "run" / "model" / "run_config.json").read_text())["train"]["batch_size"]
summary = {
    "success_rate": sum(r["success"] for r in results) / len(results), "episodes": len(results),
    "seeds": [min(r["seed"] for r in results), max(r["seed"] for r in results)],
    "steps_per_s": statistics.median(rates) / batch if rates else None,
    "demos_s": demos_s, "train_s": train_s, "rollout_s": rollout_s, "total_s": demos_s + train_s + rollout_s,
}
(out / "summary.json").write_text(json.dumps(summary, indent=2))
print(json.dumps(summary, indent=2))
EOF
