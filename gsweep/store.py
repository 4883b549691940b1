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
MARKER = ".gsweep"  # written when gsweep creates a results dir: proof that the dir is gsweep's
FORMAT = "gsweep-results/1"
CURVE_KEY = ["run_id", "step", "split"]


MAX_RECORD_BYTES = 256 << 20  # meta.json, spec.yaml, unit and checksum records: far below any real one


def is_own_file(path: Path) -> bool:
    """Whether ``path`` is a regular file that is not a symbolic link (the test :func:`own_file` makes,
    for callers that skip such a file instead of refusing it)."""
    path = Path(path)
    return not path.is_symlink() and path.is_file()


def own_file(path: Path, limit: int | None = None) -> Path:
    """``path`` as a file gsweep may read as its own: not a symbolic link (gsweep never reads or
    deletes through a link it did not make), a regular file (not a device or a pipe), and at most
    ``limit`` bytes. Anything else is a one-line :class:`UserError` naming it."""
    path = Path(path)
    if path.is_symlink():
        raise UserError(f"{path}: is a symbolic link; gsweep reads only its own files, never through a link "
                        "(replace the link by the file itself)")
    import stat
    try:
        st = path.stat()
    except FileNotFoundError:
        raise
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{path}: not a regular file (a folder, device or pipe where gsweep keeps a file)")
    if limit is not None and st.st_size > limit:
        raise UserError(f"{path}: {st.st_size:,} bytes is too large for this record (damaged?)")
    return path


def _atomic(path: Path, write) -> None:
    """Write through a temporary file in the same folder, fsync, then rename over ``path``.

    A failure (a full disk included) leaves the old file as it was and no partial file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # results files respect the umask (mkstemp makes them 0600)
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


def _umask() -> int:
    m = os.umask(0o022)
    os.umask(m)
    return m


def write_text(path: Path, text: str) -> None:
    def w(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    _atomic(path, w)


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


TABLES = (RUNS, CURVES)  # carry a checksum record, <table>.sha256, checked on every read


def table_sums_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".sha256")


def write_parquet(path: Path, df: pd.DataFrame) -> None:
    path = Path(path)
    if path.name not in TABLES:
        _atomic(path, lambda tmp: df.to_parquet(tmp, index=False))
        return
    # runs.parquet / curves.parquet: the checksum record lists the new sum (and the old one while the
    # table is being replaced), so a kill at any point leaves a table that matches its record
    sp = table_sums_path(path)
    old = _table_sums(path) if sp.exists() and not sp.is_symlink() else []
    if path.exists() and old and sha256_file(path) in old:
        old = [sha256_file(path)]
    else:
        old = []

    def write(tmp):
        df.to_parquet(tmp, index=False)
        write_text(sp, "\n".join([sha256_file(Path(tmp)), *old]) + "\n")
    _atomic(path, write)
    write_text(sp, sha256_file(path) + "\n")


def _table_sums(path: Path) -> list[str]:
    sp = table_sums_path(path)
    own_file(sp, 4096)
    try:
        return [ln.strip() for ln in sp.read_text().splitlines() if ln.strip()]
    except UnicodeDecodeError:
        return ["<damaged record>"]


_UNVERIFIED_NOTED: set[str] = set()
_VERIFIED: set[tuple] = set()


def verify_table(path: Path) -> bool:
    """runs.parquet / curves.parquet against its checksum record: True when it matches, False (with a
    note, once) when there is no record (a table written before gsweep checksummed tables: unverified);
    a mismatch is a one-line :class:`UserError`."""
    path = Path(path)
    sp = table_sums_path(path)
    if not sp.exists() and not sp.is_symlink():
        if str(path) not in _UNVERIFIED_NOTED:
            _UNVERIFIED_NOTED.add(str(path))
            import sys
            print(f"gsweep: note: {path}: no checksum record ({sp.name}): unverified (written before gsweep "
                  "checksummed tables); `gsweep run` with the same spec verifies it against parts/ and records one",
                  file=sys.stderr)
        return False
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size, sp.stat().st_mtime_ns)
    if key in _VERIFIED:  # once per process per version of the file (replay reads one run at a time)
        return True
    if sha256_file(path) not in _table_sums(path):
        raise UserError(f"{path}: damaged (checksum mismatch with {sp.name}); `gsweep run` with the same spec "
                        f"rebuilds it from parts/ (if you changed it on purpose, delete {sp.name})")
    _VERIFIED.add(key)
    return True


def read_json(path: Path) -> Any:
    """A JSON file gsweep wrote; a damaged one is a :class:`UserError` naming it."""
    own_file(path, MAX_RECORD_BYTES)
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise UserError(f"{path}: damaged ({type(e).__name__}: {str(e)[:100]}); restore it or start over "
                        "with --fresh") from None


def read_meta(results_dir: Path) -> dict:
    """meta.json as a mapping ({} when absent); damaged -> UserError naming it."""
    p = Path(results_dir) / META
    if not p.exists():
        return {}
    m = read_json(p)
    if not isinstance(m, dict):
        raise UserError(f"{p}: damaged (not a JSON object); restore it or start over with --fresh")
    return m


RUNS_REQUIRED = ("run_id", "status")
CURVES_REQUIRED = ("run_id", "step", "split", "loss", "acc")


def read_parquet(path: Path, required: tuple[str, ...] = (), **kw) -> pd.DataFrame:
    """A parquet file gsweep wrote; a damaged or truncated one (or one without the ``required``
    columns) is a :class:`UserError` naming it."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a parquet file (damaged results dir)")
    if path.name in TABLES and path.exists():
        own_file(path)
        verify_table(path)
    df = _read_parquet(path, **kw)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise UserError(f"{path}: damaged (no column {missing[0]!r})")
    return df


def _read_parquet(path: Path, **kw) -> pd.DataFrame:
    own_file(path)
    try:
        return pd.read_parquet(path, **kw)
    except (OSError, ValueError, KeyError, TypeError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise UserError(f"{path}: damaged or truncated parquet file ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:100] if str(e) else ''})") from None
    except Exception as e:  # noqa: BLE001 - pyarrow's own error types
        raise UserError(f"{path}: damaged or truncated parquet file ({type(e).__name__})") from None


def read_spec_yaml(results_dir: Path) -> dict:
    p = Path(results_dir) / SPEC
    if not p.exists():
        raise UserError(f"{results_dir}: not a results dir (no {SPEC})")
    own_file(p, MAX_RECORD_BYTES)
    try:
        d = yaml.safe_load(p.read_bytes().decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise UserError(f"{p}: damaged ({type(e).__name__}); restore it or start over with --fresh") from None
    if not isinstance(d, dict):
        raise UserError(f"{p}: damaged (not a mapping); restore it or start over with --fresh")
    return d


def sha256_file(path: Path) -> str:
    import hashlib
    h = hashlib.sha256()
    own_file(path)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
    root = Path(root)
    if not root.exists():
        raise UserError(f"{root}: no such folder")
    if not root.is_dir():
        raise UserError(f"{root}: not a folder")
    for d in sweep_dirs(root):
        try:  # one damaged sweep is marked, the others listed
            meta = read_meta(d)
            n_runs = n_done = n_div = 0
            if (d / RUNS).exists():
                r = read_parquet(d / RUNS, columns=["status"])
                n_runs, n_done = len(r), int(r["status"].isin(["done", "stopped"]).sum())
                n_div = int((r["status"] == "diverged").sum())
            rows.append((str(d), str(meta.get("name", d.name)), str(meta.get("status", "?")), n_runs, n_done, n_div,
                         str(meta.get("finished") or meta.get("started") or "")))
        except (UserError, OSError, KeyError, ValueError) as e:
            why = str(e).split(": ", 1)[-1][:60] if isinstance(e, UserError) else type(e).__name__
            rows.append((str(d), d.name, f"DAMAGED ({why})", "?", "?", "?", ""))
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

    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file; merge writes a new dir")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: exists and is not empty; merge writes a new dir")
    if any(out.resolve() == d.resolve() for d in dirs):
        raise UserError(f"--out {out}: is one of the dirs to merge; merge writes a new dir")
    specs = [read_spec_yaml(d) for d in dirs]
    metas = [read_meta(d) for d in dirs]
    for d, m in zip(dirs, metas, strict=True):
        if not m.get("shard"):
            raise UserError(f"{d}: is not a shard (it was not run with --shard); merge combines shards of one sweep")
    base = {k: v for k, v in specs[0].items()}
    for d, s in zip(dirs[1:], specs[1:], strict=True):
        if s != base:
            raise UserError(f"{d}: its spec differs from {dirs[0]}'s; only shards of one sweep merge")
    spec = from_dict(base, str(dirs[0] / SPEC))
    expected = {r.run_id for r in spec.runs()}
    runs, curves, seen = [], [], {}
    shards_total = {(m.get("shard") or {}).get("count") for m in metas} - {None}
    for d, m in zip(dirs, metas, strict=True):
        if m.get("status") != "done":
            raise UserError(f"{d}: status is {m.get('status')!r}, not 'done'; finish it first (gsweep run resumes)")
        for f in (RUNS, CURVES):
            if not (d / f).exists():
                raise UserError(f"{d}: missing {f}")
        r = read_parquet(d / RUNS)
        if "run_id" not in r.columns:
            raise UserError(f"{d / RUNS}: damaged (no run_id column)")
        for rid in r["run_id"]:
            if rid in seen:
                raise UserError(f"run {rid} is in both {seen[rid]} and {d}")
            seen[rid] = d
        runs.append(r)
        curves.append(read_parquet(d / CURVES, CURVES_REQUIRED))
    missing = expected - set(seen)
    if missing:
        have = sorted((m.get("shard") or {}).get("index") for m in metas if m.get("shard"))
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
    check_shard_tables(runs_df, curves_df, seen)
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out)
    write_text(out / SPEC, (dirs[0] / SPEC).read_text())
    meta = dict(metas[0])
    meta.pop("shard", None)
    meta.update(status="done", merged_from=[str(d) for d in dirs], hosts=[m.get("host") for m in metas])
    write_json(out / META, meta)
    write_parquet(out / RUNS, runs_df)
    write_parquet(out / CURVES, curves_df)
    return runs_df, curves_df


def check_shard_tables(runs: pd.DataFrame, curves: pd.DataFrame, where: dict) -> None:
    """Merged shards must be consistent: one curve row per (run_id, step, split), every finished run
    with its curves, and no curves of a run that is in no runs table."""
    dup = curves.duplicated(CURVE_KEY, keep=False)
    if dup.any():
        r = curves[dup].iloc[0]
        raise UserError(f"{where.get(r['run_id'], '?')}: curves.parquet holds run {r['run_id']} step {r['step']} "
                        f"split {r['split']!r} more than once; the shard is inconsistent (rerun it with --fresh)")
    with_rows = set(curves["run_id"])
    if "steps_done" in runs:
        need = runs[(pd.to_numeric(runs["steps_done"], errors="coerce").fillna(0) > 0)
                    & runs["status"].isin(["done", "stopped"])]
    else:
        need = runs[runs["status"].isin(["done", "stopped"])]
    bare = [rid for rid in need["run_id"] if rid not in with_rows]
    if bare:
        raise UserError(f"{where.get(bare[0], '?')}: run {bare[0]} has no curve rows ({len(bare)} run(s) without "
                        "curves); the shard is inconsistent (rerun it with --fresh)")
    stray = sorted(with_rows - set(runs["run_id"]))
    if stray:
        raise UserError(f"curves.parquet rows of run {stray[0]}, which no shard's runs.parquet holds; the shards are "
                        "inconsistent")


def write_marker(out: Path) -> None:
    """``RESULTS_DIR/.gsweep``: this dir was created by gsweep (what ``--fresh`` may clear)."""
    import datetime as dt
    if not (Path(out) / MARKER).exists():
        write_json(Path(out) / MARKER, {"format": FORMAT, "created": dt.datetime.now(dt.timezone.utc).isoformat(
            timespec="seconds")})


def merge_command(args) -> int:
    dirs = [Path(d) for d in args.dirs]
    if len(set(d.resolve() for d in dirs)) != len(dirs):
        raise UserError("merge: a dir is named twice")
    for d in dirs:
        if not d.is_dir():
            raise UserError(f"{d}: no such results dir")
        if not (d / SPEC).exists():
            raise UserError(f"{d}: not a results dir (no {SPEC})")
    runs, _ = merge_dirs(dirs, Path(args.out))
    print(f"merged {len(dirs)} dirs: {len(runs)} runs -> {args.out}")
    return 0
