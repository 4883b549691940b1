"""Test setup: 4 fake CPU devices before JAX is imported, a private compilation cache, and helpers
to make tiny sweeps.

Devices: the test process's JAX has 4 CPU devices, for the tests about sharding (they name their
devices: ``n_devices=4``, ``jax.devices()[:2]``); everything else runs on ONE device, as
GSWEEP_CPU_DEVICES=1 says (the default mesh, and every ``gsweep`` subprocess, which would otherwise
take one device per core): pytest-xdist's workers then do not oversubscribe the cores. A test about
device counts sets GSWEEP_CPU_DEVICES in its subprocess's environment."""

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("GSWEEP_CACHE_DIR", os.path.join(tempfile.gettempdir(), "gsweep-test-xla-cache"))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["GSWEEP_CPU_DEVICES"] = "1"

import jax  # noqa: E402
import pytest  # noqa: E402

# Start JAX's CPU backend now, with the 4 devices asked for above: an in-process gsweep.devices.configure()
# (cli.main, gsweep.run, tests of the rule) must not shrink this worker's JAX to 1 device before a
# sharding test runs (it only rewrites XLA_FLAGS for subprocesses once the backend is up).
assert len(jax.devices()) == 4 or "--xla_force_host_platform_device_count=4" not in os.environ["XLA_FLAGS"]

ROOT = Path(__file__).resolve().parents[1]


def tiny_spec_dict(**over):
    """A tiny modular sweep as a dict (override blocks by keyword)."""
    d = {
        "name": "tiny",
        "task": {"name": "modular", "p": 11, "op": "add", "data_frac": 0.5},
        "model": {"name": "transformer", "depth": 1, "d_model": 16, "heads": 2, "d_mlp": 32},
        "train": {"steps": 60, "eval_every": 20, "early_evals": 2, "lr": 0.003, "weight_decay": 1.0},
        "seeds": 1,
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict):
            d[k] = {**d[k], **v}
        else:
            d[k] = v
    return d


def gsweep_cmd(*args):
    return [sys.executable, "-m", "gsweep", *map(str, args)]


@pytest.fixture
def root():
    return ROOT
