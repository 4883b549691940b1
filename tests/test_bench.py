"""`gsweep bench`: the CI-sized run prints and writes every documented key (not its speed), the
FLOP counts agree with the issue's figures, and a missing peer is one clear error."""

import argparse
import json
import math
import subprocess

import pytest

from gsweep.bench import CONFIG_KEYS, DEFAULT_PEER, Recipe, flop_counts, make_plan
from tests.conftest import ROOT, gsweep_cmd


def test_flop_counts_match_the_issue_for_the_standard_recipe():
    # p = 113: pool 12769 pairs, 30% = 3830 training examples, vocabulary p + 1 ('='), T = 3
    c = flop_counts(Recipe(p=113), vocab=114, n_classes=113, seq=3, batch=3830, pool=12769)
    # the issue: "about 6.4 GFLOP" with queries, attention output and MLP at the answer position only
    assert c["flops_per_model_step_last_position_only"] == pytest.approx(6.4e9, rel=0.01)
    # the issue's 47 TFLOP/s at 3,030 model-steps/s counted as 6·params·tokens: ~15.5 GFLOP
    assert c["flops_per_model_step_6nd"] == pytest.approx(47e12 / 3030, rel=0.02)
    # gsweep also tabulates the first block: less again; the peer computes every position: more
    assert c["flops_per_model_step"] < c["flops_per_model_step_last_position_only"] < c["flops_per_model_step_peer"]
    assert c["params"] == 114 * 128 + 3 * 128 + 128 * 384 + 128 * 128 + 128 * 512 + 512 + 512 * 128 + 128 + 128 * 113


def test_plans_follow_the_issue():
    ns = lambda **kw: argparse.Namespace(**{"quick": False, "steps": None, "models": None, "p": None,  # noqa: E731
                                           "precision": None, **kw})
    gpu = make_plan(ns(), "gpu")
    assert gpu.recipe.p == 113 and set(gpu.precisions) == {"tf32", "highest"} and gpu.runs == (256, 512, 1024)
    assert gpu.loop_models >= 1 and gpu.vmap_models == 256
    cpu = make_plan(ns(), "cpu")
    assert cpu.recipe.p == 59 and cpu.recipe.frac == 0.3 and cpu.precisions == ("highest",)
    assert (cpu.recipe.d_model, cpu.recipe.heads, cpu.recipe.d_mlp, cpu.recipe.depth) == (128, 4, 512, 1)
    quick = make_plan(ns(quick=True, models=[3], precision=["tf32", "tf32"]), "cpu")
    assert quick.runs == (3,) and quick.precisions == ("tf32",) and quick.recipe.d_model == 32


def test_cpu_peers_get_their_best_threads_and_gsweep_every_core():
    """The loop peer: 1 thread and every core (the faster is the reference); the torch.func
    ensemble: every core; gsweep: at least one run per core's device."""
    ns = argparse.Namespace(quick=False, steps=None, models=None, p=None, precision=None)
    eight = make_plan(ns, "cpu", cores=8)
    assert eight.threads("loop") == (1, 8) and eight.threads("vmap") == (8,)
    assert eight.runs == (8,) and eight.vmap_models == 8
    one = make_plan(ns, "cpu", cores=1)
    assert one.threads("loop") == (1,) and one.threads("vmap") == (1,) and one.runs == (4,)
    assert make_plan(ns, "gpu", cores=8).threads("loop") == (None,)


def test_a_missing_peer_is_one_clear_error(tmp_path):
    missing = tmp_path / "nope" / "torch_reference.py"
    p = subprocess.run(gsweep_cmd("bench", "--device", "cpu", "--quick", "--peer", missing, "--out", tmp_path / "b"),
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 2, p.stderr
    assert str(missing) in p.stderr and "--peer" in p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "b").exists()


def test_the_default_peer_is_part_of_the_project():
    assert DEFAULT_PEER.is_file() and ROOT in DEFAULT_PEER.parents
    assert DEFAULT_PEER.parent.name == "bench" and DEFAULT_PEER.parent.parent.name == "gsweep"


def test_the_peer_trains_on_gsweeps_split_and_init(tmp_path):
    """The peer's training set is the one gsweep's run with the same data seed trains on, and its
    weights are N(0, 1/fan_in) with zero biases, as gsweep's."""
    import importlib.util

    import numpy as np
    import torch

    from gsweep.tasks import get_task

    spec = importlib.util.spec_from_file_location("torch_peer", DEFAULT_PEER)
    peer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer)
    for p, frac, ds in ((13, 0.3, 0), (31, 0.5, 7)):
        cfg = {"name": "modular", "p": p, "op": "add", "data_frac": frac, "data_seed": ds}
        task = get_task("modular")
        data = task.build(cfg)
        train_mask = task.masks(data, cfg)["train"]
        xtr, ytr, xte, yte = peer.dataset(p, frac, ds, "cpu")
        want = data.x_NxT[train_mask]
        got = xtr.numpy()
        assert len(got) == len(want) and len(xte) == data.n - len(want)
        assert {tuple(r) for r in got} == {tuple(r) for r in want}  # same examples, inputs `x y =`
        assert np.array_equal(ytr.numpy(), (got[:, 0] + got[:, 1]) % p)
    torch.manual_seed(0)
    m = peer.Transformer(113, d=128, heads=4, d_mlp=512, depth=2)
    blk = m.blocks[1]
    assert abs(float(blk.w_out.std()) - 512**-0.5) < 0.05 * 512**-0.5
    assert abs(float(m.embed.std()) - 128**-0.5) < 0.05 * 128**-0.5
    assert float(blk.b_in.abs().max()) == 0.0 and float(blk.b_out.abs().max()) == 0.0


@pytest.mark.slow
def test_quick_bench_prints_and_writes_every_key(tmp_path):
    out = tmp_path / "bench"
    p = subprocess.run(gsweep_cmd("bench", "--device", "cpu", "--quick", "--out", out),
                       capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    files = sorted(out.glob("*.json"))
    assert len(files) == 1, files
    doc = json.loads(files[0].read_text())
    assert str(files[0]) in p.stdout

    (cfg,) = doc["configurations"]
    printed = [ln for ln in p.stdout.splitlines() if ln.startswith("configuration:")]
    assert len(printed) == 1
    for k in CONFIG_KEYS:
        assert k in cfg, k
        assert f" {k}=" in printed[0], k
    # --quick asks for 2 runs; rounded up to a multiple of the devices (the tests fake 4 CPU devices)
    n_dev = doc["machine"]["jax_devices"]
    assert cfg["precision"] == "highest" and cfg["runs"] == max(2, n_dev) and cfg["runs_per_chunk"] == cfg["runs"]
    assert isinstance(cfg["device_name"], str) and cfg["device_name"]
    for k in ("model_steps_per_s", "ratio_vs_torch_loop", "ratio_vs_torch_vmap", "achieved_tflops", "peak_tflops",
              "torch_loop_model_steps_per_s", "torch_vmap_model_steps_per_s"):
        assert isinstance(cfg[k], float) and math.isfinite(cfg[k]) and cfg[k] > 0, (k, cfg[k])
    assert isinstance(cfg["flops_per_model_step"], int) and cfg["flops_per_model_step"] > 0
    assert "tabulated" in cfg["flops_counting"]
    xla = cfg["flops_per_model_step_xla"]
    assert xla is None or 0.5 < xla / cfg["flops_per_model_step"] < 3  # XLA also counts elementwise work
    assert cfg["compile_s"] >= 0 and 0 <= cfg["eval_overhead_frac"] < 1
    assert isinstance(cfg["peak_memory_bytes"], int) and cfg["peak_memory_bytes"] > 0
    assert cfg["ratio_vs_torch_loop"] == pytest.approx(cfg["model_steps_per_s"] / cfg["torch_loop_model_steps_per_s"])
    assert cfg["achieved_tflops"] == pytest.approx(cfg["flops_per_model_step"] * cfg["model_steps_per_s"] / 1e12)

    m = doc["machine"]
    assert m["device"] == "cpu" and m["cpu_count"] >= 1 and len(m["loadavg_start"]) == 3
    assert m["versions"]["jax"] and m["versions"]["torch"]
    assert doc["command"].startswith("gsweep bench --device cpu") and doc["command"].endswith("--quick")
    modes = {r["mode"] for r in doc["peer_runs"]}
    assert modes == {"loop", "vmap"}
    assert all("--p 13" in c and "--d-model 32" in c for c in doc["peer_commands"])


def test_profile_splits_a_compiled_program_into_matmuls_and_the_rest():
    """The per-op profile (scripts/cpu_step_profile.py) reads XLA's own compiled HLO text: the matmul
    (a dot, or the library fusion that holds it) is counted as a matmul, the ReLU and the sum are not,
    and the per-model-step figures add up from the trace events."""
    import jax
    import jax.numpy as jnp

    from gsweep.bench.hlo_profile import breakdown, hlo_ops, op_times

    f = jax.jit(lambda x, w: jax.nn.relu(x @ w).sum(0))
    ops = hlo_ops(f.lower(jnp.ones((64, 32)), jnp.ones((32, 16))).compile().as_text())
    kinds = {k: v["kind"] for k, v in ops.items() if v["opcode"] in ("dot", "fusion", "maximum", "reduce")}
    assert any(v == "matmul" for v in kinds.values()), kinds
    assert all(v == "other" for k, v in kinds.items() if ops[k]["opcode"] in ("maximum", "reduce")), kinds
    mm = next(k for k, v in kinds.items() if v == "matmul")
    other = next(k for k, v in kinds.items() if v == "other")
    events = [{"name": mm, "dur": 300.0}, {"name": mm, "dur": 100.0}, {"name": other, "dur": 100.0},
              {"name": "not-an-hlo-op", "dur": 1e6}]
    us, n = op_times(events, ops)
    b = breakdown(ops, us, n, model_steps=2)
    assert b["ms_per_model_step"] == pytest.approx(0.25) and b["matmul_ms"] == pytest.approx(0.2)
    assert b["other_ms"] == pytest.approx(0.05) and b["matmul_share"] == pytest.approx(0.8)
    assert [r["op"] for r in b["top"]] == [mm, other] and b["top"][0]["calls"] == 2
    with pytest.raises(ValueError, match="model_steps"):
        breakdown(ops, us, n, model_steps=0)


def test_cpu_step_profile_script_runs_and_adds_up():
    """scripts/cpu_step_profile.py --quick: one traced chunk of the CI-sized recipe on one CPU device;
    the matmul and other milliseconds it prints add up to the HLO ops' total."""
    import re
    import sys

    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "cpu_step_profile.py"), "--quick", "--top", "5"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    m = re.search(r"HLO ops ([\d.]+) ms: matmuls ([\d.]+) ms \((\d+)%\), the rest ([\d.]+) ms", p.stdout)
    assert m, p.stdout
    total, mm, _, rest = (float(g) for g in m.groups())
    assert total > 0 and mm > 0 and mm + rest == pytest.approx(total, abs=0.011)
    assert len([ln for ln in p.stdout.splitlines() if re.match(r"\s+[\d.]+ ms\s+[\d.]+%\s+(matmul|other)", ln)]) == 5
