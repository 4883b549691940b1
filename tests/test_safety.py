"""Issue 13: nothing lost, nothing injected. One fixture per class of the adversarial probe; each
asserts the one-line message, the exit status, and that nothing in the results dir changed unless
changing it is the command's job."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from gsweep import filters
from gsweep.cli import main
from gsweep.errors import UserError
from gsweep.spec import SpecError, from_dict
from tests.conftest import ROOT, gsweep_cmd, tiny_spec_dict
from tests.synthetic_results import write_synthetic


def tree(d: Path) -> dict:
    d = Path(d)
    if not d.exists():
        return {}
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(d.rglob("*"))}


def cli(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def assert_error(rc: int, err: str, *needles: str) -> None:
    assert rc == 2, (rc, err)
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("gsweep: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def write_spec(path: Path, d: dict) -> Path:
    path.write_text(yaml.safe_dump(d))
    return path


TINY = tiny_spec_dict(name="safe", train={"steps": 40, "eval_every": 20, "chunk_steps": 20, "early_evals": 0})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny sweep (2 runs), trained in-process; tests work on copies."""
    from gsweep.spec import from_dict as fd
    from gsweep.train.sweep import run_sweep
    tmp = tmp_path_factory.mktemp("trained")
    d = {**TINY, "seeds": 2}
    run_sweep(fd(d), tmp / "r", progress=False)
    return tmp / "r", d


@pytest.fixture
def copy_of(trained, tmp_path):
    def make(name="r"):
        dst = tmp_path / name
        shutil.copytree(trained[0], dst)
        return dst
    return make


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("syn") / "syn", seeds=2)


# ------------------------------------------------------------------------------------------------
# 1. user strings are never evaluated as code


ATTACKS = [
    "__import__('os').system('touch PWNED')",
    "seed.__class__.__init__.__globals__",
    "@pd.io.common.os.system('touch PWNED')",
    "`seed`.__class__ == 1",
    "seed == seed.__class__(1)",
    "(lambda: 1)()",
    "seed in [print(1)]",
    "phase[0] == 'g'",
    "seed + 1 > 2",
    "run_id.str.len() > 3",
]


@pytest.mark.parametrize("expr", ATTACKS)
def test_filter_refuses_code(expr):
    import numpy as np
    df = pd.DataFrame({"seed": [0, 1], "phase": ["grokking", None], "run_id": ["a", "b"],
                       "train.weight_decay": np.array([0.0, 1.0])})
    with pytest.raises(UserError) as e:
        filters.mask(df, expr, "--where")
    assert "\n" not in str(e.value) and str(e.value).startswith("--where")


def test_filter_semantics():
    df = pd.DataFrame({"seed": [0, 1, 2], "phase": ["grokking", None, "memorization"],
                       "train.weight_decay": [0.0, 1.0, 1.0], "ok": [True, False, True]})
    m = lambda e: list(filters.mask(df, e))  # noqa: E731
    assert m("train.weight_decay == 1.0") == [False, True, True]
    assert m("`train.weight_decay` > 0 and seed < 2") == [False, True, False]
    assert m("phase in ['grokking', None]") == [True, True, False]
    assert m("phase not in ['grokking']") == [False, True, True]
    assert m("not (seed == 1) or phase == None") == [True, True, True]
    assert m("0 < seed <= 2 and ok") == [False, False, True]
    assert m("(seed == 0) | (seed == 2)") == [True, False, True]
    assert m("seed >= -1 and ~ok") == [False, True, False]
    assert filters.columns(filters.parse("a.b == 1 and `c d` in [1]")) == {"a.b", "c d"}


def test_plot_where_attack_is_refused_and_runs_nothing(capsys, synthetic, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = tree(synthetic)
    rc, _, err = cli(capsys, "plot", "curves", synthetic, "--where",
                     "train.weight_decay.__class__.__init__.__globals__['os'].system('touch PWNED') == 0")
    assert_error(rc, err, "--where")
    assert not (tmp_path / "PWNED").exists() and tree(synthetic) == before
    rc, _, err = cli(capsys, "plot", "curves", synthetic, "--where", "nosuchcol == 1")
    assert_error(rc, err, "unknown column 'nosuchcol'")


@pytest.mark.parametrize("where,needle", [
    ("__import__('os').system('touch PWNED')", "Call is not allowed"),
    ("train.lr.__class__ == 1", "unknown column"),
    ("nosuch > 1", "unknown column 'nosuch'"),
    ("seed ==", "not a valid filter"),
])
def test_snapshot_where_validated_before_anything_trains(capsys, tmp_path, where, needle):
    f = write_spec(tmp_path / "s.yaml", {**TINY, "analysis": {"snapshot_where": where}})
    rc, _, err = cli(capsys, "validate", f)
    assert_error(rc, err, "analysis.snapshot_where", needle, "s.yaml")
    rc, _, err = cli(capsys, "run", f, "--out", tmp_path / "out")
    assert_error(rc, err, "analysis.snapshot_where")
    assert not (tmp_path / "out").exists() and not (tmp_path / "PWNED").exists()


def test_snapshot_where_valid_filter_passes():
    spec = from_dict({**TINY, "analysis": {"snapshot_where": "phase == 'grokking' and train.weight_decay > 0.5 "
                                                             "and final_test_acc > 0.9 and t_hop2 > 0"}})
    assert spec.analysis["snapshot_where"]


# ------------------------------------------------------------------------------------------------
# 2. gsweep deletes only what it wrote, in a dir it can prove is a results dir


@pytest.mark.parametrize("name,needle", [(".", "'.'"), ("..", "'..'"), ("a/b", "'/'"), ("a\\b", "'\\\\'"),
                                         ("x\x00y", "'\\x00'"), ("n" * 300, "at most 200 bytes"),
                                         (" padded", "space")])
def test_name_is_one_plain_path_component(capsys, tmp_path, name, needle):
    f = write_spec(tmp_path / "s.yaml", {**TINY, "name": name})
    rc, _, err = cli(capsys, "validate", f)
    assert_error(rc, err, "name", needle)


def test_fresh_refuses_a_dir_gsweep_cannot_prove_it_wrote(capsys, tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "spec.yaml").write_text("name: not-gsweep\n")
    (d / "thesis.tex").write_text("precious")
    before = tree(d)
    f = write_spec(tmp_path / "s.yaml", TINY)
    rc, _, err = cli(capsys, "run", f, "--out", d, "--fresh")
    assert_error(rc, err, "--fresh deletes only", str(d))
    assert tree(d) == before


def test_out_at_a_results_root_is_refused(capsys, tmp_path, copy_of):
    root = tmp_path / "results"
    root.mkdir()
    copy_of("results/one")
    before = tree(root)
    f = write_spec(tmp_path / "s.yaml", TINY)
    for extra in ([], ["--fresh"]):
        rc, _, err = cli(capsys, "run", f, "--out", root, *extra)
        assert_error(rc, err, "not a gsweep results dir")
    assert tree(root) == before


def test_fresh_deletes_only_gsweep_files(capsys, tmp_path, copy_of):
    from gsweep.train.resultsdir import clear_for_fresh, proven_results_dir
    d = copy_of()
    (d / "notes.txt").write_text("keep me")
    (d / "analysis").mkdir()
    (d / "analysis" / "fig.png").write_bytes(b"png")
    assert proven_results_dir(d)
    kept = clear_for_fresh(d)
    assert sorted(kept) == ["analysis", "notes.txt"]
    assert sorted(p.name for p in d.iterdir()) == ["analysis", "notes.txt"]


# ------------------------------------------------------------------------------------------------
# 3. damaged checkpoints and part files are refused, naming the file


def _flip(path: Path, at: float = 0.5) -> None:
    b = bytearray(path.read_bytes())
    b[int(len(b) * at)] ^= 0x01
    path.write_bytes(bytes(b))


def _largest_file(d: Path) -> Path:
    return max((p for p in d.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def test_flipped_bit_in_checkpoint_is_refused_then_rollback_gives_same_numbers(capsys, trained, copy_of):
    d = copy_of()
    ref = pd.read_parquet(d / "curves.parquet")
    f = write_spec(d.parent / "s.yaml", trained[1])
    # an interrupted unit: its record gone, so the resume restores from the latest checkpoint
    for u in (d / "units").glob("*.json"):
        u.unlink()
    ck = next(p for p in (d / "checkpoints").iterdir() if p.is_dir())
    steps = sorted(int(p.name) for p in ck.iterdir() if p.name.isdigit())
    assert len(steps) == 2, steps  # the previous step is kept for a rollback
    bad = _largest_file(ck / str(steps[-1]))
    _flip(bad)
    before = tree(d)
    rc, _, err = cli(capsys, "run", f, "--out", d, "--quiet")
    assert_error(rc, err, "damaged checkpoint", str(bad), "--rollback", "--fresh")
    assert tree(d) == before
    rc, _, err = cli(capsys, "run", f, "--out", d, "--quiet", "--rollback")
    assert rc == 0, err
    assert "rolling back" in err
    pd.testing.assert_frame_equal(ref, pd.read_parquet(d / "curves.parquet"), check_exact=True)


def test_flipped_bit_in_part_file_is_refused(capsys, trained, copy_of):
    d = copy_of()
    f = write_spec(d.parent / "s.yaml", trained[1])
    part = sorted((d / "parts").glob("*.parquet"))[0]
    _flip(part, 0.6)
    before = tree(d)
    rc, _, err = cli(capsys, "run", f, "--out", d, "--quiet")
    assert_error(rc, err, "damaged part file", str(part))
    assert tree(d) == before


# ------------------------------------------------------------------------------------------------
# 4. tables are a pure function of the finished runs


def test_extend_of_an_interrupted_dir_has_no_duplicates_and_equals_a_fresh_run(capsys, trained, copy_of, tmp_path):
    d = copy_of()
    # interrupted: the unit's record gone, its part files and checkpoints left behind
    for u in (d / "units").glob("*.json"):
        u.unlink()
    stale = {p.name for p in (d / "parts").iterdir()}
    ext = {**trained[1], "seeds": 3, "train": {**trained[1]["train"], "runs_per_chunk": 1}}
    f = write_spec(tmp_path / "ext.yaml", ext)
    rc, _, err = cli(capsys, "run", f, "--out", d, "--extend", "--quiet")
    assert rc == 0, err
    rc, _, err = cli(capsys, "run", f, "--out", tmp_path / "fresh", "--quiet")
    assert rc == 0, err
    key = ["run_id", "step", "split"]
    a = pd.read_parquet(d / "curves.parquet")
    b = pd.read_parquet(tmp_path / "fresh" / "curves.parquet")
    assert not a.duplicated(key).any() and len(a) == len(b)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    ra, rb = pd.read_parquet(d / "runs.parquet"), pd.read_parquet(tmp_path / "fresh" / "runs.parquet")
    pd.testing.assert_frame_equal(ra, rb, check_exact=True)
    assert not stale & {p.name for p in (d / "parts").iterdir()}  # the superseded unit's files are gone
    units = {p.stem for p in (d / "units").glob("*.json")}
    assert {p.name.split(".")[0] for p in (d / "checkpoints").iterdir()} <= units


def test_tables_ignore_parts_of_units_that_did_not_finish(trained, copy_of):
    from gsweep.spec import from_dict as fd
    from gsweep.train.tables import build_tables
    d = copy_of()
    spec = fd(trained[1])
    _, ref = build_tables(d, spec.runs(), spec)
    for p in (d / "parts").glob("*.parquet"):  # a superseded unit's copy of the same rows
        shutil.copy(p, p.with_name("uffffffffffff-" + p.name.rsplit("-", 1)[1]))
    _, again = build_tables(d, spec.runs(), spec)
    pd.testing.assert_frame_equal(ref, again, check_exact=True)


# ------------------------------------------------------------------------------------------------
# 5. sizes are bounded before anything is materialised


@pytest.mark.parametrize("over,needle", [
    ({"train": {"lr": {"logspace": [-5, -1, 300]}, "weight_decay": {"linspace": [0, 1, 300]},
                "b1": {"linspace": [0, 0.9, 300]}}}, "27,000,000 runs"),
    ({"seeds": 10**9}, "seeds: at most"),
    ({"train": {"lr": {"logspace": [-5, -1, 100_000_000]}}}, "logspace of 100,000,000 points"),
    ({"train": {"lr": [{"range": [0, 10**12]}]}}, "range of"),
    ({"train": {"steps": 10**12}}, "train.steps: at most"),
    ({"train": {"steps": "1e12"}}, "train.steps: at most"),
    ({"train": {"steps": 10**8, "eval_every": 1}}, "evaluations per run"),
    ({"task": {"p": 1000003}}, "task.p"),
    ({"model": {"d_model": 2**20, "heads": 1}}, "parameters per run"),
    ({"train": {"lr": {"logspace": [-5, -1, 400]}, "weight_decay": {"linspace": [0, 1, 400]}}}, "--allow-large"),
])
def test_sizes_are_bounded_in_validation(capsys, tmp_path, over, needle):
    d = tiny_spec_dict(name="big", **over)
    f = write_spec(tmp_path / "s.yaml", d)
    t0 = time.perf_counter()
    rc, _, err = cli(capsys, "validate", f)
    assert_error(rc, err, needle)
    rc, _, err = cli(capsys, "run", f, "--out", tmp_path / "out")
    assert_error(rc, err, needle)
    assert not (tmp_path / "out").exists()
    assert time.perf_counter() - t0 < 30


def test_validate_states_the_grid_size(capsys, tmp_path):
    f = write_spec(tmp_path / "s.yaml", tiny_spec_dict(seeds=3, train={"lr": [0.001, 0.01]}))
    rc, out, _ = cli(capsys, "validate", f)
    assert rc == 0 and "6 runs" in out


# ------------------------------------------------------------------------------------------------
# 6. files and paths


def test_spec_files_that_are_not_utf8_text(capsys, tmp_path):
    cases = {
        "latin1.yaml": (yaml.safe_dump(TINY).replace("safe", "s\xe9").encode("latin-1"), "not UTF-8"),
        "utf16.yaml": (yaml.safe_dump(TINY).encode("utf-16"), "UTF-8"),
    }
    for name, (data, needle) in cases.items():
        (tmp_path / name).write_bytes(data)
        rc, _, err = cli(capsys, "validate", tmp_path / name)
        assert_error(rc, err, name, needle)
    rc, _, err = cli(capsys, "validate", tmp_path)
    assert_error(rc, err, "is a directory")


def test_out_paths_that_cannot_be_results_dirs(capsys, tmp_path):
    f = write_spec(tmp_path / "s.yaml", TINY)
    (tmp_path / "afile").write_text("x")
    before = tree(tmp_path)
    for out, needle in ((tmp_path / "afile", "is a file"), ("/dev/null", "is a file"),
                        (tmp_path / "afile" / "sub", "is a file"), (tmp_path / ("n" * 300), "longer than 255")):
        rc, _, err = cli(capsys, "run", f, "--out", out)
        assert_error(rc, err, needle)
    assert tree(tmp_path) == before


def test_merge_out_a_file_and_unsharded_dirs(capsys, tmp_path, synthetic):
    (tmp_path / "afile").write_text("x")
    rc, _, err = cli(capsys, "merge", synthetic, "--out", tmp_path / "afile")
    assert_error(rc, err, "is a file")
    rc, _, err = cli(capsys, "merge", synthetic, "--out", tmp_path / "m")
    assert_error(rc, err, "is not a shard")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("env,needle", [
    ({"SLURM_ARRAY_TASK_ID": "abc", "SLURM_ARRAY_TASK_COUNT": "4"}, "SLURM_ARRAY_TASK_ID='abc'"),
    ({"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_COUNT": "4"}, "outside the array"),
    ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "x4"}, "SLURM_ARRAY_TASK_COUNT"),
])
def test_bad_slurm_ids(capsys, tmp_path, monkeypatch, env, needle):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    f = write_spec(tmp_path / "s.yaml", TINY)
    rc, _, err = cli(capsys, "run", f, "--out", tmp_path / "out")
    assert_error(rc, err, needle)
    assert not (tmp_path / "out").exists()


def test_shard_with_no_runs_is_refused_before_writing(capsys, tmp_path):
    f = write_spec(tmp_path / "s.yaml", TINY)
    rc, _, err = cli(capsys, "run", f, "--out", tmp_path / "out", "--shard", "7/8")
    assert_error(rc, err, "shard 7/8 holds none")
    assert not (tmp_path / "out").exists()


def test_plot_out_into_a_missing_folder(capsys, tmp_path, synthetic):
    before = tree(synthetic)
    rc, _, err = cli(capsys, "plot", "grok-time", synthetic, "--out", tmp_path / "nope" / "g.png")
    assert_error(rc, err, "no such folder")
    assert not (tmp_path / "nope").exists() and tree(synthetic) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_results_dir_for_plot(capsys, tmp_path, synthetic):
    d = tmp_path / "ro"
    shutil.copytree(synthetic, d)
    os.chmod(d, 0o555)
    try:
        rc, _, err = cli(capsys, "plot", "grok-time", d)
        assert_error(rc, err)
    finally:
        os.chmod(d, 0o755)


# ------------------------------------------------------------------------------------------------
# 7. damaged or odd results dirs


DAMAGE = {
    "meta": ("meta.json", lambda p: p.write_text("{not json")),
    "spec": ("spec.yaml", lambda p: p.write_text("name: [unclosed\n")),
    "runs_truncated": ("runs.parquet", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])),
    "curves_garbage": ("curves.parquet", lambda p: p.write_bytes(b"\x00garbage" * 50)),
}
READERS = [("summarize",), ("plot", "phase-diagram"), ("plot", "curves"), ("plot", "grok-time"), ("analyze",)]


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_results_dir_for_every_reader(capsys, tmp_path, synthetic, damage):
    d = tmp_path / "d"
    shutil.copytree(synthetic, d)
    fname, hurt = DAMAGE[damage]
    hurt(d / fname)
    before = tree(d)
    refused = 0
    for cmd in READERS:
        rc, _, err = cli(capsys, *cmd, d)
        if rc == 0 and fname == "curves.parquet" and cmd != ("plot", "curves"):
            continue  # a reader that does not need the curves
        assert_error(rc, err)
        assert fname in err or "damaged" in err, err
        refused += 1
    assert refused >= 2
    rc, out, err = cli(capsys, "ls", tmp_path)
    assert rc == 0, err
    if damage in ("meta", "runs_truncated"):
        assert "DAMAGED" in out
    rc, _, err = cli(capsys, "merge", d, "--out", tmp_path / "m")
    assert_error(rc, err)
    shutil.rmtree(d / "plots", ignore_errors=True)  # figures of the readers that did not need the file
    assert tree(d) == before


def test_ls_lists_the_others_when_one_is_damaged(capsys, tmp_path, synthetic):
    for n in ("a", "b"):
        shutil.copytree(synthetic, tmp_path / n)
    (tmp_path / "a" / "meta.json").write_text("garbage")
    rc, out, err = cli(capsys, "ls", tmp_path)
    assert rc == 0
    lines = out.splitlines()
    assert any("DAMAGED" in ln and "/a" in ln for ln in lines)
    assert any("done" in ln and "/b" in ln for ln in lines)


def test_zero_row_runs_for_every_plot(capsys, tmp_path, synthetic):
    d = tmp_path / "z"
    shutil.copytree(synthetic, d)
    r = pd.read_parquet(d / "runs.parquet")
    r.iloc[:0].to_parquet(d / "runs.parquet")
    for cmd in READERS:
        rc, _, err = cli(capsys, *cmd, d)
        assert_error(rc, err, "holds no runs")


def test_damaged_unit_record_and_meta_for_run(capsys, trained, copy_of):
    for name, hurt in (("units", lambda d: next((d / "units").glob("*.json")).write_text("{")),
                       ("meta", lambda d: (d / "meta.json").write_text("[1,")),
                       ("spec", lambda d: (d / "spec.yaml").write_bytes(b"\xff\xfe"))):
        d = copy_of(f"r-{name}")
        hurt(d)
        f = write_spec(d.parent / "s.yaml", trained[1])
        before = tree(d)
        rc, _, err = cli(capsys, "run", f, "--out", d, "--quiet")
        assert_error(rc, err, "damaged")
        assert tree(d) == before


@pytest.mark.parametrize("content", ["", "garbage{", '{"pid": "x"}'])
def test_empty_or_garbage_lock_is_broken_when_old(capsys, trained, copy_of, content):
    d = copy_of()
    f = write_spec(d.parent / "s.yaml", trained[1])
    (d / ".lock").write_text(content)
    old = time.time() - 60
    os.utime(d / ".lock", (old, old))
    rc, _, err = cli(capsys, "run", f, "--out", d, "--quiet")
    assert rc == 0, err
    assert "breaking unreadable lock" in err and not (d / ".lock").exists()


def test_dead_pid_lock_and_leftover_temp_from_first_write(capsys, tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    (d / ".lock").write_text(json.dumps({"pid": 2**22 + 12345, "host": os.uname().nodename, "since": "x"}))
    (d / ".spec.yaml.abc123.tmp").write_text("partial")
    f = write_spec(tmp_path / "s.yaml", TINY)
    rc, _, err = cli(capsys, "run", f, "--out", d, "--quiet")
    assert rc == 0, err
    assert not (d / ".spec.yaml.abc123.tmp").exists() and (d / "runs.parquet").exists()


# ------------------------------------------------------------------------------------------------
# 8. two signals stop cleanly


def test_two_sigints_stop_cleanly_and_resume_works(tmp_path):
    d = tiny_spec_dict(name="sig", train={"steps": 1000, "eval_every": 20, "chunk_steps": 20}, seeds=2)
    f = write_spec(tmp_path / "s.yaml", d)
    out = tmp_path / "out"
    proc = subprocess.Popen(gsweep_cmd("run", f, "--out", out, "--quiet"), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list((out / "parts").glob("*-00002.parquet")):
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "second SIGINT" in err
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "interrupted" and not (out / ".lock").exists()
    p = subprocess.run(gsweep_cmd("run", f, "--out", out, "--quiet"), cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr
    assert "resuming at step" in p.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "done" and [h["status"] for h in meta["history"]] == ["interrupted", "done"]
    assert (pd.read_parquet(out / "runs.parquet")["steps_done"] == 1000).all()


# ------------------------------------------------------------------------------------------------
# 9. meta history is appended, never lost


def test_rerun_keeps_meta_history(capsys, trained, copy_of):
    d = copy_of()
    f = write_spec(d.parent / "s.yaml", trained[1])
    m0 = json.loads((d / "meta.json").read_text())
    rc, _, err = cli(capsys, "run", f, "--out", d, "--quiet")
    assert rc == 0, err
    m1 = json.loads((d / "meta.json").read_text())
    assert m1["started"] == m0["started"]
    assert m1["groups"] == m0["groups"] and m1["groups"]
    assert len(m1["history"]) == len(m0["history"]) + 1
    assert m1["history"][0] == m0["history"][0]
    assert m1["history"][-1]["mode"] == "resume" and m1["status"] == "done"


# ------------------------------------------------------------------------------------------------
# 10. numeric strings for numeric keys


def test_numeric_strings_are_numbers():
    spec = from_dict(tiny_spec_dict(train={"lr": "1e-3", "weight_decay": ["1e-2", 1], "steps": "1e2",
                                           "eval_every": "20"}))
    assert spec.train["lr"] == 0.001 and spec.train["weight_decay"] == (0.01, 1.0)
    assert spec.train["steps"] == 100 and isinstance(spec.train["steps"], int)
    with pytest.raises(SpecError, match="train.lr: expected float, got str 'fast'"):
        from_dict(tiny_spec_dict(train={"lr": "fast"}))
    with pytest.raises(SpecError, match="train.steps: expected int"):
        from_dict(tiny_spec_dict(train={"steps": "12.5"}))
    # the YAML 1.1 quirk itself: 1e-3 without a dot is a string to PyYAML
    assert yaml.safe_load("lr: 1e-3")["lr"] == "1e-3"
    assert from_dict(yaml.safe_load(yaml.safe_dump(tiny_spec_dict())
                                    .replace("lr: 0.003", "lr: 3e-3"))).train["lr"] == 0.003


# ------------------------------------------------------------------------------------------------
# Issue 23. 1: links. checkpoints/ and parts/ may be links to scratch: gsweep deletes inside them only
# what it verifiably made; it never reads or deletes through any other link.


def _scratch(tmp_path: Path) -> Path:
    s = tmp_path / "scratch"
    (s / "unrelated-project").mkdir(parents=True)
    (s / "unrelated-project" / "data.txt").write_text("theirs")
    (s / "u0123456789ab").mkdir()  # named like a unit, but not gsweep's
    (s / "u0123456789ab" / "notes").write_text("theirs")
    (s / "x.parquet").write_bytes(b"theirs")
    (s / "u0123456789ab-00000.parquet").write_bytes(b"theirs, named like a part")
    return s


def _link_folder(d: Path, name: str, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for p in (d / name).iterdir():
        shutil.move(str(p), str(target / p.name))
    (d / name).rmdir()
    (d / name).symlink_to(target, target_is_directory=True)


def test_links_to_scratch_are_used_and_nothing_foreign_is_deleted(capsys, trained, copy_of, tmp_path):
    d = copy_of()
    scratch = _scratch(tmp_path)
    _link_folder(d, "checkpoints", scratch / "ck")
    _link_folder(d, "parts", scratch / "pa")
    for sub in ("ck", "pa"):
        shutil.copytree(scratch / "unrelated-project", scratch / sub / "unrelated-project")
        shutil.copytree(scratch / "u0123456789ab", scratch / sub / "u0123456789ab")
        shutil.copy(scratch / "x.parquet", scratch / sub / "x.parquet")
        shutil.copy(scratch / "u0123456789ab-00000.parquet", scratch / sub / "u0123456789ab-00000.parquet")
    foreign = {k: v for k, v in tree(scratch).items() if "u0123456789ab" in k or "unrelated" in k or "x.parquet" in k}
    outside = tree(tmp_path / "elsewhere")
    spec = write_spec(tmp_path / "s.yaml", trained[1])
    runs0 = pd.read_parquet(d / "runs.parquet")
    rc, _, err = cli(capsys, "run", spec, "--out", d, "--quiet")  # a finished dir: stale units are cleared
    assert rc == 0, err
    pd.testing.assert_frame_equal(pd.read_parquet(d / "runs.parquet"), runs0, check_exact=True)
    rc, _, err = cli(capsys, "run", spec, "--out", d, "--quiet", "--fresh")  # --fresh clears what gsweep made
    assert rc == 0, err
    assert "u0123456789ab" in err  # listed as kept
    now = tree(scratch)
    assert {k: now.get(k) for k in foreign} == foreign, "a foreign file in a linked folder changed"
    assert (d / "checkpoints").is_symlink() and (d / "parts").is_symlink()
    pd.testing.assert_frame_equal(pd.read_parquet(d / "runs.parquet"), runs0, check_exact=True)
    assert tree(tmp_path / "elsewhere") == outside


@pytest.mark.parametrize("what", ["spec.yaml", "meta.json", ".gsweep", ".lock", "units", "part", "ckpt", "png"])
def test_links_gsweep_did_not_make_are_never_followed(capsys, trained, copy_of, tmp_path, what):
    d = copy_of()
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG not yours")
    spec = write_spec(tmp_path / "s.yaml", trained[1])
    if what in ("spec.yaml", "meta.json", ".gsweep", ".lock"):
        if (d / what).exists():
            os.unlink(d / what)
        (d / what).symlink_to(secret)
    elif what == "units":
        u = next((d / "units").glob("*.json"))
        shutil.copy(u, tmp_path / "unit.json")
        u.unlink()
        u.symlink_to(tmp_path / "unit.json")
    elif what == "part":
        p = next((d / "parts").glob("*.parquet"))
        shutil.copy(p, tmp_path / "part.parquet")
        p.unlink()
        p.symlink_to(tmp_path / "part.parquet")
    elif what == "ckpt":
        c = next(p for p in (d / "checkpoints").iterdir() if p.is_dir())
        shutil.move(str(c), str(tmp_path / "ck"))
        c.symlink_to(tmp_path / "ck", target_is_directory=True)
    else:
        (d / "plots").mkdir(exist_ok=True)
        (d / "plots" / "analyze-x.png").symlink_to(secret)
    before_out = tree(tmp_path)
    if what == "png":
        rc, _, err = cli(capsys, "report", d)
        assert rc == 0, err
        assert "left out" in err
        import base64
        assert base64.b64encode(secret.read_bytes()).decode() not in (d / "report.html").read_text()
        return
    if what == ".gsweep":
        os.unlink(d / "meta.json")  # only the linked marker could prove the dir is gsweep's
        rc, _, err = cli(capsys, "run", spec, "--out", d, "--fresh")
        assert_error(rc, err, "--fresh deletes only")
    else:
        rc, _, err = cli(capsys, "run", spec, "--out", d, "--quiet")
        if what == "ckpt":
            rc, _, err = cli(capsys, "run", spec, "--out", d, "--fresh", "--quiet")
            assert_error(rc, err, "is a link")  # neither deleted nor read
            assert tree(tmp_path / "ck") == {k[3:]: v for k, v in before_out.items() if k.startswith("ck/")}
            return
        assert_error(rc, err, what if what in ("spec.yaml", "meta.json", ".lock") else "link")
    assert {k: v for k, v in tree(tmp_path).items() if not k.startswith("r/")} == \
        {k: v for k, v in before_out.items() if not k.startswith("r/")}


# ------------------------------------------------------------------------------------------------
# Issue 23. 2: a table is never rewritten with fewer finished runs or rows than the evidence supports


def _tables(d: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.read_parquet(d / "runs.parquet"), pd.read_parquet(d / "curves.parquet")


def _rm_part(p: Path) -> None:
    p.unlink()
    p.with_name(p.name + ".sha256").unlink(missing_ok=True)


@pytest.mark.parametrize("loss", ["parts", "one_part", "units_and_parts", "checkpoint_beyond_parts"])
def test_missing_evidence_retrains_and_tables_never_shrink(capsys, trained, copy_of, tmp_path, loss):
    d = copy_of()
    runs0, curves0 = _tables(d)
    parts = sorted((d / "parts").glob("*.parquet"))
    assert len(parts) >= 2
    if loss == "parts":
        shutil.rmtree(d / "parts")
    elif loss == "one_part":
        _rm_part(parts[0])
    elif loss == "units_and_parts":
        shutil.rmtree(d / "units")
        shutil.rmtree(d / "parts")
    else:  # a unit interrupted after chunk 1 whose checkpoints were copied from a dir that got further
        shutil.rmtree(d / "units")
        _rm_part(parts[1])
    spec = write_spec(tmp_path / "s.yaml", trained[1])
    outside = {k: v for k, v in tree(tmp_path).items() if not k.startswith("r/")}
    rc, _, err = cli(capsys, "run", spec, "--out", d, "--quiet")
    assert rc == 0, err
    runs1, curves1 = _tables(d)
    pd.testing.assert_frame_equal(curves1, curves0, check_exact=True)
    pd.testing.assert_frame_equal(runs1, runs0, check_exact=True)
    assert {k: v for k, v in tree(tmp_path).items() if not k.startswith("r/")} == outside


def test_a_table_that_would_shrink_is_refused(trained, copy_of):
    from gsweep.spec import from_dict as fd
    from gsweep.train.tables import build_tables, check_no_shrink
    d = copy_of()
    spec = fd(trained[1])
    table, curves = build_tables(d, spec.runs(), spec)
    before = tree(d)
    with pytest.raises(UserError, match="would lose 8 curve rows|would lose"):
        check_no_shrink(d, table, curves.iloc[:-1])
    with pytest.raises(UserError, match="finished run"):
        check_no_shrink(d, table.assign(status="pending"), curves)
    check_no_shrink(d, table, curves)  # the same evidence: fine
    assert tree(d) == before


# ------------------------------------------------------------------------------------------------
# Issue 23. 3: every file gsweep trusts is verified; a missing record means unverified, not fine


def test_checkpoint_without_its_record_is_not_trusted(capsys, trained, copy_of, tmp_path):
    d = copy_of()
    runs0, curves0 = _tables(d)
    shutil.rmtree(d / "units")  # the unit is unfinished: its checkpoint would be restored
    for p in (d / "checkpoints").glob("*.sha256.json"):
        p.unlink()
    _flip(_largest_file(d / "checkpoints"))
    spec = write_spec(tmp_path / "s.yaml", trained[1])
    rc, _, err = cli(capsys, "run", spec, "--out", d, "--quiet")
    assert rc == 0, err
    assert "unverified" in err
    runs1, curves1 = _tables(d)
    pd.testing.assert_frame_equal(curves1, curves0, check_exact=True)
    pd.testing.assert_frame_equal(runs1, runs0, check_exact=True)


@pytest.mark.parametrize("damage", ["part_flip_no_record", "unit_steps", "old_unit_steps", "table_flip"])
def test_damage_without_or_against_records_is_refused(capsys, trained, copy_of, tmp_path, damage):
    d = copy_of()
    if damage == "part_flip_no_record":  # the unit record still knows the part's checksum
        p = sorted((d / "parts").glob("*.parquet"))[0]
        p.with_name(p.name + ".sha256").unlink()
        _flip(p)
        needle = "damaged part file"
    elif damage in ("unit_steps", "old_unit_steps"):
        u = next((d / "units").glob("*.json"))
        rec = json.loads(u.read_text())
        if damage == "old_unit_steps":  # a record written before records carried checksums
            rec.pop("sha256")
            rec.pop("parts")
        for info in rec["runs"].values():
            info["steps_done"] += 8
        u.write_text(json.dumps(rec))
        needle = "damaged unit record"
    else:
        runs0 = pd.read_parquet(d / "runs.parquet")
        _flip(d / "runs.parquet", 0.3)
        needle = "checksum mismatch"
    before = tree(d)
    spec = write_spec(tmp_path / "s.yaml", trained[1])
    if damage == "table_flip":  # readers refuse it; `run` rebuilds it from the verified parts
        for cmd in (["summarize", d], ["plot", "curves", d], ["report", d]):
            rc, _, err = cli(capsys, *cmd)
            assert_error(rc, err, needle)
        assert tree(d) == before
        rc, _, err = cli(capsys, "run", spec, "--out", d, "--quiet")
        assert rc == 0, err
        pd.testing.assert_frame_equal(pd.read_parquet(d / "runs.parquet"), runs0, check_exact=True)
        return
    rc, _, err = cli(capsys, "run", spec, "--out", d, "--quiet")
    assert_error(rc, err, needle)
    assert tree(d) == before


def test_tables_without_a_record_are_read_as_unverified(capsys, copy_of):
    d = copy_of()
    (d / "runs.parquet.sha256").unlink()
    rc, _, err = cli(capsys, "summarize", d)
    assert rc == 0, err
    assert "unverified" in err


def test_merge_refuses_inconsistent_shards():
    from gsweep.store import check_shard_tables
    runs = pd.DataFrame({"run_id": ["a", "b"], "status": ["done", "done"], "steps_done": [10, 10]})
    curves = pd.DataFrame({"run_id": ["a", "a", "b"], "step": [10, 10, 10], "split": ["test", "test", "test"]})
    with pytest.raises(UserError, match="more than once"):
        check_shard_tables(runs, curves, {})
    with pytest.raises(UserError, match="no curve rows"):
        check_shard_tables(runs, curves.iloc[:1], {})
    with pytest.raises(UserError, match="no shard"):
        check_shard_tables(runs.iloc[:1], curves.iloc[[0, 2]], {})
    check_shard_tables(runs, curves.iloc[[0, 2]], {})


# ------------------------------------------------------------------------------------------------
# Issue 23. 5: gsweep's own records are never an output path, nor left stale


@pytest.mark.parametrize("target", ["spec.yaml", "meta.json", "runs.parquet", "units/x.yaml"])
def test_refine_plan_never_overwrites_a_record(capsys, copy_of, tmp_path, target):
    d = copy_of()
    before = tree(tmp_path)
    rc, _, err = cli(capsys, "refine", d, "--plan", d / target)
    assert_error(rc, err, "--plan", "record gsweep keeps")
    assert tree(tmp_path) == before


def test_fresh_removes_a_stale_report_and_files_respect_the_umask(capsys, trained, copy_of, tmp_path):
    d = copy_of()
    rc, _, err = cli(capsys, "report", d)
    assert rc == 0, err
    (d / ".report.html.abc123.tmp").write_text("left by a killed report")
    rc, _, err = cli(capsys, "report", d)
    assert rc == 0, err
    assert not list(d.glob(".report.html.*.tmp"))
    old = os.umask(0o022)
    try:
        spec = write_spec(tmp_path / "s.yaml", trained[1])
        rc, _, err = cli(capsys, "run", spec, "--out", d, "--fresh", "--quiet")
    finally:
        os.umask(old)
    assert rc == 0, err
    assert not (d / "report.html").exists()
    for name in ("spec.yaml", "meta.json", "runs.parquet", "curves.parquet", "runs.parquet.sha256"):
        assert (d / name).stat().st_mode & 0o777 == 0o644, name


# ------------------------------------------------------------------------------------------------
# Issue 23. 6: a signal at any phase, after training included, leaves a resumable dir, a true status
# and no lock


@pytest.mark.parametrize("sig,n", [("TERM", 1), ("TERM", 2), ("INT", 1), ("INT", 2)])
def test_signals_while_the_tables_are_written(tmp_path, sig, n):
    f = write_spec(tmp_path / "s.yaml", {**TINY, "seeds": 2})
    out = tmp_path / "out"
    env = {**os.environ, "GSWEEP_TEST_SIGNAL": f"tables:{sig}:{n}"}
    p = subprocess.run(gsweep_cmd("run", f, "--out", out, "--quiet"), cwd=ROOT, capture_output=True, text=True,
                       timeout=600, env=env)
    assert p.returncode == (143 if sig == "TERM" else 130), p.stderr
    assert "Traceback" not in p.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == ("done" if n == 1 else "interrupted")
    assert not (out / ".lock").exists()
    assert not [q for q in out.iterdir() if q.name.endswith(".tmp")]
    if n == 1:
        assert (out / "runs.parquet").exists() and (out / "curves.parquet").exists()
    p = subprocess.run(gsweep_cmd("run", f, "--out", out, "--quiet"), cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr
    runs = pd.read_parquet(out / "runs.parquet")
    assert len(runs) == 2 and (runs["status"] == "done").all()
    assert json.loads((out / "meta.json").read_text())["status"] == "done"
    assert sorted(q.name for q in tmp_path.iterdir()) == ["out", "s.yaml"]


# ------------------------------------------------------------------------------------------------
# Issue 23. 4, 7, 8: bounded sizes, one-line errors instead of tracebacks, checks at validate time


BOMB = "name: bomb\ntask: {name: modular, p: 11}\nrefine:\n  a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 12))


@pytest.mark.parametrize("text,needle", [
    (BOMB, "alias bomb"),
    ('name: "a\\udcffb"\ntask: {name: modular, p: 11}\n', "lone surrogate"),
    ("name: x\ntask: {name: modular, p: 11}\ntrain: {lr: {logspace: [-5, 400, 5]}}\n", "logspace"),
    ("name: x\ntask: {name: modular, p: 11}\nanalysis: [1, 2]\n", "analysis"),
    ("name: x\nname: y\ntask: {name: modular, p: 11}\n", "appears twice"),
    ("name: x\ntask: {name: modular, p: 11}\ntask: {name: modular, p: 13}\n", "appears twice"),
    ("name: x\ntask: {name: modular, p: 11}\nanalysis: {snapshot_where: 'seed == 0', snapshot_steps: bogus}\n",
     "snapshot_steps"),
    ("name: x\ntask: {name: modular, p: 11}\ntrain: {steps: 100}\nanalysis: {snapshot_where: 'seed == 0', "
     "snapshot_steps: '0,500'}\n", "outside 0..100"),
])
def test_bad_specs_are_one_line_errors_at_validate(capsys, tmp_path, text, needle):
    f = tmp_path / "s.yaml"
    f.write_text(text)
    before = tree(tmp_path)
    for cmd in (["validate", f], ["run", f, "--out", tmp_path / "out"]):
        rc, _, err = cli(capsys, *cmd)
        assert_error(rc, err, needle)
    assert tree(tmp_path) == before


def test_numbers_and_merge_keys_still_accepted(capsys, tmp_path):
    f = write_spec(tmp_path / "s.yaml", {})
    f.write_text("name: x\ntask: &t {name: modular, p: 11}\ntrain: {lr: {linspace: [1e-4, 1e-3, 3]}}\n"
                 "model: {<<: {depth: 1}, depth: 2}\n")
    rc, out, err = cli(capsys, "validate", f)
    assert rc == 0, err
    assert "3 runs" in out


@pytest.mark.parametrize("args,env,needle", [
    (["summarize", "{d}", "--gap", "nan"], {}, "--gap"),
    (["refine", "{d}", "--x", "seed"], {}, "--x 'seed'"),
    (["replay", "{d}", "{run}", "--log-steps", "-3"], {}, "--log-steps"),
    (["plan", "{spec}"], {"GSWEEP_MEMORY_BUDGET": "1e400"}, "GSWEEP_MEMORY_BUDGET"),
    (["run", "{spec}", "--out", "{tmp}/o"], {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "10" * 10},
     "SLURM_ARRAY_TASK_COUNT"),
])
def test_bad_flags_and_environment_are_one_line_errors(capsys, trained, copy_of, tmp_path, monkeypatch, args, env,
                                                       needle):
    d = copy_of()
    spec = write_spec(tmp_path / "s.yaml", trained[1])
    run_id = pd.read_parquet(d / "runs.parquet")["run_id"][0]
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    before = tree(tmp_path)
    rc, _, err = cli(capsys, *[a.format(d=d, run=run_id, spec=spec, tmp=tmp_path) for a in args])
    assert_error(rc, err, needle)
    assert tree(tmp_path) == before


def test_stepped_slurm_arrays_and_non_utf8_out(capsys, tmp_path):
    from gsweep.train.units import parse_shard
    env = {"SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_STEP": "2", "SLURM_ARRAY_TASK_COUNT": "6"}
    assert [parse_shard(None, {**env, "SLURM_ARRAY_TASK_ID": str(t)}).index for t in (0, 2, 10)] == [0, 1, 5]
    with pytest.raises(UserError, match="STEP 2"):
        parse_shard(None, {**env, "SLURM_ARRAY_TASK_ID": "3"})
    f = write_spec(tmp_path / "s.yaml", TINY)
    rc, _, err = cli(capsys, "run", f, "--out", str(tmp_path) + "/\udcff")
    assert_error(rc, err, "UTF-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


@pytest.mark.parametrize("pid", [0, -1, True])
def test_locks_holding_impossible_pids_are_broken(capsys, trained, copy_of, tmp_path, pid):
    d = copy_of()
    (d / ".lock").write_text(json.dumps({"pid": pid, "host": os.uname().nodename, "since": "x"}))
    old = time.time() - 60
    os.utime(d / ".lock", (old, old))
    spec = write_spec(tmp_path / "s.yaml", trained[1])
    rc, _, err = cli(capsys, "run", spec, "--out", d, "--quiet")
    assert rc == 0, err
    assert "breaking" in err and not (d / ".lock").exists()


@pytest.mark.parametrize("damage", ["zero_curves", "nan_setting", "junk_swept_keys", "duplicated_runs"])
def test_parseable_but_wrong_results_files(capsys, synthetic, tmp_path, damage):
    d = tmp_path / "d"
    shutil.copytree(synthetic, d)
    for f in d.glob("*.sha256"):
        f.unlink()
    r = pd.read_parquet(d / "runs.parquet")
    if damage == "zero_curves":
        pd.read_parquet(d / "curves.parquet").iloc[:0].to_parquet(d / "curves.parquet", index=False)
    elif damage == "nan_setting":
        r.loc[0, "task.data_frac"] = float("nan")
        r.to_parquet(d / "runs.parquet", index=False)
    elif damage == "duplicated_runs":
        pd.concat([r, r.iloc[:1]]).to_parquet(d / "runs.parquet", index=False)
    else:
        m = json.loads((d / "meta.json").read_text())
        m["swept_keys"] = [1, {"a": 2}, None]
        (d / "meta.json").write_text(json.dumps(m))
    for cmd in (["summarize", d], ["plot", "phase-diagram", d, "--out", tmp_path / "x.png"],
                ["plot", "curves", d, "--out", tmp_path / "y.png"], ["report", d, "--out", tmp_path / "r.html"]):
        rc, _, err = cli(capsys, *cmd)
        assert rc in (0, 2) and "Traceback" not in err, (cmd, err)
        if rc == 2:
            assert_error(rc, err, "damaged")


def test_a_program_too_big_for_the_device_is_refused_before_it_runs(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("GSWEEP_MEMORY_BUDGET", "64K")  # the program's own memory analysis needs more
    f = write_spec(tmp_path / "s.yaml", TINY)
    rc, _, err = cli(capsys, "run", f, "--out", tmp_path / "out", "--quiet")
    assert_error(rc, err, "compiled program needs", "GSWEEP_MEMORY_BUDGET")
    out = tmp_path / "out"
    assert not (out / ".lock").exists() and not (out / "parts").exists()
    if (out / "meta.json").exists():
        assert json.loads((out / "meta.json").read_text())["status"] != "running"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "s.yaml"]


def test_fresh_starts_over_from_a_damaged_unit_record(capsys, trained, copy_of, tmp_path):
    d = copy_of()
    runs0 = pd.read_parquet(d / "runs.parquet")
    u = next((d / "units").glob("*.json"))
    u.write_text(u.read_text().replace('"steps_done": 40', '"steps_done": 48'))
    spec = write_spec(tmp_path / "s.yaml", trained[1])
    rc, _, err = cli(capsys, "run", spec, "--out", d, "--quiet")
    assert_error(rc, err, "damaged unit record", "--fresh")
    rc, _, err = cli(capsys, "run", spec, "--out", d, "--quiet", "--fresh")  # what the message offers works
    assert rc == 0, err
    pd.testing.assert_frame_equal(pd.read_parquet(d / "runs.parquet"), runs0, check_exact=True)
