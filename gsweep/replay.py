"""Look inside a run: exact replay, attention maps, embedding Fourier spectra, MLP neurons.

A run's numbers depend only on its settings, so instead of storing every run's weights gsweep
re-trains the one run asked for (``gsweep replay``), checks on the way that it reproduces the
sweep's recorded curve, and saves its parameters at the requested steps under
``RESULTS_DIR/replays/RUN_ID/`` (orbax). The plots here run the model, so unlike the rest of the
analysis they import JAX.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from gsweep import store
from gsweep.errors import UserError
from gsweep.results import run_curves
from gsweep.spec import Run, from_dict

REPLAYS = "replays"


# ----------------------------------------------------------------------------------------------
# replay


def find_run(results_dir: Path, run_id: str) -> tuple[Run, list[Run], dict]:
    raw = store.read_spec_yaml(results_dir)
    spec = from_dict(raw, str(Path(results_dir) / store.SPEC))
    runs = spec.runs()
    match = [r for r in runs if r.run_id == run_id]
    if not match:
        some = ", ".join(r.run_id for r in runs[:5])
        raise UserError(f"{results_dir}: no run {run_id!r} in this sweep (e.g. {some}; see runs.parquet)")
    run = match[0]
    return run, [r for r in runs if r.group_id == run.group_id], raw


def log_steps(total: int, n: int) -> list[int]:
    """n log-spaced integer steps from 1 to total (always including total)."""
    if n <= 1:
        return [total]
    pts = np.unique(np.round(np.logspace(0, math.log10(total), n)).astype(int))
    return sorted({int(min(max(p, 1), total)) for p in pts} | {total})


def parse_steps(text: str | None, n_log: int | None, total: int) -> list[int]:
    if text:
        try:
            steps = sorted({int(s) for s in text.split(",") if s.strip()})
        except ValueError:
            raise UserError(f"--steps {text!r}: expected comma-separated integers") from None
        bad = [s for s in steps if not 0 <= s <= total]
        if bad:
            raise UserError(f"--steps: {bad[0]} is outside 0..{total} (train.steps)")
        return steps
    if n_log is not None and not 1 <= n_log <= 10_000:
        raise UserError(f"--log-steps {n_log}: a number of steps from 1 to 10000")
    return log_steps(total, n_log or 8)


def _with_chunk(runs: Sequence[Run], k: int) -> list[Run]:
    return [dataclasses.replace(r, settings={**r.settings, "train.chunk_steps": k}) for r in runs]


@dataclasses.dataclass
class ReplayResult:
    path: Path
    steps: list[int]
    max_abs_diff: float
    compared: int


def replay(results_dir: str | Path, run_id: str, steps: Sequence[int], rtol: float = 1e-5,
           atol: float = 1e-6, quiet: bool = False) -> ReplayResult:
    """Re-train one run alone; save its parameters at ``steps``; check it against the recorded curve.

    On CPU (exact per-run programs) the replay reproduces the sweep bitwise; where the sweep ran
    batched (accelerators) it agrees to float tolerance. Raises UserError naming the first
    evaluated step whose loss or accuracy differs beyond ``rtol``/``atol``.
    """
    import jax

    from gsweep.train.engine import GroupProgram, make_mesh, to_host
    from gsweep.train.environment import enable_compilation_cache
    from gsweep.train.tables import curve_rows

    results_dir = Path(results_dir)
    run, group, raw = find_run(results_dir, run_id)
    thr = float((raw.get("analysis") or {}).get("threshold", 0.99))  # train.stop_when_generalized reads it
    recorded = run_curves(results_dir, run_id)
    enable_compilation_cache()
    mesh = make_mesh(jax.local_devices()[:1])
    big = GroupProgram(run.group_id, group, runs_per_chunk=1, mesh=mesh, batching="map", threshold=thr)
    small = GroupProgram(run.group_id, _with_chunk(group, 1), runs_per_chunk=1, mesh=mesh, batching="map",
                         threshold=thr) \
        if big.K > 1 else big
    u = big.unit_arrays([run])
    states = big.init_states(u)
    total = big.steps
    targets = sorted(set(steps) | {total})
    out = results_dir / REPLAYS / run_id
    out.mkdir(parents=True, exist_ok=True)
    unit = type("U", (), {"runs": (run,)})()
    rows, cur, diverged = [], 0, np.array([-1])
    for target in targets:
        while cur < target:
            prog = big if (cur % big.K == 0 and cur + big.K <= target) else small
            states, host, evsteps = prog.train_chunk(states, cur // prog.K, u)
            diverged = to_host(states.diverged_at)[:1]
            stopped = to_host(states.stopped_at)[:1] if prog.stops else None
            rows.append(curve_rows(unit, evsteps, host, prog.split_names, diverged, stopped))
            cur += prog.K
        if target in steps:
            params = jax.tree.map(lambda x: np.asarray(x)[0], to_host(states.params))
            _save_params(out, target, params)
    got = pd.concat([r for r in rows if len(r)], ignore_index=True) if rows else pd.DataFrame()
    (out / "run.json").write_text(json.dumps({"run_id": run_id, "group_id": run.group_id,
                                              "settings": dict(run.settings), "steps": list(steps)},
                                             indent=2, default=str))
    diff, n = _compare(recorded, got, rtol, atol)
    if not quiet:
        print(f"replayed {run_id}: {n} recorded evaluations matched (max |diff| {diff:.2e}); "
              f"parameters at steps {', '.join(map(str, steps))} in {out}")
    return ReplayResult(out, list(steps), diff, n)


def _compare(recorded: pd.DataFrame, got: pd.DataFrame, rtol: float, atol: float) -> tuple[float, int]:
    if recorded is None or not len(recorded):
        print("gsweep: no recorded curve for this run; nothing to check", file=sys.stderr)
        return 0.0, 0
    key = ["step", "split"]
    m = recorded.merge(got, on=key, suffixes=("_rec", "_rep"))
    if len(m) < len(recorded):
        missing = sorted(set(map(tuple, recorded[key].to_numpy())) - set(map(tuple, m[key].to_numpy())))
        raise UserError(f"replay produced no evaluation at step {missing[0][0]} ({missing[0][1]}) that the sweep "
                        "recorded; the run's settings changed?")
    m = m.sort_values(key)
    bad = np.zeros(len(m), bool)
    worst = 0.0
    for c in ("loss", "acc"):
        a, b = m[f"{c}_rec"].to_numpy(), m[f"{c}_rep"].to_numpy()
        bad |= ~np.isclose(a, b, rtol=rtol, atol=atol)
        worst = max(worst, float(np.nanmax(np.abs(a - b))) if len(a) else 0.0)
    if bad.any():
        first = m[bad].iloc[0]
        raise UserError(f"replay differs from the recorded curve first at step {int(first['step'])} "
                        f"(split {first['split']}: loss {first['loss_rec']:.6g} recorded vs {first['loss_rep']:.6g} "
                        f"replayed, acc {first['acc_rec']:.4g} vs {first['acc_rep']:.4g})")
    return worst, len(m)


def _save_params(out: Path, step: int, params) -> None:
    import orbax.checkpoint as ocp
    path = (out / "params" / f"step_{step:08d}").absolute()
    if path.exists():
        import shutil
        shutil.rmtree(path)
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(path, params)
    ckptr.wait_until_finished()


def saved_steps(results_dir: Path, run_id: str) -> list[int]:
    d = Path(results_dir) / REPLAYS / run_id / "params"
    if not d.exists():
        return []
    return sorted(int(p.name.split("_")[1]) for p in d.iterdir() if p.name.startswith("step_"))


def load_params(results_dir: Path, run_id: str, step: int):
    import orbax.checkpoint as ocp
    path = (Path(results_dir) / REPLAYS / run_id / "params" / f"step_{step:08d}").absolute()
    if not path.exists():
        raise UserError(f"no saved parameters of {run_id} at step {step}; saved: {saved_steps(results_dir, run_id)}")
    return ocp.StandardCheckpointer().restore(path)


def replay_command(args) -> int:
    results_dir = Path(args.results_dir)
    run, group, _ = find_run(results_dir, args.run_id)
    steps = parse_steps(args.steps, args.log_steps, int(run.settings["train.steps"]))
    replay(results_dir, args.run_id, steps)
    return 0


def ensure_replay(results_dir: Path, run_id: str, n_log: int = 12) -> list[int]:
    have = saved_steps(results_dir, run_id)
    if have:
        return have
    run, _, _ = find_run(results_dir, run_id)
    print(f"gsweep: no replay of {run_id} yet; replaying it (gsweep replay {results_dir} {run_id})",
          file=sys.stderr)
    replay(results_dir, run_id, log_steps(int(run.settings["train.steps"]), n_log))
    return saved_steps(results_dir, run_id)


# ----------------------------------------------------------------------------------------------
# the model views


def _model_and_data(run: Run):
    from gsweep.models import build_model
    from gsweep.tasks import get_task

    task = get_task(run.settings["task.name"])
    data = task.build(run.block("task"))
    model = build_model(run.block("model"), data.vocab_size, data.n_classes, data.seq_len,
                        run.settings["train.precision"])
    return model, data


def fourier_power(embed_VxD: np.ndarray, p: int) -> np.ndarray:
    """Power of the (centred) token embedding over residues 0..p-1 at frequencies 1..p//2."""
    e = np.asarray(embed_VxD[:p], dtype=np.float64)
    e = e - e.mean(0)
    f = np.fft.rfft(e, axis=0)[1: p // 2 + 1]
    return (np.abs(f) ** 2).sum(-1)


def key_frequencies(power_K: np.ndarray, share: float = 0.5, most: int = 8) -> list[int]:
    """The fewest frequencies (1-based) holding ``share`` of the power (at most ``most``)."""
    order = np.argsort(power_K)[::-1]
    cum = np.cumsum(power_K[order]) / max(power_K.sum(), 1e-30)
    n = int(np.searchsorted(cum, share) + 1)
    return sorted(int(k) + 1 for k in order[: min(n, most)])


def _out_path(results_dir: Path, out: str | None, name: str) -> Path:
    if out:
        return Path(out)
    d = Path(results_dir) / "plots"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{name}.png"


def _finish(fig, title: str, path: Path) -> Path:
    import matplotlib.pyplot as plt
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_fourier(results_dir: Path, run_id: str, steps: Sequence[int] | None, out: str | None) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run, _, _ = find_run(results_dir, run_id)
    if run.settings["task.name"] != "modular" or "|" in str(run.settings.get("task.op", "")):
        raise UserError(f"the Fourier view needs a single-operation modular task; {run_id} is "
                        f"{run.settings['task.name']} {run.settings.get('task.op', '')}")
    p = int(run.settings["task.p"])
    have = ensure_replay(results_dir, run_id)
    steps = [s for s in (steps or have) if s in have] or have
    from gsweep.models import MODELS
    emb = MODELS[run.settings["model.name"]].embedding
    if emb is None:
        raise UserError(f"the Fourier view needs a token embedding; model {run.settings['model.name']!r} has none")
    spectra = np.stack([fourier_power(load_params(results_dir, run_id, s)[emb], p) for s in steps])
    share = spectra / np.maximum(spectra.sum(1, keepdims=True), 1e-30)
    keys = key_frequencies(spectra[-1])
    c = run_curves(results_dir, run_id)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6), gridspec_kw={"width_ratios": [1.3, 1, 1]})
    ax = axes[0]
    im = ax.imshow(share, aspect="auto", cmap="magma", origin="lower", interpolation="nearest",
                   extent=(0.5, p // 2 + 0.5, -0.5, len(steps) - 0.5))
    ax.set_yticks(range(len(steps)), [str(s) for s in steps])
    ax.set_xlabel("frequency k (embedding over residues 0..p-1)")
    ax.set_ylabel("training step")
    ax.set_title("share of embedding power per frequency")
    fig.colorbar(im, ax=ax, fraction=0.04)
    ax = axes[1]
    ax.bar(np.arange(1, p // 2 + 1), share[-1], color="tab:gray")
    ax.bar(keys, share[-1][np.array(keys) - 1], color="tab:red", label=f"key frequencies {keys}")
    ax.set_xlabel("frequency k")
    ax.set_ylabel("share of power")
    ax.set_title(f"step {steps[-1]}: {len(keys)} frequencies hold half the power")
    ax.legend(loc="upper right", fontsize=8)
    ax = axes[2]
    for split, style in (("train", "-"), ("test", "--")):
        s = c[c["split"] == split].sort_values("step")
        ax.plot(s["step"], s["acc"], style, label=f"{split} accuracy")
    s = c[c["split"] == "train"].sort_values("step")
    ax.plot(s["step"], s["fourier_sparsity"], ":", color="tab:red", label="Fourier sparsity (top-k share)")
    ax.set_xscale("log")
    ax.set_xlabel("training step")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8, loc="center left")
    ax.set_title("accuracy and embedding sparsity")
    wd, frac = run.settings["train.weight_decay"], run.settings["task.data_frac"]
    return _finish(fig, f"{run_id}: {run.settings.get('task.op', '')} mod {p}, data fraction {frac}, "
                 f"weight decay {wd}, seed {run.seed}", _out_path(results_dir, out, f"fourier-{run_id}"))


def _intermediates(run: Run, params, x_BxT):
    import jax.numpy as jnp
    model, _ = _model_and_data(run)
    _, state = model.apply({"params": params}, jnp.asarray(x_BxT), mutable=["intermediates"])
    return state["intermediates"]


def plot_attention(results_dir: Path, run_id: str, step: int | None, out: str | None, n_inputs: int = 12) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run, _, _ = find_run(results_dir, run_id)
    if run.settings["model.name"] != "transformer":
        raise UserError(f"{run_id} is an {run.settings['model.name']}: attention maps need a transformer")
    have = ensure_replay(results_dir, run_id)
    step = step if step is not None else have[-1]
    params = load_params(results_dir, run_id, step)
    _, data = _model_and_data(run)
    idx = np.random.default_rng(0).choice(data.n, size=min(n_inputs, data.n), replace=False)
    inter = _intermediates(run, params, data.x_NxT[idx])
    depth, H = int(run.settings["model.depth"]), int(run.settings["model.heads"])
    fig, axes = plt.subplots(depth, H, figsize=(2.6 * H + 1, 2.8 * depth + 0.8), squeeze=False)
    labels = [" ".join(map(str, row)) for row in data.x_NxT[idx]]
    for layer in range(depth):
        att = np.asarray(inter[f"block{layer}"]["attention"][0])  # B,H,Q,T
        for h in range(H):
            ax = axes[layer][h]
            a = att[:, h, -1, :]  # the last query position (where the answer is read)
            ax.imshow(a, cmap="viridis", vmin=0, vmax=1, aspect="auto")
            ax.set_title(f"layer {layer} head {h}", fontsize=9)
            ax.set_xticks(range(a.shape[1]), [f"pos {t}" for t in range(a.shape[1])], fontsize=7)
            ax.set_yticks(range(len(labels)), labels if h == 0 else [""] * len(labels), fontsize=7)
    return _finish(fig, f"{run_id} at step {step}: attention of the last position over the input, {len(idx)} inputs", _out_path(results_dir, out, f"attention-{run_id}-{step}"))


def plot_neurons(results_dir: Path, run_id: str, step: int | None, out: str | None, top: int = 8) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run, _, _ = find_run(results_dir, run_id)
    if run.settings["task.name"] != "modular" or "|" in str(run.settings.get("task.op", "")) \
            or run.settings["model.name"] != "transformer":
        raise UserError("the neuron view needs a transformer on a single-operation modular task (an (x, y) grid)")
    p = int(run.settings["task.p"])
    have = ensure_replay(results_dir, run_id)
    step = step if step is not None else have[-1]
    params = load_params(results_dir, run_id, step)
    _, data = _model_and_data(run)
    inter = _intermediates(run, params, data.x_NxT)
    last = int(run.settings["model.depth"]) - 1
    act = np.asarray(inter[f"block{last}"]["mlp"][0])[:, -1, :]  # N, d_mlp
    grid = np.full((p, p, act.shape[1]), np.nan)
    grid[data.x_NxT[:, 0], data.x_NxT[:, 1]] = act
    order = np.argsort(np.nanvar(act, axis=0))[::-1][:top]
    cols = 4
    rows = math.ceil(len(order) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows + 0.6), squeeze=False)
    for ax, n in zip(axes.flat, order, strict=False):
        ax.imshow(grid[:, :, n], cmap="RdBu_r", origin="lower")
        ax.set_title(f"neuron {n}", fontsize=9)
        ax.set_xlabel("y", fontsize=8)
        ax.set_ylabel("x", fontsize=8)
    for ax in list(axes.flat)[len(order):]:
        ax.axis("off")
    return _finish(fig, f"{run_id} at step {step}: MLP activations over the (x, y) grid, top {len(order)} neurons by variance", _out_path(results_dir, out, f"neurons-{run_id}-{step}"))


def plot_command(args) -> int:
    results_dir = Path(args.results_dir)
    steps = args.step
    if args.kind == "fourier":
        path = plot_fourier(results_dir, args.run_id, steps, args.out)
    elif args.kind == "attention":
        path = plot_attention(results_dir, args.run_id, steps[-1] if steps else None, args.out)
    else:
        path = plot_neurons(results_dir, args.run_id, steps[-1] if steps else None, args.out)
    print(path)
    return 0


def snapshot_runs(results_dir: Path, runs: pd.DataFrame, where: str, steps_spec: str) -> list[str]:
    """``analysis.snapshot_where``: replay the matching runs after the sweep and keep their parameters."""
    from gsweep.filters import select  # parsed into a whitelisted form, never evaluated as code
    sel = select(runs, where, "analysis.snapshot_where")
    done = []
    for _, r in sel.iterrows():
        total = int(r["train.steps"])
        steps = log_steps(total, 12) if steps_spec == "log" else parse_steps(steps_spec, None, total)
        replay(results_dir, r["run_id"], steps)
        done.append(r["run_id"])
    return done
