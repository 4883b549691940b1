"""Issue 3: nothing lost. Kills, resume, extend, signals, locks, bad input, OOM halving."""

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from gsweep import store
from gsweep.errors import UserError
from tests.conftest import ROOT, gsweep_cmd, tiny_spec_dict

SPEC = tiny_spec_dict(name="resume", task={"data_frac": [0.4, 0.7]},
                      train={"steps": 240, "eval_every": 30, "chunk_steps": 30, "weight_decay": [0.0, 1.0]})
KEYS = {"curves.parquet": ["run_id", "step", "split"], "runs.parquet": ["run_id"]}


def write_spec(tmp_path, d=SPEC, name="s.yaml"):
    f = tmp_path / name
    f.write_text(yaml.safe_dump(d))
    return f


def gs(*args, env=None, check=True):
    e = {**os.environ, **(env or {})}
    p = subprocess.run(gsweep_cmd(*args), capture_output=True, text=True, cwd=ROOT, env=e, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"{args}: rc {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def tables(d):
    return {f: pd.read_parquet(Path(d) / f).sort_values(k).reset_index(drop=True) for f, k in KEYS.items()}


def assert_same(a, b):
    for f in KEYS:
        pd.testing.assert_frame_equal(a[f], b[f], check_exact=True)


def checksums(d):
    d = Path(d)
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file() and p.name != ".lock"}  # the lock is not a result


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    f = write_spec(tmp)
    gs("run", f, "--out", tmp / "full")
    return f, tables(tmp / "full"), tmp / "full"


@pytest.mark.parametrize("hook", ["after_part:3", "in_checkpoint:5"])
def test_sigkill_at_a_point_then_resume_is_identical(tmp_path, uninterrupted, hook):
    f, full, _ = uninterrupted
    out = tmp_path / "cut"
    p = gs("run", f, "--out", out, env={"GSWEEP_TEST_KILL": hook}, check=False)
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stderr[-2000:])
    assert not (out / "runs.parquet").exists()
    p2 = gs("run", f, "--out", out)
    assert "resuming at step" in p2.stderr, p2.stderr
    assert "resuming at step 0 " not in p2.stderr
    assert_same(full, tables(out))


def _committed(sums) -> bool:
    """A checkpoint step is committed once its checksums are recorded."""
    try:
        return bool(json.loads(sums.read_text() or "{}"))
    except (OSError, ValueError):
        return False


def test_external_sigkill_mid_sweep_then_resume_is_identical(tmp_path, uninterrupted):
    f, full, _ = uninterrupted
    out = tmp_path / "cut"
    proc = subprocess.Popen(gsweep_cmd("run", f, "--out", out), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        ck = out / "checkpoints"
        if ck.exists() and any(_committed(p) for p in ck.glob("*.sha256.json")) and \
                len(list((out / "parts").glob("*.parquet"))) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    p2 = gs("run", f, "--out", out)
    assert "resuming at step" in p2.stderr
    assert_same(full, tables(out))


def test_sigterm_checkpoints_writes_tables_and_exits_nonzero(tmp_path, uninterrupted):
    f, full, _ = uninterrupted
    out = tmp_path / "term"
    proc = subprocess.Popen(gsweep_cmd("run", f, "--out", out), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (out / "parts").exists() and len(list((out / "parts").glob("*.parquet"))) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err  # 128 + SIGTERM
    assert "Resume with the same command" in err
    runs = pd.read_parquet(out / "runs.parquet")
    assert (runs["status"] == "running").all() and (runs["steps_done"] < 240).all()
    gs("run", f, "--out", out)
    assert_same(full, tables(out))


def test_extend_with_one_more_seed(tmp_path, uninterrupted):
    f, full, full_dir = uninterrupted
    out = tmp_path / "ext"
    gs("run", f, "--out", out)
    before = tables(out)
    two = write_spec(tmp_path, {**SPEC, "seeds": 2}, "two.yaml")
    p = gs("run", two, "--out", out, check=False)
    assert p.returncode == 2 and "--extend" in p.stderr and "seeds" in p.stderr  # the diff is shown
    gs("run", two, "--out", out, "--extend")
    after = tables(out)
    for fname, _key in KEYS.items():
        old = after[fname][after[fname]["run_id"].isin(before[fname]["run_id"])].reset_index(drop=True)
        pd.testing.assert_frame_equal(old, before[fname], check_exact=True)
    gs("run", two, "--out", tmp_path / "fresh2")
    assert_same(tables(tmp_path / "fresh2"), after)


def test_spec_change_without_extend_or_fresh_touches_nothing(tmp_path, uninterrupted):
    f, _, full_dir = uninterrupted
    before = checksums(full_dir)
    changed = write_spec(tmp_path, {**SPEC, "train": {**SPEC["train"], "lr": 0.01}}, "c.yaml")
    p = gs("run", changed, "--out", full_dir, check=False)
    assert p.returncode == 2 and "differs" in p.stderr and "lr" in p.stderr
    p = gs("run", changed, "--out", full_dir, "--extend", check=False)
    assert p.returncode == 2 and "only adds runs" in p.stderr
    assert checksums(full_dir) == before


def test_bad_inputs_leave_existing_results_untouched(tmp_path, uninterrupted):
    f, _, full_dir = uninterrupted
    before = checksums(full_dir)
    bad_yaml = tmp_path / "m.yaml"
    bad_yaml.write_text("name: resume\ntask: {p: [1, 2\n")
    p = gs("run", bad_yaml, "--out", full_dir, check=False)
    assert p.returncode == 2 and "malformed YAML at line" in p.stderr
    unknown = write_spec(tmp_path, {**SPEC, "task": {**SPEC["task"], "name": "modularr"}}, "u.yaml")
    p = gs("run", unknown, "--out", full_dir, check=False)
    assert p.returncode == 2 and "valid tasks" in p.stderr and "modular" in p.stderr
    unknown_model = write_spec(tmp_path, {**SPEC, "model": {**SPEC["model"], "name": "rnn"}}, "um.yaml")
    p = gs("run", unknown_model, "--out", full_dir, check=False)
    assert p.returncode == 2 and "valid models: mlp, transformer" in p.stderr
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    p = gs("run", f, "--out", blocker / "sub", check=False)
    assert p.returncode == 2 and ("not writable" in p.stderr or "is a file" in p.stderr) and str(blocker) in p.stderr
    assert checksums(full_dir) == before


def _one_checkpoint(tmp_path, f):
    out = tmp_path / "ck"
    p = gs("run", f, "--out", out, env={"GSWEEP_TEST_KILL": "after_part:4"}, check=False)
    assert p.returncode == -signal.SIGKILL
    (ck,) = [p for p in (out / "checkpoints").iterdir() if p.is_dir()]
    return out, ck


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, uninterrupted):
    f = uninterrupted[0]
    out, ck = _one_checkpoint(tmp_path, f)
    for p in ck.rglob("*"):
        if p.is_file() and p.stat().st_size > 0 and "record" not in str(p):
            p.write_bytes(b"garbage" * 3)
    before = checksums(out)
    p = gs("run", f, "--out", out, check=False)
    assert p.returncode == 2 and "--fresh" in p.stderr and "damaged checkpoint" in p.stderr, p.stderr
    assert checksums(out) == before
    gs("run", f, "--out", out, "--fresh")


def test_foreign_checkpoint_is_refused(tmp_path, uninterrupted):
    f = uninterrupted[0]
    out, ck = _one_checkpoint(tmp_path, f)
    other = write_spec(tmp_path, {**SPEC, "name": "other", "train": {**SPEC["train"], "lr": 0.002}}, "o.yaml")
    out2, ck2 = _one_checkpoint(tmp_path / "o", other) if (tmp_path / "o").mkdir() is None else (None, None)
    import shutil
    shutil.rmtree(ck)
    shutil.copytree(ck2, ck)
    shutil.copy(ck2.parent / f"{ck2.name}.sha256.json", ck.parent / f"{ck.name}.sha256.json")  # its record too
    p = gs("run", f, "--out", out, check=False)
    assert p.returncode == 2 and "another sweep" in p.stderr and "--fresh" in p.stderr


def test_lock_names_the_holder_and_breaks_when_dead(tmp_path, uninterrupted):
    f = uninterrupted[0]
    out = tmp_path / "locked"
    out.mkdir()
    import json
    import socket
    (out / ".lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": "now"}))
    p = gs("run", f, "--out", out, check=False)
    assert p.returncode == 2 and f"pid {os.getpid()}" in p.stderr and socket.gethostname() in p.stderr
    dead = subprocess.Popen(["true"])
    dead.wait()
    (out / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": "then"}))
    p = gs("run", f, "--out", out)
    assert "breaking stale lock" in p.stderr
    assert not (out / ".lock").exists()


def test_out_of_memory_halves_the_chunk(tmp_path, uninterrupted):
    f, full, _ = uninterrupted
    d = {**SPEC, "train": {**SPEC["train"], "runs_per_chunk": 4}}
    g = write_spec(tmp_path, d, "oom.yaml")
    p = gs("run", g, "--out", tmp_path / "oom", env={"GSWEEP_TEST_OOM_ABOVE": "1", "XLA_FLAGS": "--xla_force_host_platform_device_count=1"})
    assert "out of memory with 4 runs per chunk" in p.stderr and "retrying with 2" in p.stderr
    assert_same(full, tables(tmp_path / "oom"))


def test_atomic_write_keeps_old_file_on_full_disk(tmp_path):
    target = tmp_path / "t.json"
    store.write_json(target, {"a": 1})

    def full_disk(tmp):
        with open(tmp, "w") as fh:
            fh.write("{partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        store._atomic(target, full_disk)
    assert store.read_json(target) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]


def test_merge_refuses_missing_results(tmp_path):
    with pytest.raises(UserError, match="not a results dir"):
        store.merge_command(type("A", (), {"dirs": [str(tmp_path)], "out": str(tmp_path / "o")})())
