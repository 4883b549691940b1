"""Every shipped sweep file parses, validates and says in its header how to run it."""

from pathlib import Path

import pytest

from gsweep.spec import load_spec

SWEEPS_DIR = Path(__file__).resolve().parents[1] / "sweeps"
SWEEPS = sorted(SWEEPS_DIR.rglob("*.yaml"))  # sweeps/literature/ too


def test_there_are_sweeps():
    names = {p.name for p in SWEEPS}
    assert {"ci-tiny.yaml", "quick.yaml", "default.yaml"} <= names


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: str(p.relative_to(SWEEPS_DIR)))
def test_sweep_file_validates(path):
    spec = load_spec(path)
    runs = spec.runs()
    assert runs, path
    header = path.read_text().split("\n\n")[0]
    assert "gsweep run" in header or "make sweep" in header, f"{path.name}: header lacks the command"


STUDIES = sorted(p for p in SWEEPS if p.name.startswith("study-") and not p.stem.endswith("-gpu"))


def test_study_sweeps_shipped():
    assert {p.name for p in STUDIES} >= {"study-chain.yaml", "study-composition.yaml"}


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_study_sweep_sized_and_paired(path):
    """A study says its cost, has an accelerator sibling, and has the grid the issue asks for."""
    header = path.read_text().split("\n\n")[0]
    assert "Expected cost on 2 CPU cores" in header, f"{path.name}: header lacks the expected cost"
    gpu = path.with_name(path.stem + "-gpu.yaml")
    assert gpu.exists(), f"{path.name}: no accelerator sibling {gpu.name}"
    assert "Expected cost" in gpu.read_text().split("\n\n")[0]
    spec = load_spec(path)
    runs = [dict(r.settings) for r in spec.runs()]
    gpu_runs = [dict(r.settings) for r in load_spec(gpu).runs()]
    assert len(gpu_runs) >= len(runs)
    assert len({r["seed"] for r in runs}) >= 5
    depths = {int(r["model.depth"]) for r in runs}
    if path.name == "study-grok-chain.yaml":
        check_grok_chain_study(path, runs)
    elif spec.task["name"] == "modular_chain":
        assert len(runs) >= 200 and depths == {1, 2}
        assert len({r["task.data_frac"] for r in runs}) >= 3 and len({r["train.weight_decay"] for r in runs}) >= 2
    else:
        assert spec.task["name"] == "composition" and len(depths) >= 2
        assert len({r["task.phi"] for r in runs}) >= 4


def check_grok_chain_study(path, runs):
    """The pre-registered study (issue: findings, second edition): >= 300 full-batch runs, add beside an
    operation that is neither associative nor commutative, >= 8 seeds in every cell, a fine early
    evaluation grid, and a header that pre-registers the hypothesis, target, test and what counts as no."""
    from collections import Counter

    header = path.read_text().split("\n\n")[0].lower()
    for word in ("pre-registration", "hypothesis", "target", "permutation", "mantel", "holm", "counts as no"):
        assert word in header, f"{path.name}: header does not state {word!r}"
    assert len(runs) >= 300
    ops = {r["task.op"] for r in runs}
    assert "add" in ops and ops & {"sub", "x3_xy"}, ops
    assert {int(r["train.batch_size"]) for r in runs} == {0}
    assert all(int(r["train.early_evals"]) > 0 for r in runs)
    cells = Counter(tuple(sorted((k, v) for k, v in r.items() if k not in ("seed", "task.data_seed"))) for r in runs)
    assert min(cells.values()) >= 8, f"{path.name}: a cell has {min(cells.values())} seeds"
