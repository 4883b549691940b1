#!/usr/bin/env bash
# The accelerator figures in one run, from the tree (PYTHONPATH=., the image's python3; no install,
# no network), most important first, each step bounded by what is left of BUDGET_S (default 270 s,
# so that a lent device's ~15 minutes leave room for one rerun):
#   1. gsweep bench --device gpu at tf32 and highest vs gsweep's own PyTorch loop and torch.func
#      ensemble (gsweep/bench/torch_peer.py), standard recipe, R = 256, 512, 1024;
#   2. gsweep plan of the sampled sweeps/default.yaml (depth 1, data fraction 0.3-0.6, weight decay 0
#      and 1, 4 seeds, 10,000 steps, via --set), then the sweep itself at its precision (tf32), with
#      meta.json (runs per chunk, compile s, wall) and the summary;
#   3. the same sweep at precision highest (t_gen at tf32 against highest, run by run);
#   4. the devices gsweep picks on this host (one GPU, one device: the CPU-device rule must not leak);
#   5. gsweep plan of the whole sweeps/default.yaml;
#   6. if time is left: sweeps/literature/nanda-gpu.yaml (the standard recipe at Nanda et al.'s own
#      setting, 5 seeds x 50,000 steps) and its summary.
# A step that does not fit in what is left is skipped and logged; a step that runs out of time gets
# SIGINT (gsweep leaves a true status and resumable checkpoints). Logs, JSON and tables under $OUT
# (else results/gpu-bench/); card info from nvidia-smi. Read the figures against the issue's targets
# with: python scripts/gpu_report.py DIR   (DIR: the folder that came back).
#   rehearse here on CPU, tiny sizes:   scripts/gpu_bench.sh --quick
#   on a lent accelerator:              run(command="scripts/gpu_bench.sh", timeout_s=300)
set -uo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
quick=0; [ "${1:-}" = "--quick" ] && quick=1
PY=${PYTHON:-python3}
out=${OUT:-results/gpu-bench}; mkdir -p "$out"
log="$out/gpu_bench.log"
export PYTHONPATH=. PYTHONUNBUFFERED=1
t0=$(date +%s); budget=${BUDGET_S:-270}
left() { echo $(( budget - ($(date +%s) - t0) )); }
rc=0
# gs NEED ARGS...: gsweep ARGS if about NEED seconds are left, stopped with SIGINT when the budget ends
gs() {
  local need=$1; shift
  if [ "$(left)" -lt "$need" ]; then
    echo "skipped: gsweep $* ($(left) s left, needs ~$need s)" | tee -a "$log" >&2; rc=1; return 1
  fi
  echo "+ [$(( $(date +%s) - t0 )) s] gsweep $*" | tee -a "$log" >&2
  timeout -s INT -k 15 "$(left)" "$PY" -m gsweep "$@" 2> >(tee -a "$log" >&2) | tee -a "$log"
  local s=${PIPESTATUS[0]}; [ "$s" = 0 ] || { echo "exit $s: gsweep $1" | tee -a "$log" >&2; rc=1; }
  return "$s"
}
{ date -u; uname -n; command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  "$PY" -c "import jax; print('jax', jax.__version__, jax.default_backend(), jax.devices())"; } 2>&1 | tee "$log" > "$out/card.txt"
if [ "$quick" = 1 ]; then
  export XLA_FLAGS=${XLA_FLAGS:---xla_force_host_platform_device_count=4}
  gs 10 bench --device cpu --quick --batching vmap --precision tf32 highest --out "$out/bench"
  sw=(sweeps/ci-tiny.yaml --set train.steps=100 --set train.eval_every=50 --set train.batching=vmap)
  lit=(sweeps/literature/nanda-gpu.yaml --set train.steps=40 --set train.eval_every=20 --set seeds=2)
else
  gs 60 bench --device gpu --precision tf32 highest --models 256 512 1024 --out "$out/bench"
  sw=(sweeps/default.yaml --set model.depth=1 --set "task.data_frac=[0.3,0.4,0.5,0.6]"
      --set "train.weight_decay=[0.0,1.0]" --set seeds=4 --set train.steps=10000)
  lit=(sweeps/literature/nanda-gpu.yaml)
fi
gs 20 plan "${sw[@]}" > "$out/plan.txt"
for prec in tf32 highest; do
  dir="$out/sweep"; [ "$prec" = tf32 ] || dir="$out/sweep-$prec"
  s0=$(date +%s)
  gs 30 run "${sw[@]}" --set "train.precision=$prec" --out "$dir" --quiet --fresh && \
    gs 5 summarize "$dir" --format json > "$out/summary-$prec.json"
  echo "sweep $prec wall s: $(( $(date +%s) - s0 ))" | tee -a "$log"
  cp "$dir/meta.json" "$out/$(basename "$dir")-meta.json" 2>/dev/null
done
cp "$out/summary-tf32.json" "$out/summary.json" 2>/dev/null
"$PY" -c "from gsweep import devices; n, why = devices.configure(); import jax
print('gsweep devices:', jax.default_backend(), len(jax.devices()), jax.devices(), '| CPU rule (host platform only):', n, why)" \
  2>&1 | tee -a "$log" > "$out/devices.txt"
[ "$quick" = 1 ] || gs 20 plan sweeps/default.yaml > "$out/plan-default.txt"
s0=$(date +%s)
gs 60 run "${lit[@]}" --out "$out/lit" --quiet --fresh && gs 5 summarize "$out/lit" --format json > "$out/summary-lit.json"
echo "literature sweep wall s: $(( $(date +%s) - s0 ))" | tee -a "$log"
echo "gpu_bench: rc $rc after $(( $(date +%s) - t0 )) s of a ${budget} s budget; files under $out" | tee -a "$log"
exit $rc
