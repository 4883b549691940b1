"""Issue 13, fuzz-style: generated bad sweep files and damaged results dirs fed to every command.
Each call must exit 0 or 2 with no traceback (in-process, an uncaught exception fails the test),
and change no file outside the results dir it names. Nothing trains: bad specs fail validation
before JAX, and `run` on a damaged dir meets a spec that differs from the dir's."""

from __future__ import annotations

import hashlib
import random
import shutil
from pathlib import Path

import pytest
import yaml

from gsweep.cli import main
from tests.conftest import tiny_spec_dict
from tests.synthetic_results import write_synthetic

BAD_VALUES = [None, -1, 0, "x", "1e999", 10**30, [], {}, [[1]], {"logspace": [1]}, {"range": -5},
              {"range": [0, 10**15]}, "a\x00b", True, 1.5, "nan", float("inf"), "../..", "/", ".", {"bogus": 1},
              "__import__('os').system('touch PWNED')", "train.lr.__class__ == 1", 2**70, -(2**70)]
KEYS = ["name", "seeds", "task.p", "task.name", "task.op", "task.data_frac", "train.steps", "train.lr",
        "train.eval_every", "train.runs_per_chunk", "model.depth", "model.heads", "model.d_model", "model.name",
        "analysis.gap", "analysis.threshold", "analysis.snapshot_where", "bogus", "train.bogus", "task"]


def _tree(root: Path, skip: Path | None = None) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        if skip is not None and (p == skip or skip in p.parents):
            continue
        out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def _call(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()
    rc = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert rc in (0, 2), (args, rc, err)
    assert "Traceback" not in err
    if rc == 2:
        assert err.count("gsweep: error:") == 1, err
    return rc, err


def _bad_specs(rng: random.Random, n: int) -> list[str]:
    texts = []
    for _ in range(n):
        d = tiny_spec_dict(name="fz")
        for _ in range(rng.randint(1, 3)):
            key, val = rng.choice(KEYS), rng.choice(BAD_VALUES)
            parts = key.split(".")
            node = d
            for p in parts[:-1]:
                node = node.setdefault(p, {}) if isinstance(node.get(p, {}), dict) else {}
            node[parts[-1]] = val
        texts.append(yaml.safe_dump(d, allow_unicode=True))
    base = yaml.safe_dump(tiny_spec_dict(name="fz"))
    for _ in range(n // 2):  # byte-level damage of a good file
        b = bytearray(base.encode())
        for _ in range(rng.randint(1, 6)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        texts.append(bytes(b).decode("latin-1"))
    texts += ["", "[]", "name: x\n" * 3, "- - - -", "a: &a [*a]", "{" * 500, "name: fz\ntask: {p: !!python/object:os.system x}"]
    return texts


def test_bad_specs_to_validate_and_run(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = random.Random(13)
    work = tmp_path / "w"
    work.mkdir()
    before = _tree(tmp_path)
    refused = 0
    for i, text in enumerate(_bad_specs(rng, 60)):
        f = work / f"s{i}.yaml"
        f.write_bytes(text.encode("latin-1", "replace") if isinstance(text, str) else text)
        before[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
        rc, _ = _call(capsys, "validate", f)
        if rc == 2:  # invalid: `run` must refuse it too, before anything is written
            refused += 1
            rc2, err = _call(capsys, "run", f, "--out", tmp_path / "out")
            assert rc2 == 2, err
            assert not (tmp_path / "out").exists()
    assert refused >= 50
    assert _tree(tmp_path) == before
    assert not (tmp_path / "PWNED").exists()


def _damage(rng: random.Random, d: Path) -> str:
    f = d / rng.choice(["spec.yaml", "meta.json", "runs.parquet", "curves.parquet"])
    how = rng.choice(["flip", "truncate", "delete", "empty", "dir", "garbage"])
    if how == "flip":
        b = bytearray(f.read_bytes())
        for _ in range(rng.randint(1, 20)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        f.write_bytes(bytes(b))
    elif how == "truncate":
        f.write_bytes(f.read_bytes()[: rng.randrange(max(1, f.stat().st_size))])
    elif how == "delete":
        f.unlink()
    elif how == "empty":
        f.write_bytes(b"")
    elif how == "dir":
        f.unlink()
        f.mkdir()
    else:
        f.write_bytes(bytes(rng.randrange(256) for _ in range(200)))
    return f"{f.name}:{how}"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("fsyn") / "syn", seeds=1)


def test_damaged_results_dirs_to_every_command(capsys, tmp_path, synthetic, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = random.Random(7)
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec_dict(name="fz")))
    good = tmp_path / "good"
    shutil.copytree(synthetic, good)
    for i in range(10):
        d = tmp_path / f"d{i}"
        shutil.copytree(synthetic, d)
        what = _damage(rng, d)
        outside = _tree(tmp_path, skip=d)
        for cmd in (["summarize", d], ["summarize", d, "--format", "json"], ["plot", "phase-diagram", d],
                    ["plot", "curves", d], ["plot", "grok-time", d], ["analyze", d], ["ls", tmp_path],
                    ["merge", d, good, "--out", tmp_path / f"m{i}"], ["run", spec, "--out", d]):
            rc, err = _call(capsys, *cmd)
            assert rc == 2 or cmd[0] in ("ls", "summarize", "plot", "analyze"), (what, cmd, err)
        now = _tree(tmp_path, skip=d)
        assert now == outside, (what, set(now) ^ set(outside))


# ------------------------------------------------------------------------------------------------
# Issue 23: the resume state fuzzed. Links, deleted/duplicated/foreign parts, checkpoints and unit
# records in a real finished dir; `run` must exit 0 with the same tables (never fewer rows) or 2 with
# one line, and nothing outside the results dir may change (foreign files behind links included).


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from gsweep.spec import from_dict
    from gsweep.train.sweep import run_sweep
    d = tiny_spec_dict(name="fz", train={"steps": 40, "eval_every": 20, "chunk_steps": 20, "early_evals": 0},
                       seeds=2)
    out = tmp_path_factory.mktemp("ftrained") / "r"
    run_sweep(from_dict(d), out, progress=False)
    return out, d


def _resume_damage(rng: random.Random, d: Path, outside: Path) -> str:
    parts = sorted((d / "parts").glob("*.parquet"))
    units = sorted((d / "units").glob("*.json"))
    ckpts = sorted(p for p in (d / "checkpoints").iterdir() if p.is_dir())
    how = rng.choice(["part_delete", "part_duplicate", "part_foreign", "part_link", "parts_dir_link",
                      "ckpt_record_delete", "ckpt_step_delete", "ckpt_foreign", "ckpts_dir_link", "unit_delete",
                      "unit_duplicate", "unit_steps", "unit_foreign", "spec_link", "meta_link", "units_and_parts"])
    victim = outside / f"victim-{how}"
    victim.write_text("not gsweep's")
    if how == "part_delete":
        p = rng.choice(parts)
        p.unlink()
        if rng.random() < 0.5:
            p.with_name(p.name + ".sha256").unlink()
    elif how == "part_duplicate":
        p = rng.choice(parts)
        shutil.copy(p, p.with_name("uffffffffffff-00000.parquet"))
        shutil.copy(p.with_name(p.name + ".sha256"), p.with_name("uffffffffffff-00000.parquet.sha256"))
    elif how == "part_foreign":
        (d / "parts" / "u0123456789ab-00000.parquet").write_text("foreign")
        (d / "parts" / "notes.parquet").write_text("foreign")
    elif how == "part_link":
        p = rng.choice(parts)
        p.unlink()
        p.symlink_to(victim)
    elif how in ("parts_dir_link", "ckpts_dir_link"):
        name = "parts" if how == "parts_dir_link" else "checkpoints"
        scratch = outside / f"scratch-{name}"
        shutil.move(str(d / name), str(scratch))
        (scratch / "unrelated-project").mkdir()
        (scratch / "unrelated-project" / "f").write_text("theirs")
        (scratch / "u0123456789ab").mkdir()
        (d / name).symlink_to(scratch, target_is_directory=True)
    elif how == "ckpt_record_delete":
        for f in (d / "checkpoints").glob("*.sha256.json"):
            f.unlink()
        if rng.random() < 0.5:
            shutil.rmtree(d / "units")
    elif how == "ckpt_step_delete":
        c = rng.choice(ckpts)
        steps = sorted(p for p in c.iterdir())
        shutil.rmtree(rng.choice(steps))
        shutil.rmtree(d / "units")
    elif how == "ckpt_foreign":
        (d / "checkpoints" / "u0123456789ab").mkdir()
        (d / "checkpoints" / "u0123456789ab" / "notes").write_text("foreign")
    elif how == "unit_delete":
        rng.choice(units).unlink()
    elif how == "unit_duplicate":
        shutil.copy(units[0], d / "units" / "uffffffffffff.json")
    elif how == "unit_steps":
        u = rng.choice(units)
        u.write_text(u.read_text().replace('"steps_done": 40', '"steps_done": 48'))
    elif how == "unit_foreign":
        (d / "units" / "notes.json").write_text("{}")
    elif how in ("spec_link", "meta_link"):
        f = d / ("spec.yaml" if how == "spec_link" else "meta.json")
        shutil.copy(f, victim)
        f.unlink()
        f.symlink_to(victim)
    else:
        shutil.rmtree(d / "units")
        shutil.rmtree(d / "parts")
    return how


def test_resume_state_fuzzed(capsys, tmp_path, trained, monkeypatch):
    import pandas as pd
    monkeypatch.chdir(tmp_path)
    rng = random.Random(23)
    src, d0 = trained
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(d0))
    ref_runs, ref_curves = pd.read_parquet(src / "runs.parquet"), pd.read_parquet(src / "curves.parquet")
    outcomes = {}
    for i in range(10):
        d = tmp_path / f"d{i}"
        shutil.copytree(src, d, symlinks=True)
        outside = tmp_path / f"outside{i}"
        outside.mkdir()
        how = _resume_damage(rng, d, outside)
        def foreign(t: dict) -> dict:  # the linked folders' own gsweep files may change; nothing else may
            return {k: v for k, v in t.items() if any(s in k for s in ("victim", "unrelated", "u0123456789ab"))}
        before = foreign(_tree(outside))
        rc, err = _call(capsys, "run", spec, "--out", d, "--quiet")
        outcomes[how] = rc
        assert foreign(_tree(outside)) == before, how
        if rc == 0:  # a correct result: the same tables, never fewer rows
            pd.testing.assert_frame_equal(pd.read_parquet(d / "runs.parquet"), ref_runs, check_exact=True)
            pd.testing.assert_frame_equal(pd.read_parquet(d / "curves.parquet"), ref_curves, check_exact=True)
        _call(capsys, "summarize", d)
    assert 0 in outcomes.values() and 2 in outcomes.values(), outcomes


def test_signals_after_training_fuzzed(tmp_path):
    import json
    import os
    import subprocess

    from tests.conftest import ROOT, gsweep_cmd
    rng = random.Random(2323)
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec_dict(name="fz", train={"steps": 40, "eval_every": 20,
                                                                    "chunk_steps": 20})))
    sig, n = rng.choice(["INT", "TERM"]), rng.choice([1, 2])
    out = tmp_path / "out"
    p = subprocess.run(gsweep_cmd("run", spec, "--out", out, "--quiet"), cwd=ROOT, capture_output=True, text=True,
                       timeout=600, env={**os.environ, "GSWEEP_TEST_SIGNAL": f"tables:{sig}:{n}"})
    assert p.returncode in (130, 143) and "Traceback" not in p.stderr, p.stderr
    assert json.loads((out / "meta.json").read_text())["status"] in ("done", "interrupted")
    assert not (out / ".lock").exists()
    p = subprocess.run(gsweep_cmd("run", spec, "--out", out, "--quiet"), cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr
    assert sorted(q.name for q in tmp_path.iterdir()) == ["out", "s.yaml"]
