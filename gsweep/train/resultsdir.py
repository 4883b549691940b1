"""The results dir as a place: is it ours, does its spec match, its lock, what ``--fresh`` may
delete, and meta.json's history (no JAX)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import shutil
import socket
import sys
import time
from pathlib import Path

from gsweep import store
from gsweep.errors import UserError
from gsweep.spec import SweepSpec, from_dict
from gsweep.spec.sweepfile import SpecError
from gsweep.train.units import Shard

PARTS, UNITS, CKPT, LOCK = "parts", "units", "checkpoints", ".lock"


def spec_diff(old: dict, new: dict, prefix: str = "") -> str:
    """One line per differing leaf: ``  train.lr: 0.001 -> 0.01``."""
    lines = []
    for k in sorted(set(old) | set(new), key=str):
        key = f"{prefix}{k}"
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            sub = spec_diff(a, b, key + ".")
            if sub:
                lines.append(sub)
        elif a != b:
            lines.append(f"  {key}: {a} -> {b}")
    return "\n".join(lines)


# What gsweep writes in a results dir: the only names `--fresh` may delete.
KNOWN_FILES = frozenset({store.SPEC, store.META, store.RUNS, store.CURVES, store.MARKER, LOCK,
                         store.RUNS + ".sha256", store.CURVES + ".sha256", "report.html"})
KNOWN_DIRS = frozenset({CKPT, PARTS, UNITS, "plots", "replays"})
# store's atomic temporaries (.<name>.<random>.tmp) and check_writable's probe
_TEMP = re.compile(r"^\.(spec\.yaml|meta\.json|(runs|curves)\.parquet(\.sha256)?|report\.html|\.gsweep|gsweep)"
                   r"\.[^/]*\.tmp$"
                   r"|^\.probe-\d+$")


# The names gsweep gives what it writes under checkpoints/, parts/ and units/. These folders may be
# symbolic links (to a scratch disk, say): inside them gsweep deletes only entries it can verify it
# made (the exact name, a real file or folder, and its own checksum record or orbax's layout), never
# through a link and never anything else (see owned_*).
UNIT_RE = re.compile(r"^u[0-9a-f]{12}$")
PART_RE = re.compile(r"^(u[0-9a-f]{12})-\d{5}\.parquet$")
_STEP_RE = re.compile(r"^\d+(\.orbax-checkpoint-tmp-?\d*)?$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def owned_checkpoint(d: Path) -> bool:
    """``checkpoints/<unit>`` is gsweep's: a real folder named as a unit, holding only orbax step
    folders (each with orbax's ``_CHECKPOINT_METADATA``, or orbax's temporary of an unfinished save)."""
    if d.is_symlink() or not d.is_dir() or not UNIT_RE.match(d.name):
        return False
    for e in d.iterdir():
        if e.is_symlink() or not e.is_dir() or not _STEP_RE.match(e.name):
            return False
        if e.name.isdigit() and not (e / "_CHECKPOINT_METADATA").is_file():
            return False
    return True


def owned_part(p: Path) -> bool:
    """``parts/<unit>-<chunk>.parquet`` is gsweep's: the exact name, a real file, and its checksum
    record (``.sha256``, a real file) matches it."""
    if not PART_RE.match(p.name) or p.is_symlink() or not p.is_file():
        return False
    sp = p.with_name(p.name + ".sha256")
    if sp.is_symlink() or not sp.is_file() or sp.stat().st_size > 200:
        return False
    try:
        return sp.read_text().strip() == store.sha256_file(p)
    except (OSError, UnicodeDecodeError, UserError):
        return False


def _owned_record(p: Path, pattern: re.Pattern, suffix: str) -> bool:
    return (p.name.endswith(suffix) and bool(pattern.match(p.name[: -len(suffix)])) and not p.is_symlink()
            and p.is_file())


def remove_owned(folder: Path, keep_units: set[str] = frozenset(), records: bool = False) -> list[str]:
    """Delete, inside ``folder`` (``checkpoints/``, ``parts/`` or ``units/``, a link or not), the entries
    gsweep verifiably made for units not in ``keep_units`` (unit records too with ``records``); the
    names of the others, kept."""
    kept = []
    if not folder.is_dir():
        return kept
    for p in sorted(folder.iterdir()):
        name = p.name
        if not p.exists() and not p.is_symlink():  # a part's record, gone with its part
            continue
        if owned_checkpoint(p):
            if name not in keep_units:
                shutil.rmtree(p)
        elif _owned_record(p, UNIT_RE, ".sha256.json"):
            if name[:13] not in keep_units and not (folder / name[:13]).exists():
                p.unlink()
        elif PART_RE.match(name) and owned_part(p):
            if name[:13] not in keep_units:
                p.with_name(name + ".sha256").unlink(missing_ok=True)
                p.unlink()
        elif _owned_record(p, PART_RE, ".sha256"):
            if not p.with_name(name[: -len(".sha256")]).exists() and name[:13] not in keep_units:
                try:
                    if _HEX64.match(p.read_text().strip()):
                        p.unlink()
                        continue
                except (OSError, UnicodeDecodeError):
                    pass
                kept.append(name)
        elif records and _owned_record(p, UNIT_RE, ".json"):
            if name[:13] not in keep_units:
                p.unlink()
        else:
            kept.append(name)
    return kept


def check_not_a_record(path: Path, what: str) -> None:
    """An output path (``refine --plan``, ``report --out``, ``plot --out``) is never a file gsweep keeps in a
    results dir (spec.yaml, meta.json, the tables and their checksums, the marker, the lock) nor inside
    checkpoints/, parts/ or units/: writing there would overwrite the record of what ran."""
    path = Path(path)
    d = path.parent
    inside = [q for q in (d, *d.parents) if q.name in (CKPT, PARTS, UNITS) and proven_results_dir(q.parent)]
    if (path.name in KNOWN_FILES - {"report.html"} and (proven_results_dir(d) or (d / store.SPEC).exists())) \
            or inside:
        raise UserError(f"{what} {path}: is a record gsweep keeps in a results dir; write somewhere else")


def is_gsweep_name(p: Path) -> bool:
    if p.is_symlink():
        return False
    if p.name in KNOWN_DIRS:
        return p.is_dir()
    return (p.name in KNOWN_FILES or bool(_TEMP.match(p.name))) and p.is_file()


def proven_results_dir(out: Path) -> bool:
    """gsweep can prove it made ``out``: its marker, or a meta.json carrying gsweep's signature."""
    if (out / store.MARKER).is_symlink():
        return False
    if (out / store.MARKER).is_file():
        try:
            return store.read_json(out / store.MARKER).get("format", "").startswith("gsweep-results/")
        except (UserError, AttributeError, OSError):
            return False
    try:
        meta = store.read_meta(out)
    except (UserError, OSError):
        return False
    return isinstance(meta.get("versions"), dict) and "gsweep" in meta["versions"] and "status" in meta


def check_out_path(out: Path, what: str = "--out") -> None:
    """A results dir path that can be a folder: no NUL, not a file, components within the length limit."""
    text = str(out)
    if "\x00" in text:
        raise UserError(f"{what} {text!r}: a path cannot hold a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(f"{what} {text!r}: not valid UTF-8; name the results dir in UTF-8 text") from None
    for part in Path(text).parts:
        if len(part.encode("utf-8", "surrogateescape")) > 255:
            raise UserError(f"{what}: the path component {part[:40]!r}... is longer than 255 bytes")
    if out.exists() and not out.is_dir():
        raise UserError(f"{what} {out}: is a file, not a folder; name a results dir")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise UserError(f"{what} {out}: {parent} is a file, not a folder")


def check_existing(out: Path, spec: SweepSpec, fresh: bool, extend: bool, shard: Shard | None) -> str:
    """'new', 'resume' or 'extend' for this results dir; an error when the spec changed.

    Reads only: nothing in ``out`` changes here."""
    check_out_path(out)
    if not (out / store.SPEC).exists():
        if out.exists():
            foreign = [p.name for p in out.iterdir() if p.is_symlink() or not (p.name == LOCK or p.name == store.MARKER
                                                            or (_TEMP.match(p.name) and p.is_file()))]
            if foreign:
                raise UserError(f"{out}: exists and is not a gsweep results dir (it holds {foreign[0]!r}"
                                f"{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''}); choose another --out")
        return "new"
    if fresh:
        if not proven_results_dir(out):
            raise UserError(f"{out}: --fresh deletes only a results dir gsweep can prove it wrote (its .gsweep marker "
                            "or meta.json); this one it cannot: delete it yourself or choose another --out")
        return "new"
    old = store.read_spec_yaml(out)
    new = spec.to_dict()
    meta = store.read_meta(out)
    old_shard = meta.get("shard")
    new_shard = dataclasses.asdict(shard) if shard else None
    if old_shard != new_shard:
        raise UserError(f"{out}: holds shard {old_shard} but this run is shard {new_shard}; use another --out")
    if old == new:
        return "resume"
    if not extend:
        raise UserError(f"{out}: the spec differs from the one this results dir was made with:\n"
                        f"{spec_diff(old, new)}\nuse --extend (if it only adds runs), --fresh to start over, "
                        "or another --out")
    try:
        old_ids = {r.run_id for r in from_dict(old, str(out / store.SPEC)).runs()}
    except SpecError as e:
        raise UserError(f"{out / store.SPEC}: damaged ({str(e).split(': ', 1)[-1]}); --fresh starts over") from None
    new_ids = {r.run_id for r in spec.runs()}
    lost = old_ids - new_ids
    if lost:
        raise UserError(f"{out}: --extend only adds runs, but {len(lost)} finished run(s) are not in the new "
                        f"spec (changed keys?):\n{spec_diff(old, new)}")
    return "extend"


def clear_for_fresh(out: Path) -> list[str]:
    """Delete what gsweep wrote in ``out`` (its known names only); the names it kept, for a message."""
    kept = []
    for p in sorted(out.iterdir()):
        if p.name == LOCK:
            continue
        if p.name in (CKPT, PARTS, UNITS) and p.is_dir():  # a link to scratch included: only what gsweep made
            left = remove_owned(p, records=True)
            if left or p.is_symlink():
                kept += [f"{p.name}/{n}" for n in left]
            else:
                p.rmdir()
            continue
        if is_gsweep_name(p):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        else:
            kept.append(p.name)
    return kept


def clear_stale_temps(out: Path) -> None:
    """Temporaries of a write that a kill interrupted (never any other file)."""
    if out.is_dir():
        for p in out.iterdir():
            if _TEMP.match(p.name) and p.is_file() and not p.name.startswith(".probe-"):
                p.unlink(missing_ok=True)


def remove_stale_units(out: Path) -> None:
    """Once every run is finished: part files and checkpoints of units that never finished (superseded
    by --extend or another train.runs_per_chunk) are gsweep's own leftovers; remove them. Only entries
    gsweep verifiably made are removed (:func:`remove_owned`): ``checkpoints/`` or ``parts/`` may be
    links to a scratch disk holding other files, and those stay."""
    done = {f.stem for f in (out / UNITS).glob("*.json")} if (out / UNITS).exists() else set()
    for folder in (PARTS, CKPT):
        remove_owned(out / folder, keep_units=done)


def merged_meta(old: dict, new: dict) -> dict:
    """meta.json of this session on top of the earlier ones: the first start time, every group's record
    and the history of every session (start, end, mode, command, host, status) are kept."""
    if not old:
        out = dict(new)
        out["history"] = [_session(new)]
        return out
    out = {**old, **{k: v for k, v in new.items() if k not in ("started", "groups", "history")}}
    out["started"] = old.get("started") or new["started"]
    out["groups"] = {**(old.get("groups") or {}), **(new.get("groups") or {})}
    hist = [h for h in (old.get("history") or []) if isinstance(h, dict)]
    out["history"] = hist + [_session(new)]
    return out


def _session(meta: dict) -> dict:
    return {k: meta.get(k) for k in ("started", "finished", "mode", "command", "host", "pid", "status", "n_runs")}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError):
        return False
    except PermissionError:
        return True
    return True


class Lock:
    """``RESULTS_DIR/.lock``: one writer per results dir. A dead holder on this host is broken."""

    def __init__(self, out: Path):
        self.path = out / LOCK
        self.held = False

    def acquire(self) -> None:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": _now()}
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_file()):
            raise UserError(f"{self.path}: is a link or not a file; gsweep never reads or deletes a lock it did not "
                            "make (remove it yourself if no sweep is writing here)")
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    holder = json.loads(self.path.read_bytes().decode("utf-8") or "{}")
                except (OSError, ValueError):
                    holder = None
                pid = holder.get("pid") if isinstance(holder, dict) else None
                if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:  # 0, -1, true: no holder
                    try:
                        age = time.time() - self.path.stat().st_mtime
                    except OSError:
                        continue
                    if age > 5.0:  # an empty or garbage lock no live writer is still filling in
                        print(f"gsweep: breaking unreadable lock {self.path}", file=sys.stderr)
                        self.path.unlink(missing_ok=True)
                        continue
                    holder = {}
                if holder.get("host") == me["host"] and holder.get("pid") and not _pid_alive(int(holder["pid"])):
                    print(f"gsweep: breaking stale lock of dead process {holder['pid']} on {holder['host']}",
                          file=sys.stderr)
                    self.path.unlink(missing_ok=True)
                    continue
                raise UserError(f"{self.path.parent}: another sweep is writing here (pid {holder.get('pid')} on "
                                f"host {holder.get('host')}, since {holder.get('since')}); wait for it or stop it") from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return
        raise UserError(f"{self.path}: could not take the lock")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"{out}: results dir is not writable ({e.strerror})") from None

