"""`gsweep plan`: per group the runs, runs per chunk, compiled bytes, model-steps and a probed estimate."""

import pytest

from gsweep.plan import format_duration, plan_sweep, render
from gsweep.spec import from_dict
from tests.conftest import ROOT, gsweep_cmd, tiny_spec_dict


def test_format_duration():
    assert format_duration(3.21) == "3.2 s" and format_duration(42) == "42 s"
    assert format_duration(372) == "6 min 12 s" and format_duration(7300) == "2 h 1 min"


def test_plan_of_a_two_group_sweep():
    spec = from_dict(tiny_spec_dict(model={"depth": [1, 2]}, train={"weight_decay": [0.0, 1.0]}, seeds=2))
    plans = plan_sweep(spec, probe_steps=2, n_devices=1)
    assert len(plans) == 2
    for p in plans:
        assert p.runs == 4 and p.model_steps == 4 * 60 and p.runs_per_chunk == 4
        assert p.compiled_bytes > 0 and p.s_per_step > 0 and p.compile_s >= 0
        assert p.estimate_s >= p.compile_s + 60 * p.s_per_step  # at least the steps of one chunk of runs
        assert p.batching == "map" and p.probe_runs == 1  # map is probed at one run per device and scaled
    text = render(spec, plans, "test device", 1.0, 2)
    assert text.count("\n") >= 5 and all(p.group_id in text for p in plans)
    assert "total: 8 runs in 2 group(s), 480 model-steps, estimated" in text
    assert "probe took 1.0 s" in text and "how:" in text


@pytest.mark.parametrize("args, needle", [(["--probe-steps", "0"], "--probe-steps"),
                                          (["--set", "train.batching=fast"], "train.batching")])
def test_bad_input_is_one_line_exit_2(args, needle):
    import subprocess
    p = subprocess.run(gsweep_cmd("plan", ROOT / "sweeps/ci-tiny.yaml", *args), capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    assert p.returncode == 2 and needle in p.stderr and "Traceback" not in p.stderr
