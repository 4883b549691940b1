"""Issue 9: job-array shards merge to the unsharded result; 2 jax.distributed processes equal 1."""

import os
import random
import subprocess

import pandas as pd
import pytest
import yaml

from gsweep.errors import UserError
from gsweep.spec import from_dict
from gsweep.store import merge_dirs
from gsweep.train.sweep import run_sweep
from gsweep.train.units import Shard, parse_shard, shard_runs
from tests.conftest import ROOT, gsweep_cmd, tiny_spec_dict

D = tiny_spec_dict(name="dist", task={"data_frac": [0.3, 0.6]}, train={"weight_decay": [0.0, 1.0]}, seeds=2)
KEYS = {"curves.parquet": ["run_id", "step", "split"], "runs.parquet": ["run_id"]}


def tables(d):
    return {f: pd.read_parquet(d / f).sort_values(k).reset_index(drop=True) for f, k in KEYS.items()}


def assert_same(a, b):
    for f in KEYS:
        pd.testing.assert_frame_equal(a[f], b[f], check_exact=True)


def test_parse_shard_reads_slurm_arrays():
    assert parse_shard("1/4", env={}) == Shard(1, 4)
    assert parse_shard(None, env={"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "5",
                                  "SLURM_ARRAY_TASK_COUNT": "3"}) == Shard(2, 3)
    assert parse_shard(None, env={}) is None
    with pytest.raises(UserError, match="need 0 <= I < N"):
        parse_shard("3/3", env={})


def test_shards_are_a_balanced_partition():
    runs = from_dict({**D, "model": {**D["model"], "depth": [1, 2]}, "seeds": 3}).runs()
    parts = [shard_runs(runs, Shard(i, 4)) for i in range(4)]
    ids = [r.run_id for p in parts for r in p]
    assert sorted(ids) == sorted(r.run_id for r in runs)
    assert max(map(len, parts)) - min(map(len, parts)) <= 2
    assert [r.run_id for r in shard_runs(runs, Shard(1, 4))] == [r.run_id for r in parts[1]]  # deterministic


def test_shards_merge_to_the_unsharded_run(tmp_path):
    spec = from_dict(D)
    run_sweep(spec, tmp_path / "one", progress=False)
    for i in range(3):
        run_sweep(spec, tmp_path / f"s{i}", shard=Shard(i, 3), progress=False)
    merge_dirs([tmp_path / f"s{i}" for i in range(3)], tmp_path / "merged")
    assert_same(tables(tmp_path / "one"), tables(tmp_path / "merged"))
    with pytest.raises(UserError, match=r"missing shard\(s\) 2/3"):
        merge_dirs([tmp_path / "s0", tmp_path / "s1"], tmp_path / "partial")
    with pytest.raises(UserError, match="is in both"):
        merge_dirs([tmp_path / "s0", tmp_path / "s0", tmp_path / "s1", tmp_path / "s2"], tmp_path / "dup")


def test_two_jax_distributed_processes_equal_one(tmp_path):
    f = tmp_path / "d.yaml"
    f.write_text(yaml.safe_dump(D))
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    subprocess.run(gsweep_cmd("run", f, "--out", tmp_path / "one", "--quiet"), cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=600)
    port = random.randint(20000, 40000)
    procs = [subprocess.Popen(gsweep_cmd("run", f, "--coordinator", f"127.0.0.1:{port}", "--num-processes", 2,
                                         "--process-id", i, "--out", tmp_path / "multi", "--quiet"),
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    import json
    meta = json.loads((tmp_path / "multi" / "meta.json").read_text())
    assert meta["process_count"] == 2 and len(meta["devices"]) == 2
    assert_same(tables(tmp_path / "one"), tables(tmp_path / "multi"))
