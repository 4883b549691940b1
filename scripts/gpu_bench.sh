#!/usr/bin/env bash
# Issue 18 in one run, from the tree (PYTHONPATH=., the image's python3; no install, no network):
#   1. gsweep bench --device gpu at tf32 and highest vs gsweep's own PyTorch loop and torch.func
#      ensemble (gsweep/bench/torch_peer.py), standard recipe, R = 256, 512, 1024;
#   2. the sampled sweeps/default.yaml (depth 1, data fraction 0.3-0.6, weight decay 0 and 1, 4 seeds,
#      10,000 steps, via --set) with meta.json (runs per chunk, compile s, wall) and the phase table;
#   3. gsweep plan sweeps/default.yaml on the device, next to what (2) measured.
# Logs and JSON under $OUT (else results/gpu-bench/); card info from nvidia-smi.
#   rehearse here on CPU, tiny sizes:   scripts/gpu_bench.sh --quick
#   on a lent accelerator:              run(command="scripts/gpu_bench.sh", timeout_s=540)
set -uo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
quick=0; [ "${1:-}" = "--quick" ] && quick=1
PY=${PYTHON:-python3}
out=${OUT:-results/gpu-bench}; mkdir -p "$out"
log="$out/gpu_bench.log"
export PYTHONPATH=. PYTHONUNBUFFERED=1
gs() { echo "+ gsweep $*" | tee -a "$log"; "$PY" -m gsweep "$@" 2>&1 | tee -a "$log"; return "${PIPESTATUS[0]}"; }
{ date -u; uname -n; command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  "$PY" -c "import jax; print('jax', jax.__version__, jax.default_backend(), jax.devices())"; } 2>&1 | tee "$log" > "$out/card.txt"
rc=0
if [ "$quick" = 1 ]; then
  export XLA_FLAGS=${XLA_FLAGS:---xla_force_host_platform_device_count=4}
  gs bench --device cpu --quick --batching vmap --precision tf32 highest --out "$out/bench" || rc=1
  sw=(sweeps/ci-tiny.yaml --set train.steps=100 --set train.eval_every=50 --set train.batching=vmap)
else
  gs bench --device gpu --precision tf32 highest --models 256 512 1024 --out "$out/bench" || rc=1
  sw=(sweeps/default.yaml --set model.depth=1 --set "task.data_frac=[0.3,0.4,0.5,0.6]"
      --set "train.weight_decay=[0.0,1.0]" --set seeds=4 --set train.steps=10000)
fi
gs plan "${sw[@]}" > "$out/plan.txt" || rc=1
s0=$(date +%s)
gs run "${sw[@]}" --out "$out/sweep" --quiet --fresh || rc=1
echo "sweep wall s: $(( $(date +%s) - s0 ))" | tee -a "$log"
cp "$out/sweep/meta.json" "$out/sweep-meta.json" 2>/dev/null
gs summarize "$out/sweep" --format json > "$out/summary.json" || rc=1
[ "$quick" = 1 ] || gs plan sweeps/default.yaml > "$out/plan-default.txt" || rc=1
echo "gpu_bench: rc $rc; files under $out" | tee -a "$log"
exit $rc
