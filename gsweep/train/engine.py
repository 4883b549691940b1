"""One group's compiled program: R runs stepped together, the run axis sharded over devices.

A *group* is the runs that share a static signature (task and its size, model shape, batch size,
precision, step budget and evaluation cadence). :class:`GroupProgram` builds the group's example
pool once, compiles ``train_chunk`` once, and reuses it for every chunk of runs and of steps:

    state_R, metrics = train_chunk(state_R, step0, eval_flags_K, pool, train_idx_RxM, masks_RxSxN)
                     = jit(scan over K steps of (vmap(train_step) ; cond(eval?, vmap(evaluate))))

The scan runs over steps with the run axis vmapped inside it, so the "evaluate now?" predicate is
one scalar shared by the group: ``lax.cond`` stays a real branch instead of a select that would
evaluate every step. Steps past the budget in the last chunk are skipped the same way, so every
chunk has the same shapes and one compiled program serves all. Metrics stay on device in a
fixed-size buffer and come back once per chunk.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gsweep.models import build_model
from gsweep.schema import hyper_params
from gsweep.spec import Run
from gsweep.tasks import TaskData, get_task
from gsweep.train.step import (
    Hyper,
    RunState,
    StepConfig,
    after_eval,
    evaluate,
    init_run,
    running,
    train_step,
    update_stop,
)

METRIC_KEYS = ("loss", "acc", "weight_norm", "train_loss_mean", "train_loss_osc", "fourier_sparsity")
_POOLS: dict = {}  # devices -> a thread pool that calls the per-device programs in parallel
TRACE_COUNT: dict[str, int] = {}  # group_id -> times train_chunk was traced (tests guard recompiles)


def eval_schedule(steps: int, eval_every: int, early_evals: int) -> np.ndarray:
    """Evaluated steps: ``early_evals`` log-spaced ones below eval_every, every eval_every, and the last."""
    early = []
    if early_evals and eval_every > 1:
        pts = np.logspace(0, math.log10(eval_every), early_evals + 2)
        early = [int(round(x)) for x in pts if round(x) < eval_every]
    regular = list(range(eval_every, steps + 1, eval_every))
    return np.array(sorted(set(early + regular + [steps])), dtype=np.int64)


def auto_chunk_steps(steps: int, eval_every: int) -> int:
    """Steps per compiled call: a multiple of eval_every giving about ten calls per run chunk."""
    regular = max(1, steps // eval_every)
    return min(steps, eval_every * max(1, math.ceil(regular / 10)))


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh over ``devices``; by default the devices runs are sharded over
    (:func:`gsweep.devices.run_devices`: every accelerator, or on CPU one device per core)."""
    if devices is None:
        from gsweep.devices import run_devices
        devices = run_devices(jax.default_backend(), jax.devices(), jax.process_count())
    return Mesh(np.array(list(devices)), ("runs",))


def group_mesh(mesh: Mesh, n_runs: int, batching: str = "auto") -> Mesh:
    """The part of ``mesh`` a ``map`` group of ``n_runs`` runs is sharded over: the fewest devices
    that take as few runs each as the whole mesh would (:func:`gsweep.devices.devices_used`), so a
    small group pads fewer than one device's share of runs (the per-device programs make the results
    the same on any count). ``vmap`` groups and multi-process meshes keep the whole mesh."""
    from gsweep.devices import devices_used
    if jax.process_count() > 1 or resolve_batching(batching) != "map":
        return mesh
    d = devices_used(n_runs, mesh.devices.size)
    return mesh if d == mesh.devices.size else Mesh(mesh.devices.flat[:d], ("runs",))


def to_host(tree):
    """Device arrays to numpy; gathers the run axis across processes in a multi-process run."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        return jax.tree.map(lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)), tree)
    return jax.tree.map(np.asarray, tree)


def put_global(host: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from a host array every process holds in full."""
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


@dataclasses.dataclass
class UnitArrays:
    """The per-run inputs of one chunk of runs (R padded), on device."""

    hyper: Hyper
    keys_Rx2: jax.Array
    train_idx_RxM: jax.Array
    train_w_RxM: jax.Array
    masks_RxSxN: jax.Array


class GroupProgram:
    """The compiled program and data of one group. ``runs`` are all the group's runs (any one of
    them fixes the static settings); ``runs_per_chunk`` the R of the compiled program."""

    def __init__(self, group_id: str, runs: Sequence[Run], runs_per_chunk: int, mesh: Mesh | None = None,
                 batching: str = "auto", threshold: float = 0.99):
        self.group_id = group_id
        self.chunk_times: list[float] = []  # wall seconds of each train_chunk call
        self.row_steps = 0  # steps computed by the chunk programs, summed over their rows (padding included)
        self.widths: set[int] = set()  # narrower widths a unit continued at (train.stop_when_generalized)
        self.batching = resolve_batching(batching)
        self._runs = list(runs)
        self.mesh = mesh or make_mesh()
        self.n_dev = self.mesh.devices.size
        rep = runs[0]
        self.task_cfg = rep.block("task")
        self.model_cfg = rep.block("model")
        self.train_cfg = rep.block("train")
        self.task = get_task(self.task_cfg["name"])
        self.data: TaskData = self.task.build(self.task_cfg)
        self.split_names = self.data.split_names
        self.eval_splits = self.split_names  # 'train' is evaluated too
        t = self.train_cfg
        self.steps = int(t["steps"])
        self.schedule = eval_schedule(self.steps, t["eval_every"], t["early_evals"])
        self.K = int(t["chunk_steps"]) or auto_chunk_steps(self.steps, t["eval_every"])
        self.n_chunks = math.ceil(self.steps / self.K)
        flags = np.zeros((self.n_chunks * self.K,), dtype=bool)
        flags[self.schedule - 1] = True
        self.flags_CxK = flags.reshape(self.n_chunks, self.K)
        self.E = int(self.flags_CxK.sum(1).max())
        self.R = _round_up(max(1, runs_per_chunk), self.n_dev)
        self.model = build_model(self.model_cfg, self.data.vocab_size, self.data.n_classes, self.data.seq_len,
                                 t["precision"])
        # threshold: the spec's analysis.threshold, read by train.stop_when_generalized (static)
        self.step_cfg = StepConfig.of(t, self.model_cfg, self.data.fourier_p, threshold)
        self.stops = bool(self.step_cfg.stop_after)
        # one training-set width for the whole group, so every chunk of runs has the same shapes
        masks = [self.task.masks(self.data, _task_cfg(r)) for r in runs]
        self.M = max(int(m["train"].sum()) for m in masks)
        self._mask_cache = {r.run_id: m for r, m in zip(runs, masks, strict=True)}
        self.run_sh = NamedSharding(self.mesh, P("runs"))
        self.rep_sh = NamedSharding(self.mesh, P())
        self.pool_x = put_global(self.data.x_NxT, self.rep_sh)
        self.pool_y = put_global(self.data.y_N, self.rep_sh)
        self._local = jax.jit(self._local_chunk, donate_argnums=(0,))
        run, rep = P("runs"), P()
        self._spmd = jax.jit(jax.shard_map(self._local_chunk, mesh=self.mesh,
                                           in_specs=(run, rep, rep, rep, rep, run, run, run),
                                           out_specs=(run, run, run), check_vma=False), donate_argnums=(0,))
        self._init = jax.jit(self._init_states, out_shardings=self.run_sh)
        self._init_local = jax.jit(self._init_states)
        # train.stop_when_generalized on the batched path: the chunk continues at a smaller width
        self._take = jax.jit(lambda tree, i: jax.tree.map(lambda x: jnp.take(x, i, axis=0), tree),
                             out_shardings=self.run_sh)
        self._put = jax.jit(lambda full, part, i: jax.tree.map(lambda f, p: f.at[i].set(p), full, part),
                            out_shardings=self.run_sh, donate_argnums=(0,))

    # -- per-run inputs ------------------------------------------------------------------------

    def masks_of(self, run: Run) -> dict[str, np.ndarray]:
        m = self._mask_cache.get(run.run_id)
        return m if m is not None else self.task.masks(self.data, _task_cfg(run))

    def unit_arrays(self, runs: Sequence[Run]) -> UnitArrays:
        """Stack the runs' settings and splits, padded to R with copies of the first run."""
        if not 0 < len(runs) <= self.R:
            raise ValueError(f"a chunk holds 1..{self.R} runs, got {len(runs)}")
        padded = list(runs) + [runs[0]] * (self.R - len(runs))
        S, N = len(self.split_names), self.data.n
        idx = np.zeros((self.R, self.M), np.int32)
        w = np.zeros((self.R, self.M), np.float32)
        masks = np.zeros((self.R, S, N), bool)
        for i, r in enumerate(padded):
            m = self.masks_of(r)
            tr = np.flatnonzero(m["train"])
            idx[i, : len(tr)] = tr
            w[i, : len(tr)] = 1.0
            masks[i] = np.stack([m[s] for s in self.split_names])
        hyper_np = {k: np.array([r.settings[k] for r in padded], dtype=np.int32 if p.type is int else np.float32)
                    for k, p in hyper_params(self.model_cfg["name"]).items()}
        keys = np.stack([np.asarray(jax.random.key_data(jax.random.PRNGKey(r.seed))) for r in padded])
        put = lambda a: put_global(a, self.run_sh)  # noqa: E731
        return UnitArrays(hyper=jax.tree.map(put, hyper_np), keys_Rx2=put(keys.astype(np.uint32)),
                          train_idx_RxM=put(idx), train_w_RxM=put(w), masks_RxSxN=put(masks))

    # -- the compiled functions ----------------------------------------------------------------

    def _init_states(self, keys_Rx2, hyper: Hyper) -> RunState:
        x = self.pool_x[:1]
        return jax.vmap(lambda k, h: init_run(self.model, x, k, h, self.step_cfg))(keys_Rx2, hyper)

    def init_states(self, u: UnitArrays) -> RunState:
        if self.batching == "map":
            return self._per_device(self._init_local, (u.keys_Rx2, u.hyper))
        return self._init(u.keys_Rx2, u.hyper)

    def _maybe(self, pred, fn, st):
        """fn(st) where pred, else st; a plain call when no chunk overshoots the budget (a cond
        costs copies of the state every step on some backends)."""
        if self.steps % self.K == 0:
            return fn(st)
        return jax.lax.cond(pred, fn, lambda s: s, st)

    def _steps_one_run(self, st: RunState, step0, flags_K, pool_x, pool_y, idx_M, w_M, masks_SxN):
        """K steps of ONE run, evaluating where flags_K says: (state, metrics buffer [E, ...], n evals)."""
        model, cfg, steps = self.model, self.step_cfg, self.steps
        S = masks_SxN.shape[0]
        buf = {k: jnp.zeros((self.E, S) if k in ("loss", "acc") else (self.E,), jnp.float32) for k in METRIC_KEYS}

        def body(carry, k):
            st, buf, n = carry
            t = step0 + k
            step = lambda s: train_step(model, cfg, s, t, pool_x, pool_y, idx_M, w_M)  # noqa: E731
            if self.stops:  # a stopped run skips its step: a real branch, one run at a time
                st = jax.lax.cond((t < steps) & running(cfg, st), step, lambda s: s, st)
            else:
                st = self._maybe(t < steps, step, st)

            def do_eval(args):
                st, buf, n = args
                m = evaluate(model, cfg, st, pool_x, pool_y, masks_SxN)
                buf = {key: jax.lax.dynamic_update_index_in_dim(buf[key], m[key], n, 0) for key in buf}
                return update_stop(cfg, after_eval(st, m, t), m, t), buf, n + 1

            if self.stops:  # a stopped run is not evaluated either (its rows end at the stop step)
                ev = do_eval
                do_eval = lambda a: jax.lax.cond(running(cfg, a[0]), ev, lambda b: (b[0], b[1], b[2] + 1), a)  # noqa: E731
            return jax.lax.cond(flags_K[k], do_eval, lambda a: a, (st, buf, n)), None

        (st, buf, n), _ = jax.lax.scan(body, (st, buf, jnp.int32(0)), jnp.arange(self.K))
        return st, buf, n

    def _steps_vmapped(self, states: RunState, step0, flags_K, pool_x, pool_y, train_idx, train_w, masks):
        """K steps of R runs: scan over steps of vmapped steps; the eval predicate stays a scalar."""
        model, cfg, steps = self.model, self.step_cfg, self.steps
        v_train = jax.vmap(lambda s, t, i, w: train_step(model, cfg, s, t, pool_x, pool_y, i, w),
                           in_axes=(0, None, 0, 0))
        v_eval = jax.vmap(lambda s, m: evaluate(model, cfg, s, pool_x, pool_y, m))
        R, S = train_idx.shape[0], masks.shape[1]
        buf = {k: jnp.zeros((R, self.E, S) if k in ("loss", "acc") else (R, self.E), jnp.float32)
               for k in METRIC_KEYS}

        def body(carry, k):
            st, buf, n = carry
            t = step0 + k
            if self.stops:  # batched: the step is computed for every run, a stopped run keeps its state
                def v_step(s):
                    new = v_train(s, t, train_idx, train_w)
                    go_R = running(cfg, s)
                    return jax.tree.map(lambda a, b: jnp.where(go_R.reshape(go_R.shape + (1,) * (a.ndim - 1)), a, b),
                                        new, s)
            else:
                v_step = lambda s: v_train(s, t, train_idx, train_w)  # noqa: E731
            st = self._maybe(t < steps, v_step, st)

            def do_eval(args):
                st, buf, n = args
                m = v_eval(st, masks)
                buf = {key: jax.lax.dynamic_update_index_in_dim(buf[key], m[key], n, 1) for key in buf}
                st = jax.vmap(after_eval, in_axes=(0, 0, None))(st, m, t)
                if self.stops:
                    st = jax.vmap(lambda s, mm: update_stop(cfg, s, mm, t))(st, m)
                return st, buf, n + 1

            return jax.lax.cond(flags_K[k], do_eval, lambda a: a, (st, buf, n)), None

        (states, buf, n), _ = jax.lax.scan(body, (states, buf, jnp.int32(0)), jnp.arange(self.K))
        return states, buf, jnp.full((R,), n)

    def _map_runs(self, states, step0, flags_K, pool_x, pool_y, train_idx, train_w, masks):
        """One run at a time over the local runs. The trip count is read from data (not a constant),
        so XLA neither unrolls nor inlines the loop: each run's arithmetic is the same compiled body
        whatever the number of runs per device, hence bitwise equal results across batch sizes,
        device counts and processes."""
        R = train_idx.shape[0]
        take = lambda tree, i: jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, i, 0, keepdims=False), tree)  # noqa: E731
        put = lambda tree, v, i: jax.tree.map(lambda x, y: jax.lax.dynamic_update_index_in_dim(x, y, i, 0), tree, v)  # noqa: E731
        out0 = jax.eval_shape(lambda: self._steps_one_run(take(states, 0), step0, flags_K, pool_x, pool_y,
                                                          train_idx[0], train_w[0], masks[0]))
        bufs = jax.tree.map(lambda a: jnp.zeros((R, *a.shape), a.dtype), (out0[1], out0[2]))

        def body(i, carry):
            st_all, (buf_all, n_all) = carry
            st, buf, n = self._steps_one_run(take(st_all, i), step0, flags_K, pool_x, pool_y, take(train_idx, i),
                                             take(train_w, i), take(masks, i))
            return put(st_all, st, i), (put(buf_all, buf, i), put(n_all, n, i))

        n_runs = jnp.asarray(train_idx.shape[0], jnp.int32) + 0 * step0  # data-dependent bound: not unrolled
        states, (buf, n) = jax.lax.fori_loop(0, n_runs, body, (states, bufs))
        return states, buf, n

    def _local_chunk(self, states, step0, flags_K, pool_x, pool_y, train_idx, train_w, masks):
        """The program of one device: its local runs only, no communication."""
        TRACE_COUNT[self.group_id] = TRACE_COUNT.get(self.group_id, 0) + 1
        if self.batching == "map":
            return self._map_runs(states, step0, flags_K, pool_x, pool_y, train_idx, train_w, masks)
        return self._steps_vmapped(states, step0, flags_K, pool_x, pool_y, train_idx, train_w, masks)

    def _run_chunk(self, states, step0, flags_K, train_idx, train_w, masks):
        """Run the chunk over the mesh. ``vmap`` mode: one SPMD program (jit + shard_map over
        'runs'). ``map`` mode: the same single-device program on every device, each on its shard
        of the run axis, reassembled into NamedSharding arrays: XLA compiles multi-device programs
        with slightly different fusions, and these would make a run's last bits depend on the
        device count; per-device programs make 1 device, N devices and N processes bitwise equal."""
        args = (states, step0, flags_K, self.pool_x, self.pool_y, train_idx, train_w, masks)
        if self.batching != "map":
            return self._spmd(*args)
        return self._per_device(self._local, args)

    def _per_device(self, fn, args):
        """fn (a single-device jitted function) on each local device's shard of args (replicated
        args: its copy); outputs reassembled into arrays sharded over 'runs'."""
        per_dev = [{s.device: s.data for s in x.addressable_shards} for x in jax.tree.leaves(args)]
        treedef = jax.tree.structure(args)
        devices = self._local_devices()
        call = lambda d: fn(*jax.tree.unflatten(treedef, [m[d] for m in per_dev]))  # noqa: E731
        if len(devices) == 1:
            outs = [call(devices[0])]
        else:  # one thread per device: a program is compiled per device (XLA keys it by device), and
            # these compiles, like the runs, then proceed in parallel, one per core
            outs = list(self._pool().map(call, devices))
        leaves = [jax.tree.leaves(o) for o in outs]
        glob = [jax.make_array_from_single_device_arrays((leaf.shape[0] * self.n_dev, *leaf.shape[1:]),
                                                         self.run_sh, [lv[j] for lv in leaves])
                for j, leaf in enumerate(leaves[0])]
        return jax.tree.unflatten(jax.tree.structure(outs[0]), glob)

    def _pool(self):
        n = len(self._local_devices())
        if n not in _POOLS:
            from concurrent.futures import ThreadPoolExecutor
            _POOLS[n] = ThreadPoolExecutor(max_workers=n, thread_name_prefix="gsweep-device")
        return _POOLS[n]

    def _local_devices(self) -> list:
        return [d for d in self.mesh.devices.flat if d.process_index == jax.process_index()]

    def train_chunk(self, states: RunState, chunk: int, u: UnitArrays):
        """Run time-chunk ``chunk`` (steps chunk*K .. chunk*K+K-1); returns (states, metrics on host,
        evaluated steps). ``states`` is donated."""
        t0 = time.perf_counter()
        flags = put_global(self.flags_CxK[chunk], self.rep_sh)
        step0 = put_global(np.asarray(chunk * self.K, np.int32), self.rep_sh)
        states, buf, n = self._run_chunk(states, step0, flags, u.train_idx_RxM, u.train_w_RxM, u.masks_RxSxN)
        steps = (chunk * self.K + np.flatnonzero(self.flags_CxK[chunk]) + 1).astype(np.int64)
        host = to_host(buf)  # [R, E, ...] -> [E, R, ...], evaluated entries only
        host = {k: np.moveaxis(v, 0, 1)[: len(steps)] for k, v in host.items()}
        self.chunk_times.append(time.perf_counter() - t0)  # wall seconds per call (compile included in the first)
        return states, host, steps

    # -- narrower chunks of a unit whose runs have mostly stopped (vmap + stop_when_generalized) --

    @property
    def shrinks(self) -> bool:
        """Whether a unit's decided runs leave the batch: only the batched path with the stop setting
        (the ``map`` path skips a stopped run's steps inside its loop already)."""
        return self.stops and self.batching != "map"

    def take_rows(self, tree, rows: np.ndarray):
        """Rows ``rows`` of every run-axis leaf of ``tree`` (a RunState or UnitArrays), sharded over 'runs'."""
        i = put_global(np.asarray(rows, np.int32), self.rep_sh)
        if isinstance(tree, UnitArrays):
            return UnitArrays(**self._take(dataclasses.asdict(tree), i))
        return self._take(tree, i)

    def put_rows(self, full, part, rows: np.ndarray):
        """``full`` with rows ``rows`` replaced by ``part``'s (``full`` is donated)."""
        return self._put(full, part, put_global(np.asarray(rows, np.int32), self.rep_sh))

    def resize(self, runs_per_chunk: int) -> GroupProgram:
        """Change R, the runs of one compiled call (rounded up to the device count); nothing is
        compiled until the next call, which compiles for the new shapes."""
        self.R = _round_up(max(1, runs_per_chunk), self.n_dev)
        return self

    # -- the compiled program, for sizing ------------------------------------------------------

    def chunk_program(self, R: int, device=None):
        """(the jitted chunk function of one device's program, its abstract arguments) at R runs per
        chunk (R a multiple of the device count): what ``train_chunk`` compiles, without data.
        ``vmap``: the SPMD program over the mesh (global shapes); ``map``: the program of one device
        (``device``, default the first local one)."""
        if R % self.n_dev:
            raise ValueError(f"R = {R} is not a multiple of the {self.n_dev} devices")
        one = self.unit_arrays(self._runs[:1])  # shapes and dtypes of one run's inputs, any model
        spmd = self.batching != "map"
        rows = R if spmd else R // self.n_dev

        local0 = jax.sharding.SingleDeviceSharding(device or self._local_devices()[0])

        def abstract(x, sharded=True):
            sh = (self.run_sh if sharded else self.rep_sh) if spmd else local0  # as train_chunk calls it
            shape = (rows, *x.shape[1:]) if sharded else x.shape
            return jax.ShapeDtypeStruct(shape, x.dtype, sharding=sh)

        hyper = jax.tree.map(abstract, one.hyper)
        keys = abstract(one.keys_Rx2)
        states = jax.eval_shape(self._init_states, keys, hyper)
        states = jax.tree.map(abstract, states)
        rep = lambda x: abstract(x, sharded=False)  # noqa: E731
        args = (states, rep(jax.ShapeDtypeStruct((), jnp.int32)), rep(jax.ShapeDtypeStruct((self.K,), jnp.bool_)),
                rep(self.pool_x), rep(self.pool_y), abstract(one.train_idx_RxM), abstract(one.train_w_RxM),
                abstract(one.masks_RxSxN))
        return (self._spmd if spmd else self._local), args

    def compiled_bytes(self, R: int) -> int:
        """Device memory of one device's compiled chunk program at R runs per chunk, from XLA's
        memory analysis: arguments + outputs - donated (aliased) + temporaries. This is the trace
        and compile that ``train_chunk`` at R reuses (``TRACE_COUNT`` counts one per R)."""
        fn, args = self.chunk_program(R)
        others = []
        if self.batching == "map" and len(self._local_devices()) > 1:
            # XLA keys a compiled program by its device: compile every device's copy now, in
            # parallel (one core each), so that the first chunk finds them all compiled
            others = [self._pool().submit(lambda d: _compile(*self.chunk_program(R, d)), d)
                      for d in self._local_devices()[1:]]
        m = fn.lower(*args).compile().memory_analysis()
        for f in others:
            f.result()
        if m is None:
            raise RuntimeError(f"XLA reports no memory analysis on backend {jax.default_backend()!r}")
        return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
                   + m.temp_size_in_bytes)


def _compile(fn, args):
    return fn.lower(*args).compile()


def narrow_width(live: int, R: int, n_dev: int) -> int:
    """The width a chunk of R runs continues at when ``live`` of them still train: the smallest of
    R, R/2, R/4, ... (each rounded up to a multiple of the device count) that holds them. Only these
    widths are ever compiled, so a group compiles at most log2(R / n_dev) + 1 chunk programs, and
    the width is a function of the live count alone (a resumed unit continues at the width the
    uninterrupted one had)."""
    w, k = R, 1
    while True:
        nxt = _round_up(max(1, math.ceil(R / 2**k)), n_dev)
        if nxt >= w or nxt < live:
            return w
        w, k = nxt, k + 1


def live_rows(stopped_R: np.ndarray, diverged_R: np.ndarray, n: int, R: int, n_dev: int) -> np.ndarray:
    """The rows a narrowed chunk keeps: the real runs (rows < n) still training, in row order, then
    the first decided or padding rows to fill the width (frozen or ignored; they change nothing)."""
    live = np.flatnonzero((stopped_R[:n] < 0) & (diverged_R[:n] < 0))
    w = narrow_width(len(live), R, n_dev)
    rest = np.setdiff1d(np.arange(R), live)[: w - len(live)]
    return np.concatenate([live, rest]).astype(np.int64)


def resolve_batching(batching: str) -> str:
    """'map' (exact: per-run programs, the CPU default) or 'vmap' (batched: accelerators)."""
    if batching not in ("auto", "map", "vmap"):
        raise ValueError(f"batching must be auto, map or vmap, got {batching!r}")
    if batching == "auto":
        return "map" if jax.default_backend() == "cpu" else "vmap"
    return batching


def _task_cfg(run: Run) -> dict:
    return run.block("task")


def _round_up(n: int, k: int) -> int:
    return int(math.ceil(n / k) * k)
