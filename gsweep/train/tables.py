"""runs.parquet and curves.parquet as a pure function of the finished work under ``parts/`` and
``units/`` (pandas and numpy only; no JAX)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from gsweep import store
from gsweep.errors import UserError
from gsweep.metrics.labels import compute_labels
from gsweep.spec import Run, SweepSpec
from gsweep.spec.identity import ENGINE_ONLY
from gsweep.train.resultsdir import PARTS, UNITS
from gsweep.train.units import Unit


def unit_record_path(out: Path, unit_id: str) -> Path:
    return out / UNITS / f"{unit_id}.json"


def record_sum(rec: dict) -> str:
    """The checksum a unit record carries over its own content (every field but ``sha256``)."""
    import hashlib
    body = json.dumps({k: v for k, v in rec.items() if k != "sha256"}, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def write_unit_record(out: Path, unit_id: str, group_id: str, runs: dict, parts: dict[str, str]) -> None:
    """``units/<unit>.json``: the unit's finished runs, the part files that hold their rows (with their
    checksums) and a checksum of the record itself."""
    rec = {"unit_id": unit_id, "group_id": group_id, "runs": runs, "parts": parts}
    rec["sha256"] = record_sum(rec)
    store.write_json(unit_record_path(out, unit_id), rec)


def _damaged_record(f: Path, why: str) -> UserError:
    return UserError(f"{f}: damaged unit record ({why}); delete it (that chunk of runs retrains) or start "
                     "over with --fresh")


def unit_parts_present(out: Path, unit_id: str, rec: dict) -> bool:
    """The evidence a finished unit's record claims is on disk: every part file it lists (a record
    written before records listed their parts: parts 0, 1, ... with no gap, each with its checksum).
    A unit whose parts are missing is not finished: it retrains (from its last checkpoint that its
    parts reach, else from step 0), so no table loses its rows."""
    parts = rec.get("parts")
    if isinstance(parts, dict):
        return all((out / PARTS / name).is_file() for name in parts)
    have = sorted(int(p.stem.rsplit("-", 1)[1]) for p in (out / PARTS).glob(f"{unit_id}-*.parquet")
                  if p.with_name(p.name + ".sha256").is_file()) if (out / PARTS).is_dir() else []
    return bool(have) and have == list(range(len(have)))


def finished_runs(out: Path) -> dict[str, dict]:
    """run_id -> {status, steps_done, diverged_step, unit_id} of every run in a finished unit (the first
    unit to finish a run owns it: a run is never counted twice). A record that does not match its own
    checksum is refused; a unit whose part files are missing is not finished (it retrains)."""
    res: dict[str, dict] = {}
    d = out / UNITS
    if d.exists():
        for f in sorted(d.glob("*.json")):
            rec = store.read_json(f)
            try:
                runs = rec["runs"]
                unit_id = rec.get("unit_id", f.stem)
                items = [(str(rid), {**info, "unit_id": unit_id}) for rid, info in runs.items()
                         if isinstance(info, dict) and "status" in info and "steps_done" in info
                         and isinstance(info["steps_done"], int) and not isinstance(info["steps_done"], bool)]
            except (KeyError, AttributeError, TypeError):
                raise _damaged_record(f, "not a unit record") from None
            if len(items) != len(runs) or unit_id != f.stem:
                raise _damaged_record(f, "not a unit record")
            if "sha256" in rec and rec["sha256"] != record_sum(rec):
                raise _damaged_record(f, "checksum mismatch")
            if not unit_parts_present(out, unit_id, rec):
                continue
            for rid, info in items:
                res.setdefault(rid, info)
    return res


def part_path(out: Path, unit_id: str, chunk: int) -> Path:
    return out / PARTS / f"{unit_id}-{chunk:05d}.parquet"


def part_unit(p: Path) -> str:
    return p.stem.rsplit("-", 1)[0]


def write_part(path: Path, rows: pd.DataFrame) -> str:
    """A part file and, after it, its checksum (``<part>.sha256``): the pair commits the rows."""
    store.write_parquet(path, rows)
    h = store.sha256_file(path)
    store.write_text(path.with_name(path.name + ".sha256"), h + "\n")
    return h


def read_part(path: Path, want: str | None = None) -> pd.DataFrame:
    """A part file, checked against its recorded checksum (``want``, from its unit record, else its
    ``.sha256``); a part with neither is unverified and refused."""
    sp = path.with_name(path.name + ".sha256")
    if want is None and sp.exists():
        want = store.own_file(sp, 200).read_text().strip()
    if want is None:
        raise UserError(f"{path}: no checksum record ({sp.name}): unverified part file; delete it and its unit "
                        f"record under {UNITS}/ to retrain that chunk of runs, or --fresh starts over")
    if store.sha256_file(path) != want:
        raise UserError(f"{path}: damaged part file (checksum mismatch); --fresh starts over (or delete it "
                        f"and its unit record under {UNITS}/ to retrain that chunk of runs)")
    return store.read_parquet(path)


def verified_parts(out: Path, unit_id: str) -> dict[int, str]:
    """chunk -> sha256 of the unit's part files 0, 1, ... that match their checksum records (up to the
    first missing or unverified one): what a resumed unit can build on."""
    res: dict[int, str] = {}
    c = 0
    while True:
        p = part_path(out, unit_id, c)
        sp = p.with_name(p.name + ".sha256")
        if p.is_symlink() or not p.is_file() or sp.is_symlink() or not sp.is_file():
            return res
        h = store.sha256_file(p)
        if sp.read_text().strip() != h:
            return res
        res[c] = h
        c += 1


def verify_parts(out: Path, runs: Sequence[Run] = ()) -> None:
    """Every unit record (its checksum, and each finished run's status against its step budget) and
    every part file of a finished unit against its checksum (before a run changes anything)."""
    fin = finished_runs(out)
    for r in runs:
        info = fin.get(r.run_id)
        if info is not None and not _plausible(info, int(r.settings["train.steps"])):
            raise _damaged_record(unit_record_path(out, info["unit_id"]), f"run {r.run_id}: {info['status']} at "
                                  f"step {info['steps_done']} of {r.settings['train.steps']}")
    owners = {info["unit_id"] for info in fin.values()}
    for uid in sorted(owners):
        rec = store.read_json(unit_record_path(out, uid))
        listed = rec.get("parts") if isinstance(rec.get("parts"), dict) else None
        for p in sorted((out / PARTS).glob(f"{uid}-*.parquet")):
            if listed is not None and p.name not in listed:
                continue
            sp = p.with_name(p.name + ".sha256")
            want = listed[p.name] if listed is not None else (store.own_file(sp, 200).read_text().strip()
                                                               if sp.exists() else None)
            if want is None or store.sha256_file(p) != want:
                raise UserError(f"{p}: damaged part file ({'checksum mismatch' if want else 'no checksum record'}); "
                                f"--fresh starts over (or delete it and its unit record under {UNITS}/ to retrain "
                                "that chunk of runs)")


def remove_part(path: Path) -> None:
    if path.is_symlink():
        raise UserError(f"{path}: is a symbolic link where gsweep keeps its own part file; gsweep never deletes "
                        "a link it did not make (remove it yourself, or link parts/ itself instead)")
    path.with_name(path.name + ".sha256").unlink(missing_ok=True)
    path.unlink(missing_ok=True)


def curve_rows(unit: Unit, steps: np.ndarray, host: dict, split_names: Sequence[str],
               diverged_at: np.ndarray, stopped_at: np.ndarray | None = None) -> pd.DataFrame:
    """Long-format rows for the unit's real runs (padding dropped), cut at each run's divergence and
    after its stop step (train.stop_when_generalized; -1: not stopped)."""
    n, E, S = len(unit.runs), len(steps), len(split_names)
    if E == 0:
        return pd.DataFrame()
    rid = np.array([r.run_id for r in unit.runs], dtype=object)
    shape = (E, n, S)
    df = pd.DataFrame({
        "run_id": np.broadcast_to(rid[None, :, None], shape).ravel(),
        "step": np.broadcast_to(steps[:, None, None], shape).ravel().astype(np.int64),
        "split": np.broadcast_to(np.array(split_names, dtype=object)[None, None, :], shape).ravel(),
        "loss": host["loss"][:, :n].astype(np.float64).ravel(),
        "acc": host["acc"][:, :n].astype(np.float64).ravel(),
    })
    for k in ("weight_norm", "train_loss_mean", "train_loss_osc", "fourier_sparsity"):
        df[k] = np.broadcast_to(host[k][:, :n, None], shape).ravel().astype(np.float64)
    div = np.broadcast_to(diverged_at[None, :n, None], shape).ravel()
    keep = (div < 0) | (df["step"].to_numpy() < div)
    if stopped_at is not None:
        stop = np.broadcast_to(np.asarray(stopped_at)[None, :n, None], shape).ravel()
        keep &= (stop < 0) | (df["step"].to_numpy() <= stop)
    return df[keep].reset_index(drop=True)


CURVE_COLUMNS = ["run_id", "step", "split", "loss", "acc", "weight_norm", "train_loss_mean", "train_loss_osc",
                 "fourier_sparsity"]


def build_tables(out: Path, runs: Sequence[Run], spec: SweepSpec,
                 progress_of: dict[str, dict] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """runs.parquet and curves.parquet: a pure function of the finished work.

    A run's rows come from the one unit that finished it (its unit record), or, for a run still in
    progress, from the unit training it now (``progress_of[run_id]["unit_id"]``). Part files of other
    units (superseded by ``--extend`` or another ``train.runs_per_chunk``) are ignored, so whatever
    the history no row appears twice."""
    ids = {r.run_id for r in runs}
    fin = finished_runs(out)
    progress_of = progress_of or {}
    owner = {rid: info["unit_id"] for rid, info in fin.items() if rid in ids}
    for rid, info in progress_of.items():
        if rid in ids and rid not in owner and info.get("unit_id"):
            owner[rid] = info["unit_id"]
    wanted = set(owner.values())
    listed: dict[str, dict] = {}  # unit -> {part name: sha256} from its record (finished units)
    for u in wanted:
        f = unit_record_path(out, u)
        if f.exists():
            rec = store.read_json(f)
            if isinstance(rec.get("parts"), dict):
                listed[u] = rec["parts"]
    parts = sorted((out / PARTS).glob("*.parquet")) if (out / PARTS).exists() else []
    frames = []
    for p in parts:
        u = part_unit(p)
        if u not in wanted or (u in listed and p.name not in listed[u]):
            continue
        df = read_part(p, listed.get(u, {}).get(p.name))
        mine = np.array([owner.get(r) == u for r in df["run_id"]], dtype=bool) if len(df) else np.zeros(0, bool)
        frames.append(df[mine])
    frames = [f for f in frames if len(f)]
    curves = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        {c: pd.Series(dtype=object if c in ("run_id", "split") else (np.int64 if c == "step" else np.float64))
         for c in CURVE_COLUMNS})
    curves = store.sort_curves(curves.drop_duplicates(subset=store.CURVE_KEY, keep="first"))
    rows = []
    for r in runs:
        info = fin.get(r.run_id) or progress_of.get(r.run_id) or {"status": "pending", "steps_done": 0,
                                                                   "diverged_step": None}
        if r.run_id in fin and not _plausible(info, int(r.settings["train.steps"])):
            raise _damaged_record(unit_record_path(out, info["unit_id"]), f"run {r.run_id}: {info['status']} at "
                                  f"step {info['steps_done']} of {r.settings['train.steps']}")
        settings = {k: v for k, v in r.settings.items() if k not in ENGINE_ONLY}
        rows.append({"run_id": r.run_id, "group_id": r.group_id, **settings, "status": info["status"],
                     "steps_done": int(info["steps_done"]), "diverged_step": info.get("diverged_step")})
    table = pd.DataFrame(rows)
    table["diverged_step"] = pd.array(table["diverged_step"].tolist(), dtype="Int64")
    a = spec.analysis
    labels = compute_labels(curves, table, a["threshold"], a["gap"], a["gap_mode"])
    table = pd.concat([table, labels], axis=1)
    return store.sort_runs(table), curves


def _plausible(info: dict, steps: int) -> bool:
    st, n = info.get("status"), info.get("steps_done")
    if st == "done":
        return n == steps
    return st in ("stopped", "diverged") and isinstance(n, int) and 0 <= n <= steps


FINISHED = ("done", "stopped", "diverged")


def check_no_shrink(out: Path, table: pd.DataFrame, curves: pd.DataFrame) -> None:
    """A table is never rewritten with fewer finished runs, or fewer curve rows of them, than it holds
    (a backstop: missing evidence retrains rather than shrinks). Tables that do not verify are not
    evidence and are rebuilt."""
    rp, cp = out / store.RUNS, out / store.CURVES
    if not rp.is_file() or not cp.is_file():
        return
    try:
        old_runs = store.read_parquet(rp, columns=["run_id", "status"])
        old_ids = set(old_runs.loc[old_runs["status"].isin(FINISHED), "run_id"])
        old_rows = store.read_parquet(cp, columns=["run_id"])
    except (UserError, KeyError, ValueError):
        return
    new_ids = set(table.loc[table["status"].isin(FINISHED), "run_id"])
    lost = old_ids - new_ids
    n_old = int(old_rows["run_id"].isin(old_ids).sum())
    n_new = int(curves["run_id"].isin(old_ids).sum())
    if lost or n_new < n_old:
        what = f"{len(lost)} finished run(s) (e.g. {sorted(lost)[0]})" if lost else f"{n_old - n_new} curve rows"
        raise UserError(f"{out}: the tables would lose {what} that they hold now: their evidence under {PARTS}/ or "
                        f"{UNITS}/ is missing; restore it, or start over with --fresh")


def write_tables(out: Path, runs: Sequence[Run], spec: SweepSpec, progress_of=None) -> pd.DataFrame:
    table, curves = build_tables(out, runs, spec, progress_of)
    check_no_shrink(out, table, curves)
    store.write_parquet(out / store.CURVES, curves)
    store.write_parquet(out / store.RUNS, table)
    return table

