"""The command line as a user meets it: ci-tiny end to end, validate, ls, and refused bad specs."""

import json
import subprocess

import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT, gsweep_cmd, tiny_spec_dict


def run(*args, check=True, cwd=ROOT):
    p = subprocess.run(gsweep_cmd(*args), capture_output=True, text=True, cwd=cwd, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"gsweep {' '.join(map(str, args))} failed:\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture(scope="module")
def ci_tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "r"
    p = run("run", "sweeps/ci-tiny.yaml", "--out", out)
    return out, p


def test_ci_tiny_writes_the_four_files_with_documented_columns(ci_tiny):
    out, p = ci_tiny
    for f in ["spec.yaml", "meta.json", "runs.parquet", "curves.parquet"]:
        assert (out / f).exists(), f
    runs = pd.read_parquet(out / "runs.parquet")
    curves = pd.read_parquet(out / "curves.parquet")
    for col in ["run_id", "group_id", "status", "steps_done", "t_fit", "t_gen", "delay", "phase",
                "final_train_acc", "final_test_acc", "final_train_loss", "final_test_loss",
                "task.data_frac", "train.weight_decay", "seed"]:
        assert col in runs.columns, col
    for col in ["run_id", "step", "split", "loss", "acc", "weight_norm", "train_loss_mean", "train_loss_osc",
                "fourier_sparsity"]:
        assert col in curves.columns, col
    assert set(curves["split"]) == {"train", "test"}
    assert runs["run_id"].is_unique and len(runs) == 8
    assert set(runs["phase"].dropna()) <= {"comprehension", "grokking", "memorization", "confusion"}
    assert (runs["steps_done"] == 300).all() and (runs["status"] == "done").all()
    # unreached steps are missing, never zero
    assert not (runs["t_gen"] == 0).any()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "done" and meta["precision"] == ["highest"] and meta["versions"]["jax"]
    # the tables hold no wall times
    assert not any("time" in c or c.endswith("_s") for c in runs.columns)
    # a progress line with model-steps/s was shown
    assert "model-steps/s" in p.stderr


def test_ls_lists_the_sweep(ci_tiny):
    out, _ = ci_tiny
    p = run("ls", out.parent)
    assert "ci-tiny" in p.stdout and "done" in p.stdout


def test_rerun_of_a_finished_sweep_trains_nothing(ci_tiny):
    out, _ = ci_tiny
    before = pd.read_parquet(out / "curves.parquet")
    p = run("run", "sweeps/ci-tiny.yaml", "--out", out)
    pd.testing.assert_frame_equal(before, pd.read_parquet(out / "curves.parquet"))
    assert "resuming" not in p.stderr


def test_run_then_phase_diagram_and_report_in_one_process(ci_tiny, tmp_path):
    """`gsweep run --phase-diagram --report` (what `make sweep` runs) writes what `gsweep plot
    phase-diagram DIR` and `gsweep report DIR` write; without the flags, neither is written."""
    out, _ = ci_tiny
    png, html = out / "plots" / "phase-diagram-phase.png", out / "report.html"
    assert not png.exists() and not html.exists()
    p = run("run", "sweeps/ci-tiny.yaml", "--out", out, "--phase-diagram", "--report", "--quiet")
    assert png.exists() and html.exists()
    assert f"wrote {png}" in p.stdout and f"wrote {html}" in p.stdout
    run("plot", "phase-diagram", out, "--out", tmp_path / "alone.png")
    assert (tmp_path / "alone.png").read_bytes() == png.read_bytes()
    run("report", out, "--out", tmp_path / "alone.html")
    assert abs((tmp_path / "alone.html").stat().st_size - html.stat().st_size) < 100  # up to its timestamp


def test_make_sweep_is_one_gsweep_process(tmp_path):
    import shutil
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    p = subprocess.run(["make", "-n", "sweep", f"VENV={tmp_path / 'venv'}", "SWEEP=sweeps/ci-tiny.yaml", "ACCEL=cpu"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    lines = [ln.rstrip() for ln in p.stdout.splitlines()]
    assert p.returncode == 0, p.stderr
    gs = [ln for ln in lines if "-m gsweep" in ln]
    assert len(gs) == 1 and gs[0].endswith("-m gsweep run sweeps/ci-tiny.yaml --phase-diagram --report")
    assert not any("yaml" in ln and "python -c" in ln for ln in lines)  # no interpreter just to read the name
    assert any("pip install -q --no-compile -e" in ln for ln in lines)
    assert any(ln.endswith("python scripts/precompile.py") for ln in lines)


def test_validate_prints_grid():
    p = run("validate", "sweeps/ci-tiny.yaml", "--set", "seeds=3")
    assert "12 runs" in p.stdout


BAD_CASES = {
    "unknown_key": ({"bogus_key_xyz": 1}, "bogus_key_xyz"),
    "wrong_type": ({"train": {"steps": "lots"}}, "train.steps"),
    "non_prime": ({"task": {"p": 15, "op": "div"}}, "task.p"),
    "frac": ({"task": {"data_frac": 1.2}}, "task.data_frac"),
    "neg_wd": ({"train": {"weight_decay": -1}}, "train.weight_decay"),
    "depth": ({"model": {"depth": 0}}, "model.depth"),
    "heads": ({"model": {"heads": 3}}, "model.heads"),
    "task_name": ({"task": {"name": "nope"}}, "valid tasks"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_spec_is_refused_before_anything_is_written(tmp_path, case):
    over, needle = BAD_CASES[case]
    d = tiny_spec_dict()
    for k, v in over.items():
        d[k] = {**d[k], **v} if isinstance(v, dict) and isinstance(d.get(k), dict) else v
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(d))
    p = run("run", f, "--out", tmp_path / "out", check=False)
    assert p.returncode == 2, p.stderr
    assert needle in p.stderr and "bad.yaml" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "out").exists()
