#!/usr/bin/env bash
# The GPU figures of docs/performance.md (issue 8) in one command: gsweep against both PyTorch peers,
# standard recipe at p = 113, runs per chunk 256/512/1024, precisions tf32 and highest.
#
#   here, first (copies the peer into device/ and tries the whole path on CPU, tiny sizes, ~30 s):
#       scripts/gpu_bench.sh --quick
#   on a lent H100/H200 (the device tool; only the checkout travels, so carry device/):
#       run(command="scripts/gpu_bench.sh", carry=["device"], timeout_s=600)
#
# Extra arguments go to `gsweep bench` (e.g. --models 512 --precision tf32). Writes the bench JSON and
# a log under $OUT when it is set (the device tool brings those back), else under results/bench-gpu/.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."

mkdir -p device  # git-ignored
if [ -f ../shared/bench/torch_reference.py ]; then
  install -m 0644 ../shared/bench/torch_reference.py device/torch_reference.py
fi
if [ ! -f device/torch_reference.py ]; then
  echo "gpu_bench: device/torch_reference.py is missing and ../shared/bench/torch_reference.py is not here:" \
       "run scripts/gpu_bench.sh --quick on the host first, and carry device/ to the GPU machine" >&2
  exit 2
fi

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
quick=0
for a in "$@"; do [ "$a" = "--quick" ] && quick=1; done
backend=$("$PY" -c "import jax; print(jax.default_backend())" 2>/dev/null || echo "no-jax")
if [ "$backend" = "gpu" ] || [ "$backend" = "cuda" ]; then
  device=gpu
elif [ "$quick" = 1 ] || [ "${DEVICE:-}" = "cpu" ]; then
  device=cpu
  echo "gpu_bench: JAX sees no GPU (backend: $backend): running on CPU" >&2
else
  echo "gpu_bench: JAX sees no GPU (backend: $backend); scripts/gpu_bench.sh --quick tries this script on CPU" >&2
  exit 2
fi

if [ -n "${OUT:-}" ]; then out="$OUT"; else out=results/bench-gpu; fi
mkdir -p "$out/bench"
log="$out/gpu_bench.log"
{
  echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -n) python: $PY backend: $backend"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
  "$PY" -c "import jax, torch; print('jax', jax.__version__, jax.devices()); print('torch', torch.__version__)" || true
} 2>&1 | tee "$log"
cmd=(env PYTHONPATH=. PYTHONUNBUFFERED=1 "$PY" -m gsweep bench --device "$device" --peer device/torch_reference.py
     --out "$out/bench" "$@")
echo "+ ${cmd[*]}" | tee -a "$log"
"${cmd[@]}" 2>&1 | tee -a "$log"
echo "gpu_bench: done; JSON under $out/bench/, log $log" | tee -a "$log"
