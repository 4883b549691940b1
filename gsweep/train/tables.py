"""runs.parquet and curves.parquet as a pure function of the finished work under ``parts/`` and
``units/`` (pandas and numpy only; no JAX)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from gsweep import store
from gsweep.errors import UserError
from gsweep.metrics.labels import compute_labels
from gsweep.spec import ENGINE_ONLY, Run, SweepSpec
from gsweep.train.resultsdir import PARTS, UNITS
from gsweep.train.units import Unit


def unit_record_path(out: Path, unit_id: str) -> Path:
    return out / UNITS / f"{unit_id}.json"


def finished_runs(out: Path) -> dict[str, dict]:
    """run_id -> {status, steps_done, diverged_step, unit_id} of every run in a finished unit (the first
    unit to finish a run owns it: a run is never counted twice)."""
    res: dict[str, dict] = {}
    d = out / UNITS
    if d.exists():
        for f in sorted(d.glob("*.json")):
            rec = store.read_json(f)
            try:
                runs = rec["runs"]
                unit_id = rec.get("unit_id", f.stem)
                items = [(str(rid), {**info, "unit_id": unit_id}) for rid, info in runs.items()
                         if isinstance(info, dict) and "status" in info and "steps_done" in info]
            except (KeyError, AttributeError, TypeError):
                raise UserError(f"{f}: damaged unit record; delete it (that chunk of runs retrains) or start "
                                "over with --fresh") from None
            if len(items) != len(runs):
                raise UserError(f"{f}: damaged unit record; delete it (that chunk of runs retrains) or start "
                                "over with --fresh")
            for rid, info in items:
                res.setdefault(rid, info)
    return res


def part_path(out: Path, unit_id: str, chunk: int) -> Path:
    return out / PARTS / f"{unit_id}-{chunk:05d}.parquet"


def part_unit(p: Path) -> str:
    return p.stem.rsplit("-", 1)[0]


def write_part(path: Path, rows: pd.DataFrame) -> None:
    """A part file and, after it, its checksum (``<part>.sha256``): the pair commits the rows."""
    store.write_parquet(path, rows)
    store.write_text(path.with_name(path.name + ".sha256"), store.sha256_file(path) + "\n")


def read_part(path: Path) -> pd.DataFrame:
    """A part file, checked against its recorded checksum."""
    sp = path.with_name(path.name + ".sha256")
    if sp.exists():
        want = sp.read_text().strip()
        if store.sha256_file(path) != want:
            raise UserError(f"{path}: damaged part file (checksum mismatch); --fresh starts over (or delete it "
                            f"and its unit record under {UNITS}/ to retrain that chunk of runs)")
    return store.read_parquet(path)


def verify_parts(out: Path) -> None:
    """Every part file of a finished unit against its checksum (before a run changes anything)."""
    owners = {info["unit_id"] for info in finished_runs(out).values()}
    if (out / PARTS).exists():
        for p in sorted((out / PARTS).glob("*.parquet")):
            if part_unit(p) in owners:
                sp = p.with_name(p.name + ".sha256")
                if sp.exists() and store.sha256_file(p) != sp.read_text().strip():
                    raise UserError(f"{p}: damaged part file (checksum mismatch); --fresh starts over (or delete "
                                    f"it and its unit record under {UNITS}/ to retrain that chunk of runs)")


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
    parts = sorted((out / PARTS).glob("*.parquet")) if (out / PARTS).exists() else []
    frames = []
    for p in parts:
        u = part_unit(p)
        if u not in wanted:
            continue
        df = read_part(p)
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
        settings = {k: v for k, v in r.settings.items() if k not in ENGINE_ONLY}
        rows.append({"run_id": r.run_id, "group_id": r.group_id, **settings, "status": info["status"],
                     "steps_done": int(info["steps_done"]), "diverged_step": info.get("diverged_step")})
    table = pd.DataFrame(rows)
    table["diverged_step"] = pd.array(table["diverged_step"].tolist(), dtype="Int64")
    a = spec.analysis
    labels = compute_labels(curves, table, a["threshold"], a["gap"], a["gap_mode"])
    table = pd.concat([table, labels], axis=1)
    return store.sort_runs(table), curves


def write_tables(out: Path, runs: Sequence[Run], spec: SweepSpec, progress_of=None) -> pd.DataFrame:
    table, curves = build_tables(out, runs, spec, progress_of)
    store.write_parquet(out / store.CURVES, curves)
    store.write_parquet(out / store.RUNS, table)
    return table

