"""`gsweep plan`: per group the runs, runs per chunk, compiled bytes, model-steps and a probed estimate."""

import pytest

from gsweep.plan import (
    _probe_run,
    estimate_map_bytes,
    format_duration,
    host_params,
    map_argument_bytes,
    plan_sweep,
    render,
    widest_run,
)
from gsweep.spec import from_dict
from gsweep.train.engine import GroupProgram, make_mesh
from gsweep.train.memory import SHARE, size_runs_per_chunk
from gsweep.train.units import group_runs
from tests.conftest import ROOT, gsweep_cmd, tiny_spec_dict


def test_format_duration():
    assert format_duration(3.21) == "3.2 s" and format_duration(42) == "42 s"
    assert format_duration(372) == "6 min 12 s" and format_duration(7300) == "2 h 1 min"


def test_plan_of_a_two_group_sweep():
    spec = from_dict(tiny_spec_dict(model={"depth": [1, 2]}, train={"weight_decay": [0.0, 1.0]}, seeds=2))
    plans = plan_sweep(spec, n_devices=1)
    assert len(plans) == 2
    for p in plans:
        assert p.runs == 4 and p.model_steps == 4 * 60 and p.runs_per_chunk == 4
        assert p.compiled_bytes > 0 and p.s_per_step > 0 and p.compile_s >= 0
        assert p.estimate_s >= p.compile_s + 60 * p.s_per_step  # at least the steps of one chunk of runs
        assert p.batching == "map" and p.probe_runs == 1  # map is probed at one run per device and scaled
        assert not p.bytes_exact  # far under the budget: estimated, not compiled a second time
        assert p.probe_calls >= 2  # a first call (with an evaluation), then at least one without
    text = render(spec, plans, "test device", 1.0)
    assert text.count("\n") >= 5 and all(p.group_id in text for p in plans)
    assert "total: 8 runs in 2 group(s), 480 model-steps, estimated" in text
    assert "probe took 1.0 s" in text and "how:" in text and "~" in text


def test_the_probe_trains_on_the_groups_widest_training_set():
    """Every chunk of a group is padded to its widest training set: the probe times that width,
    not the first run's (here 20% of the pairs against 90%)."""
    spec = from_dict(tiny_spec_dict(task={"data_frac": [0.2, 0.9]}))
    (gid, runs), = group_runs(spec.runs()).items()
    prog = GroupProgram(gid, runs, runs_per_chunk=1, mesh=make_mesh([make_mesh().devices.flat[0]]))
    assert prog.masks_of(runs[0])["train"].sum() < prog.M  # the first run is the narrow one
    assert prog.masks_of(widest_run(prog, runs))["train"].sum() == prog.M
    (p,) = plan_sweep(spec, n_devices=1)
    assert p.probe_width == prog.M


@pytest.mark.parametrize("n_devices", [1, 2])
def test_map_bytes_estimate_against_the_compiled_program(n_devices):
    """The arguments are exact (from shapes); the whole estimate is within 10% of XLA's analysis of
    the compiled chunk program, at one run per device and at the whole group."""
    import jax

    spec = from_dict(tiny_spec_dict(task={"data_frac": [0.3, 0.7]}, train={"weight_decay": [0.0, 1.0]}, seeds=2))
    (gid, runs), = group_runs(spec.runs()).items()
    mesh = make_mesh(jax.devices()[:n_devices])
    prog = GroupProgram(gid, runs, runs_per_chunk=n_devices, mesh=mesh, batching="map")
    probe = GroupProgram(gid + "-probe", [_probe_run(widest_run(prog, runs), 1)], runs_per_chunk=n_devices,
                         mesh=mesh, batching="map")
    fn, args = probe.chunk_program(n_devices)
    mem = fn.lower(*args).compile().memory_analysis()
    for R in (n_devices, 8):
        est = estimate_map_bytes(prog, R, probe, n_devices, args, mem)
        rfn, rargs = prog.chunk_program(R)
        real = rfn.lower(*rargs).compile().memory_analysis()
        exact = prog.compiled_bytes(R)
        assert map_argument_bytes(prog, R, probe, n_devices, args) == real.argument_size_in_bytes  # exact
        assert abs(est - exact) <= 0.1 * exact, (R, est, exact)


def test_near_the_budget_plan_sizes_exactly_as_gsweep_run():
    """Within half the budget the estimate is not trusted: plan compiles and sizes as gsweep run does."""
    spec = from_dict(tiny_spec_dict(train={"weight_decay": [0.0, 0.1, 1.0, 3.0]}, seeds=4))
    (gid, runs), = group_runs(spec.runs()).items()
    mesh = make_mesh(make_mesh().devices.flat[:1])
    whole = GroupProgram(gid, runs, runs_per_chunk=1, mesh=mesh).compiled_bytes(len(runs))
    limit = (int(whole / SHARE * 0.6), "test")  # the whole group does not fit; half the budget is far exceeded
    (p,) = plan_sweep(spec, n_devices=1, limit=limit)
    run_sizing = size_runs_per_chunk(GroupProgram(gid, runs, runs_per_chunk=1, mesh=mesh), len(runs), 0, limit)
    assert p.bytes_exact and p.runs_per_chunk == run_sizing.runs_per_chunk < len(runs)
    assert p.compiled_bytes == run_sizing.compiled_bytes
    (far,) = plan_sweep(spec, n_devices=1, limit=(whole * 10, "test"))
    assert not far.bytes_exact and far.runs_per_chunk == len(runs)


def test_vmap_is_sized_exactly_and_probed_at_the_chosen_runs_per_chunk():
    spec = from_dict(tiny_spec_dict(train={"weight_decay": [0.0, 1.0], "batching": "vmap"}, seeds=2))
    (p,) = plan_sweep(spec, n_devices=2)
    assert p.batching == "vmap" and p.bytes_exact and p.runs_per_chunk == 4 and p.probe_runs == 4
    assert p.s_per_step > 0 and p.estimate_s >= p.compile_s + 60 * p.s_per_step


def test_host_params_have_the_shapes_and_finite_values():
    import jax
    import numpy as np

    abstract = {"w": jax.ShapeDtypeStruct((64, 32), np.float32), "b": jax.ShapeDtypeStruct((32,), np.float32)}
    p = host_params(abstract)
    assert p["w"].shape == (64, 32) and p["w"].dtype == np.float32 and np.isfinite(p["w"]).all()
    assert 0.1 < p["w"].std() < 0.15 and not p["b"].any()  # N(0, 1/64): std 0.125; vectors zero


@pytest.mark.parametrize("args, needle", [(["--probe-steps", "0"], "--probe-steps"),
                                          (["--set", "train.batching=fast"], "train.batching")])
def test_bad_input_is_one_line_exit_2(args, needle):
    import subprocess
    p = subprocess.run(gsweep_cmd("plan", ROOT / "sweeps/ci-tiny.yaml", *args), capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    assert p.returncode == 2 and needle in p.stderr and "Traceback" not in p.stderr


def test_plan_shards_as_run_does_and_reports_the_padding():
    """5 runs on 3 (and on 4) devices: a chunk of 6 rows over 3 devices, one padding row, reported;
    the estimate counts the 2 runs each device trains one after another."""
    spec = from_dict(tiny_spec_dict(train={"weight_decay": [0.0, 0.3, 1.0, 2.0, 3.0]}))
    for n in (3, 4):
        (p,) = plan_sweep(spec, n_devices=n)
        assert (p.devices, p.runs_per_chunk, p.padding_rows, p.probe_runs) == (3, 6, 1, 3)
        assert p.estimate_s >= p.compile_s + 2 * 60 * p.s_per_step
    text = render(spec, [p], "test device", 1.0)
    assert "padding: 1 of 6 chunk rows train no run (16.7%)" in text


def test_a_probe_out_of_device_memory_is_a_one_line_error(monkeypatch):
    """A group whose probe cannot allocate (an accelerator-sized sweep planned on a small host) is a
    UserError naming the group, not an XLA traceback; any other error still propagates."""
    from gsweep import plan
    from gsweep.errors import UserError
    from gsweep.train.memory import DeviceOOM

    spec = from_dict(tiny_spec_dict())

    def oom(*a, **k):
        raise DeviceOOM("RESOURCE_EXHAUSTED: Out of memory allocating 63815013312 bytes.")

    monkeypatch.setattr(plan, "_time_probe", oom)
    with pytest.raises(UserError, match=r"group g\w+: even one run per device does not fit"):
        plan_sweep(spec, n_devices=1)

    def other(*a, **k):
        raise ValueError("not a memory error")

    monkeypatch.setattr(plan, "_time_probe", other)
    with pytest.raises(ValueError, match="not a memory error"):
        plan_sweep(spec, n_devices=1)
