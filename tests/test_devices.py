"""One XLA CPU device per core (gsweep.devices): how the count is chosen, that accelerators are never
sharded over CPU devices, the padding bound, and the same tables on 1, 2 and 3 devices (a run count
that does not divide evenly, a SIGKILL resumed on another device count, --extend on another count).
The sweeps run in subprocesses with GSWEEP_CPU_DEVICES set; the rest of the suite runs on one device."""

import json
import math
import os
import signal
import subprocess

import pandas as pd
import pytest
import yaml

from gsweep import devices
from gsweep.errors import UserError
from tests.conftest import ROOT, gsweep_cmd, tiny_spec_dict

FLAG = "--xla_force_host_platform_device_count"


# ---------------------------------------------------------------------------------------------
# the count


def test_the_count_is_the_override_else_the_users_flag_else_the_cores(monkeypatch):
    monkeypatch.setattr(devices, "usable_cores", lambda: 6)
    assert devices.decide({}) == (6, "one per usable core (6, os.sched_getaffinity)")
    assert devices.decide({"XLA_FLAGS": f"--xla_cpu_foo=1 {FLAG}=3"})[0] == 3
    assert devices.decide({"XLA_FLAGS": f"{FLAG}=3", "GSWEEP_CPU_DEVICES": "2"}) == (2, "GSWEEP_CPU_DEVICES=2")
    assert devices.decide({"GSWEEP_CPU_DEVICES": " "})[0] == 6  # empty: unset


def test_configure_writes_xla_flags_and_keeps_the_users_other_flags(monkeypatch):
    monkeypatch.setattr(devices, "usable_cores", lambda: 5)
    env = {"XLA_FLAGS": "--xla_cpu_foo=1"}
    assert devices.configure(env)[0] == 5
    assert env["XLA_FLAGS"].split() == ["--xla_cpu_foo=1", f"{FLAG}=5"]
    assert devices.configure(env)[0] == 5 and env["XLA_FLAGS"].count(FLAG) == 1  # idempotent
    env = {"XLA_FLAGS": f"{FLAG}=7 --xla_cpu_foo=1", "GSWEEP_CPU_DEVICES": "2"}
    devices.configure(env)  # the override replaces the user's count
    assert devices.flag_count(env["XLA_FLAGS"]) == 2 and "--xla_cpu_foo=1" in env["XLA_FLAGS"]
    env = {"XLA_FLAGS": f"{FLAG}=7"}
    devices.configure(env)  # the user's own count is left as it is
    assert env["XLA_FLAGS"] == f"{FLAG}=7"


@pytest.mark.parametrize("bad", ["0", "-2", "two", "1.5"])
def test_a_bad_override_is_one_line_naming_it(bad):
    with pytest.raises(UserError, match="GSWEEP_CPU_DEVICES"):
        devices.env_count({"GSWEEP_CPU_DEVICES": bad})


def test_a_bad_override_exits_2_before_any_work(tmp_path):
    env = {**os.environ, "GSWEEP_CPU_DEVICES": "many"}
    p = subprocess.run(gsweep_cmd("run", ROOT / "sweeps/ci-tiny.yaml", "--out", tmp_path / "r"), cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1].startswith("gsweep: error: GSWEEP_CPU_DEVICES=")
    assert not (tmp_path / "r").exists()


def test_usable_cores_follow_the_affinity_mask():
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no affinity mask on this OS")
    assert devices.usable_cores() == len(os.sched_getaffinity(0))


# ---------------------------------------------------------------------------------------------
# which devices the run axis is sharded over


def test_an_accelerator_backend_is_never_sharded_over_cpu_devices():
    gpus = ["gpu0", "gpu1"]
    env = {"GSWEEP_CPU_DEVICES": "4"}
    assert devices.run_devices("gpu", gpus, environ=env) == gpus  # one GPU is one device
    assert devices.run_devices("tpu", gpus[:1], environ=env) == gpus[:1]
    cpus = ["c0", "c1", "c2", "c3"]
    assert devices.run_devices("cpu", cpus, environ={"GSWEEP_CPU_DEVICES": "2"}) == ["c0", "c1"]
    assert devices.run_devices("cpu", cpus, environ={}) == cpus
    assert devices.run_devices("cpu", cpus, process_count=2, environ={"GSWEEP_CPU_DEVICES": "1"}) == cpus


def test_make_mesh_on_a_faked_accelerator_backend_takes_its_devices(monkeypatch):
    """The mesh the engine builds by default: with the backend decision faked to 'gpu', the devices
    JAX reports for it (here the test's 4 CPU devices standing in for 4 GPUs) all of them, whatever
    GSWEEP_CPU_DEVICES (1 in the tests) says; on 'cpu' the override applies."""
    import jax

    from gsweep.train import engine

    four = jax.devices()[:4]
    monkeypatch.setattr(engine.jax, "devices", lambda *a: list(four))
    monkeypatch.setattr(engine.jax, "default_backend", lambda: "gpu")
    assert list(engine.make_mesh().devices.flat) == four
    monkeypatch.setattr(engine.jax, "default_backend", lambda: "cpu")
    assert list(engine.make_mesh().devices.flat) == four[:1]
    monkeypatch.setenv("GSWEEP_CPU_DEVICES", "3")
    assert list(engine.make_mesh().devices.flat) == four[:3]


@pytest.mark.parametrize("n_dev", range(1, 18))
def test_padding_is_under_one_devices_share_and_costs_no_round(n_dev):
    for n in range(1, 70):
        d = devices.devices_used(n, n_dev)
        k = math.ceil(n / n_dev)
        assert 1 <= d <= n_dev and math.ceil(n / d) == k  # as few rounds as every device would take
        assert 0 <= d * k - n < k  # padding rows: fewer than one device's share


# ---------------------------------------------------------------------------------------------
# the same tables on 1, 2 and 3 devices

SPEC = tiny_spec_dict(train={"weight_decay": [0.0, 0.3, 1.0, 2.0, 3.0], "chunk_steps": 20, "checkpoint_every": 1},
                      seeds=1)  # 5 runs: 5 rows on 1 device, 6 on 2 and on 3 (one padding row)
KEYS = {"runs.parquet": ["run_id"], "curves.parquet": ["run_id", "step", "split"]}


def gs(*args, n: int, env=None, check=True):
    e = {**os.environ, "GSWEEP_CPU_DEVICES": str(n), **(env or {})}
    p = subprocess.run(gsweep_cmd(*args), capture_output=True, text=True, cwd=ROOT, env=e, timeout=600)
    if check:
        assert p.returncode == 0, p.stderr[-3000:]
    return p


def tables(d):
    return {f: pd.read_parquet(d / f).sort_values(k).reset_index(drop=True) for f, k in KEYS.items()}


def assert_same(a, b):
    for f in KEYS:
        pd.testing.assert_frame_equal(a[f], b[f], check_exact=True)


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("devices")
    f = tmp / "five.yaml"
    f.write_text(yaml.safe_dump(SPEC))
    gs("run", f, "--out", tmp / "one", "--quiet", n=1)
    return f, tables(tmp / "one"), json.loads((tmp / "one" / "meta.json").read_text())


@pytest.mark.parametrize("n", [2, 3])
def test_n_devices_give_the_tables_of_one_bitwise(tmp_path, one_device, n):
    f, one, meta1 = one_device
    gs("run", f, "--out", tmp_path / "n", "--quiet", n=n)
    assert_same(one, tables(tmp_path / "n"))
    meta = json.loads((tmp_path / "n" / "meta.json").read_text())
    (g1,), (g,) = meta1["groups"].values(), meta["groups"].values()
    assert meta["run_devices"] == n and meta["cpu_devices"] == f"GSWEEP_CPU_DEVICES={n}"
    assert g1["devices"] == 1 and g1["runs_per_chunk"] == 5
    assert g["devices"] == n and g["runs_per_chunk"] == 6  # a multiple of the devices; one padding row
    assert list(one["runs.parquet"]["run_id"]) == list(tables(tmp_path / "n")["runs.parquet"]["run_id"])


def test_sigkill_on_three_devices_resumed_on_one_is_identical(tmp_path, one_device):
    """The checkpoint holds the 3-device chunk (6 rows, one padding); the resumed unit has 5 rows:
    the same unit, its state refitted to the new width, and the same numbers."""
    f, one, _ = one_device
    out = tmp_path / "cut"
    p = gs("run", f, "--out", out, "--quiet", n=3, env={"GSWEEP_TEST_KILL": "after_part:2"}, check=False)
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stderr[-2000:])
    p2 = gs("run", f, "--out", out, "--quiet", n=1)
    assert "resuming at step 20 " in p2.stderr, p2.stderr
    assert_same(one, tables(out))


def test_extend_on_another_device_count_is_identical(tmp_path, one_device):
    f, one, _ = one_device
    four = {**SPEC, "train": {**SPEC["train"], "weight_decay": SPEC["train"]["weight_decay"][:4]}}
    f4 = tmp_path / "four.yaml"
    f4.write_text(yaml.safe_dump(four))
    out = tmp_path / "ext"
    gs("run", f4, "--out", out, "--quiet", n=2)
    gs("run", f, "--out", out, "--quiet", "--extend", n=3)
    assert_same(one, tables(out))


def test_the_rule_reported_is_the_one_configure_applied(monkeypatch):
    """After configure() wrote the count into XLA_FLAGS, the process still reports why it chose it
    (meta.json's cpu_devices), not 'the user's XLA_FLAGS'."""
    monkeypatch.setattr(devices, "usable_cores", lambda: 3)
    monkeypatch.delenv("GSWEEP_CPU_DEVICES")
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setattr(devices, "_CHOSEN", [])
    assert devices.configure() == (3, "one per usable core (3, os.sched_getaffinity)")
    assert devices.flag_count(os.environ["XLA_FLAGS"]) == 3
    assert devices.chosen() == (3, "one per usable core (3, os.sched_getaffinity)")
    assert devices.configure() == devices.chosen()  # idempotent
    monkeypatch.setenv("GSWEEP_CPU_DEVICES", "2")  # a later change is seen
    assert devices.configure() == (2, "GSWEEP_CPU_DEVICES=2") == devices.chosen()
