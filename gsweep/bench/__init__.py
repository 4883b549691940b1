"""``gsweep bench``: gsweep's engine against the PyTorch peers, on the same hardware, in one run (on CPU
gsweep on one XLA device per usable core, the peers at their best thread setting of the same cores).

For each configuration (precision × runs per chunk) it measures, with the same recipe on both sides:

- gsweep's steady-state model-steps/s (R runs per compiled chunk of K steps; every chunk ends with
  the one metrics transfer that ``GroupProgram.train_chunk`` makes, so each timing is synced),
- the compile time (the first chunk minus a steady chunk),
- the evaluation overhead (chunks that end with an evaluation against chunks that do not, in one
  compiled program: the evaluation predicate is data, so both kinds run the same executable),
- the FLOPs and bytes of one model-step (counted analytically, and by XLA's cost analysis),
- square matmuls at the same precision, on one device and on every device at once, for the peak,
- the compiled program's memory (XLA's memory analysis) and the device's high-water mark,
- gsweep's own PyTorch peer (``gsweep/bench/torch_peer.py``; ``--peer PATH`` for another) as a plain
  training loop and as a torch.func ensemble, run as subprocesses interleaved with gsweep's timings
  (rounds), so both sides see the same machine load.

Everything is printed and written to ``OUT/<UTC timestamp>.json``.

Modules: ``recipe`` (what is measured, FLOP counts), ``measurement`` (gsweep's side), ``peers`` (the
PyTorch side; ``torch_peer`` is the peer itself), ``report`` (the command and its JSON).
"""

from gsweep.bench.peers import DEFAULT_PEER, resolve_peer, run_peer
from gsweep.bench.recipe import Plan, Recipe, flop_counts, make_plan, matmul_macs, param_count
from gsweep.bench.report import CONFIG_KEYS, EVAL_CADENCE, bench_command

__all__ = ["CONFIG_KEYS", "DEFAULT_PEER", "EVAL_CADENCE", "Plan", "Recipe", "bench_command", "flop_counts",
           "make_plan", "matmul_macs", "param_count", "resolve_peer", "run_peer"]
