"""Results files: atomic parquet/JSON/text writes and the results-dir layout (pandas only; no JAX).

``results/<name>/`` holds ``spec.yaml``, ``meta.json``, ``runs.parquet``, ``curves.parquet``,
``checkpoints/`` and ``plots/``. While a sweep runs, each chunk's curve rows are appended as a part
file under ``parts/`` and each finished chunk of runs leaves a record under ``units/``; the two
tables are rebuilt from them, so a kill loses at most the chunk in flight.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from gsweep.errors import UserError

SPEC, META, RUNS, CURVES = "spec.yaml", "meta.json", "runs.parquet", "curves.parquet"
CURVE_KEY = ["run_id", "step", "split"]


def _atomic(path: Path, write) -> None:
    """Write through a temporary file in the same folder, fsync, then rename over ``path``.

    A failure (a full disk included) leaves the old file as it was and no partial file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_text(path: Path, text: str) -> None:
    def w(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    _atomic(path, w)


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_parquet(path: Path, df: pd.DataFrame) -> None:
    _atomic(path, lambda tmp: df.to_parquet(tmp, index=False))


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


def read_spec_yaml(results_dir: Path) -> dict:
    p = Path(results_dir) / SPEC
    if not p.exists():
        raise UserError(f"{results_dir}: not a results dir (no {SPEC})")
    return yaml.safe_load(p.read_text())


def load_results(results_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, dict, dict]:
    """(runs, curves, spec, meta) of a results dir, read by the one loader (:mod:`gsweep.results`)."""
    from gsweep.results import load_results as load

    res = load(results_dir)
    return res.runs, res.curves, res.spec, res.meta


def sort_curves(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(CURVE_KEY, kind="mergesort").reset_index(drop=True)


def sort_runs(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("run_id", kind="mergesort").reset_index(drop=True)


# ----------------------------------------------------------------------------------------------
# gsweep ls


def sweep_dirs(root: Path) -> Iterable[Path]:
    root = Path(root)
    if (root / SPEC).exists():
        yield root
        return
    if root.is_dir():
        for d in sorted(root.iterdir()):
            if (d / SPEC).exists():
                yield d


def list_sweeps(root: str | Path) -> int:
    rows = []
    for d in sweep_dirs(Path(root)):
        meta = read_json(d / META) if (d / META).exists() else {}
        n_runs = n_done = n_div = 0
        if (d / RUNS).exists():
            r = pd.read_parquet(d / RUNS, columns=["status"])
            n_runs, n_done, n_div = len(r), int((r["status"] == "done").sum()), int((r["status"] == "diverged").sum())
        rows.append((str(d), meta.get("name", d.name), meta.get("status", "?"), n_runs, n_done, n_div,
                     meta.get("finished") or meta.get("started") or ""))
    if not rows:
        print(f"no sweeps under {root}")
        return 0
    head = ("dir", "name", "status", "runs", "done", "diverged", "last")
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    for row in (head, *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))
    return 0


# ----------------------------------------------------------------------------------------------
# gsweep merge


def merge_dirs(dirs: list[Path], out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Combine shard results dirs: their specs must match, and together they must hold every run
    of the spec exactly once."""
    from gsweep.spec import from_dict

    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: exists and is not empty; merge writes a new dir")
    specs = [read_spec_yaml(d) for d in dirs]
    metas = [read_json(d / META) if (d / META).exists() else {} for d in dirs]
    base = {k: v for k, v in specs[0].items()}
    for d, s in zip(dirs[1:], specs[1:], strict=True):
        if s != base:
            raise UserError(f"{d}: its spec differs from {dirs[0]}'s; only shards of one sweep merge")
    spec = from_dict(base, str(dirs[0] / SPEC))
    expected = {r.run_id for r in spec.runs()}
    runs, curves, seen = [], [], {}
    shards_total = {m.get("shard", {}).get("count") for m in metas} - {None}
    for d, m in zip(dirs, metas, strict=True):
        if m.get("status") != "done":
            raise UserError(f"{d}: status is {m.get('status')!r}, not 'done'; finish it first (gsweep run resumes)")
        r = pd.read_parquet(d / RUNS)
        for rid in r["run_id"]:
            if rid in seen:
                raise UserError(f"run {rid} is in both {seen[rid]} and {d}")
            seen[rid] = d
        runs.append(r)
        curves.append(pd.read_parquet(d / CURVES))
    missing = expected - set(seen)
    if missing:
        have = sorted(m.get("shard", {}).get("index") for m in metas if m.get("shard"))
        hint = ""
        if len(shards_total) == 1:
            n = shards_total.pop()
            gone = [i for i in range(n) if i not in have]
            hint = f"; missing shard(s) {', '.join(f'{i}/{n}' for i in gone)}" if gone else ""
        raise UserError(f"{len(missing)} of {len(expected)} runs are in none of the dirs{hint}")
    extra = set(seen) - expected
    if extra:
        raise UserError(f"{len(extra)} runs are not in the spec (e.g. {sorted(extra)[0]} in {seen[sorted(extra)[0]]})")
    runs_df = sort_runs(pd.concat(runs, ignore_index=True))
    curves_df = sort_curves(pd.concat(curves, ignore_index=True))
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / SPEC, (dirs[0] / SPEC).read_text())
    meta = dict(metas[0])
    meta.pop("shard", None)
    meta.update(status="done", merged_from=[str(d) for d in dirs], hosts=[m.get("host") for m in metas])
    write_json(out / META, meta)
    write_parquet(out / RUNS, runs_df)
    write_parquet(out / CURVES, curves_df)
    return runs_df, curves_df


def merge_command(args) -> int:
    dirs = [Path(d) for d in args.dirs]
    for d in dirs:
        if not (d / SPEC).exists():
            raise UserError(f"{d}: not a results dir (no {SPEC})")
    runs, _ = merge_dirs(dirs, Path(args.out))
    print(f"merged {len(dirs)} dirs: {len(runs)} runs -> {args.out}")
    return 0
