"""Sweep files: YAML -> validated, frozen :class:`SweepSpec` -> one :class:`Run` per grid point.

A sweep file has the top-level blocks ``name``, ``task``, ``model``, ``train``, ``analysis`` and
``seeds``. Any leaf under ``task``, ``model`` and ``train`` may be a list, which sweeps that key;
``{logspace: [lo, hi, n]}``, ``{linspace: [lo, hi, n]}`` and ``{range: n}`` (or ``[start, stop]``,
``[start, stop, step]``) expand to lists, also inside a list. Every key is checked against the
schema of the chosen task and model (see :mod:`gsweep.schema`); every error names the file and the
key and is raised before anything is compiled or written.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import hashlib
import itertools
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from gsweep.models import get_model
from gsweep.params import Param
from gsweep.schema import ANALYSIS_SCHEMA, TRAIN_SCHEMA, model_schema, task_schema

TOP_LEVEL = ("name", "task", "model", "train", "analysis", "seeds", "points", "refine")
SWEPT_BLOCKS = ("task", "model", "train")
# Keys that change how the engine schedules work, never the numbers a run produces:
# they are left out of run ids and group signatures.
ENGINE_ONLY = frozenset({"train.runs_per_chunk", "train.chunk_steps", "train.checkpoint_every", "train.batching"})


# Sizes that allocate, bounded before anything is materialised (a typo must not eat the machine).
MAX_VALUES = 1_000_000        # values in one list, helper or seeds count
GRID_ASK = 100_000            # runs above which `--allow-large` is needed
GRID_MAX = 10_000_000         # runs above which a grid is refused outright
MAX_STEPS = 1_000_000_000     # train.steps (step counters are int32 on the device)
MAX_EVALS = 100_000           # evaluations per run (curve rows)
MAX_POOL = 50_000_000         # examples in one task's pool
MAX_NAME_BYTES = 200          # a sweep name is one path component (filesystems allow 255 bytes)
_NUMERIC = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


class SpecError(ValueError):
    """A sweep file (or a --set override) is invalid. The message names the file and the key."""


# ----------------------------------------------------------------------------------------------
# loading


MAX_EXPANDED = 2_000_000  # nodes of a sweep file once its YAML aliases are expanded


class _DuplicateKey(ValueError):
    pass


class _StrictLoader(yaml.SafeLoader):
    """safe_load that refuses a key written twice in one mapping (YAML would keep the last silently)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for k, _ in node.value:
                if k.tag == "tag:yaml.org,2002:merge":  # `<<: *base` then overrides: YAML's own merge
                    continue
                key = self.construct_object(k, deep=True)
                try:
                    dup = key in seen
                    seen.add(key)
                except TypeError:
                    continue
                if dup:
                    raise _DuplicateKey(f"the key {key!r} appears twice in one block (line {k.start_mark.line + 1}); "
                                        "YAML would keep only the last")
        return super().construct_mapping(node, deep=deep)


def _expanded_size(obj: Any, memo: dict | None = None) -> int:
    """Nodes of ``obj`` with every shared (aliased) part counted each time it is used: the size a
    consumer that walks it meets. Linear in the stored size, so an alias bomb is measured, not walked."""
    memo = {} if memo is None else memo
    if id(obj) in memo:
        return memo[id(obj)]
    memo[id(obj)] = 1  # a cycle counts once
    if isinstance(obj, dict):
        n = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in obj.items())
    elif isinstance(obj, (list, tuple)):
        n = 1 + sum(_expanded_size(v, memo) for v in obj)
    else:
        n = 1
    memo[id(obj)] = n
    return n


def _yaml_load(text: str, source: str) -> Any:
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as e:
        raise SpecError(f"{source}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise SpecError(f"{source}: malformed YAML{where}: {problem}") from None
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError) as e:  # e.g. a date out of range
        raise SpecError(f"{source}: unreadable YAML value ({type(e).__name__}: {str(e)[:120]})") from None
    if _expanded_size(data) > MAX_EXPANDED:
        raise SpecError(f"{source}: its YAML aliases expand to more than {MAX_EXPANDED:,} values "
                        "(an alias bomb?); write the values out")
    return data


def parse_set(item: str) -> tuple[str, Any]:
    """``"train.steps=200"`` -> ``("train.steps", 200)``; the value is parsed as YAML."""
    if "=" not in item:
        raise SpecError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.steps=200")
    key, value = item.split("=", 1)
    key = key.strip()
    if not key:
        raise SpecError(f"--set {item!r}: empty key")
    return key, _yaml_load(value, f"--set {key}")


def apply_overrides(raw: dict, overrides: Sequence[str], source: str) -> dict:
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, value = parse_set(item)
        parts = key.split(".")
        if parts[0] not in TOP_LEVEL:
            raise SpecError(f"{source}: --set {key}: unknown key {parts[0]!r}{_suggest(parts[0], TOP_LEVEL)}")
        node = raw
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    return raw


def load_raw(path: str | Path) -> dict:
    path = Path(path)
    if "\x00" in str(path):
        raise SpecError(f"{str(path)!r}: a path cannot hold a NUL character")
    if not path.exists():
        raise SpecError(f"{path}: no such sweep file")
    if path.is_dir():
        raise SpecError(f"{path}: is a directory, not a sweep file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SpecError(f"{path}: cannot read the sweep file ({e.strerror})") from None
    if len(data) > 10 << 20:
        raise SpecError(f"{path}: {len(data):,} bytes is too large for a sweep file (at most 10 MiB)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"{path}: not UTF-8 text (byte {e.start}); save the sweep file as UTF-8") from None
    if "\x00" in text:
        raise SpecError(f"{path}: holds NUL characters (UTF-16?); save the sweep file as UTF-8")
    raw = _yaml_load(text, str(path))
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a sweep file is a mapping with the blocks {', '.join(TOP_LEVEL)}")
    return raw


def _suggest(key: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else f" (valid: {', '.join(sorted(valid))})"


# ----------------------------------------------------------------------------------------------
# list helpers


def _expand_helper(value: Any, where: str) -> list | None:
    """Expand ``{logspace|linspace|range: ...}``; None when value is not a helper."""
    if not isinstance(value, dict):
        return None
    if len(value) != 1:
        raise SpecError(f"{where}: a mapping here must be one helper (logspace, linspace, range), got {value}")
    (kind, args), = value.items()
    if kind in ("logspace", "linspace"):
        if isinstance(args, list):  # 1e-4 is a string to YAML 1.1: a number here as everywhere
            args = [float(a) if isinstance(a, str) and _NUMERIC.fullmatch(a.strip()) else a for a in args]
            if len(args) == 3 and isinstance(args[2], float) and args[2].is_integer():
                args[2] = int(args[2])
        if not (isinstance(args, list) and len(args) == 3 and all(isinstance(a, (int, float)) for a in args)
                and isinstance(args[2], int) and args[2] >= 1):
            raise SpecError(f"{where}: {kind} takes [lo, hi, n] with n a positive integer, got {args}")
        lo, hi, n = args
        if n > MAX_VALUES:
            raise SpecError(f"{where}: {kind} of {n:,} points; at most {MAX_VALUES:,} values in one list")
        if not all(math.isfinite(a) for a in (lo, hi)) or (kind == "logspace" and max(lo, hi) > 300):
            raise SpecError(f"{where}: {kind} {args}: the end points must be finite"
                            + (" (logspace: exponents at most 300)" if kind == "logspace" else ""))
        pts = [lo + (hi - lo) * i / (n - 1) for i in range(n)] if n > 1 else [lo]
        if kind == "logspace":
            return [float(f"{10.0 ** x:.12g}") for x in pts]
        return [float(f"{x:.12g}") for x in pts]
    if kind == "range":
        if isinstance(args, int):
            args = [args]
        if not (isinstance(args, list) and 1 <= len(args) <= 3 and all(isinstance(a, int) for a in args)):
            raise SpecError(f"{where}: range takes n, [start, stop] or [start, stop, step] integers, got {args}")
        try:
            r = range(*args)
        except ValueError as e:
            raise SpecError(f"{where}: range {args}: {e}") from None
        if len(r) > MAX_VALUES:
            raise SpecError(f"{where}: range of {len(r):,} values; at most {MAX_VALUES:,} values in one list")
        if len(r) == 0:
            raise SpecError(f"{where}: range {args} is empty")
        return list(r)
    raise SpecError(f"{where}: unknown helper {kind!r}{_suggest(kind, ['logspace', 'linspace', 'range'])}")


def expand_values(value: Any, where: str) -> list:
    """A leaf's list of values: a scalar gives one value, a list or helper gives several."""
    helper = _expand_helper(value, where)
    if helper is not None:
        return helper
    if isinstance(value, list):
        out: list = []
        if len(value) > MAX_VALUES:
            raise SpecError(f"{where}: a list of {len(value):,} values; at most {MAX_VALUES:,}")
        for v in value:
            h = _expand_helper(v, where)
            if h is not None:
                out.extend(h)
            elif isinstance(v, (list, dict)):
                raise SpecError(f"{where}: a list of values holds scalars (or helpers), got {v!r}")
            else:
                out.append(v)
            if len(out) > MAX_VALUES:
                raise SpecError(f"{where}: more than {MAX_VALUES:,} values in one list")
        if not out:
            raise SpecError(f"{where}: an empty list sweeps nothing")
        return out
    return [value]


# ----------------------------------------------------------------------------------------------
# the frozen objects


def _freeze(d: Mapping) -> Mapping:
    return MappingProxyType(dict(d))


@dataclasses.dataclass(frozen=True)
class Run:
    """One run: every setting resolved to a scalar, under its dotted key (``train.lr``, ``seed``)."""

    run_id: str
    group_id: str
    settings: Mapping[str, Any]

    def block(self, name: str) -> dict:
        pre = name + "."
        return {k[len(pre):]: v for k, v in self.settings.items() if k.startswith(pre)}

    @property
    def seed(self) -> int:
        return int(self.settings["seed"])

    def __getitem__(self, key: str) -> Any:
        return self.settings[key]


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: its resolved blocks (lists expanded) and the runs they make."""

    name: str
    task: Mapping[str, Any]
    model: Mapping[str, Any]
    train: Mapping[str, Any]
    analysis: Mapping[str, Any]
    seeds: tuple[int, ...]
    source: str = "<spec>"
    points: tuple[Mapping[str, Any], ...] = ()  # runs added outside the product grid (see "points" below)
    refine: tuple[Mapping[str, Any], ...] = ()  # the rounds of `gsweep refine` that added them (a note)

    def to_dict(self) -> dict:
        def plain(m):
            return {k: (list(v) if isinstance(v, tuple) else v) for k, v in m.items()}
        return {"name": self.name, "task": plain(self.task), "model": plain(self.model),
                "train": plain(self.train), "analysis": dict(self.analysis), "seeds": list(self.seeds),
                **({"points": [dict(p) for p in self.points]} if self.points else {}),
                **({"refine": [dict(r) for r in self.refine]} if self.refine else {})}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @property
    def swept_keys(self) -> list[str]:
        """Dotted keys that take more than one value (``seed`` when there is more than one seed)."""
        keys = [f"{b}.{k}" for b in SWEPT_BLOCKS for k, v in getattr(self, b).items()
                if isinstance(v, tuple) and len(v) > 1]
        keys += [k for k in point_keys(self) if k not in keys]
        return keys + (["seed"] if len(self.seeds) > 1 else [])

    def runs(self) -> list[Run]:
        return expand_runs(self)


def _schemas(settings: Mapping[str, Any]) -> dict[str, Mapping[str, Param]]:
    return {"task": task_schema(settings["task.name"]), "model": model_schema(settings["model.name"]),
            "train": TRAIN_SCHEMA}


def _param_of(schemas: Mapping[str, Mapping[str, Param]], key: str) -> Param | None:
    block, _, leaf = key.partition(".")
    return schemas.get(block, {}).get(leaf)


def _at_new_default(p: Param | None, v: Any) -> bool:
    """A key added after v0.1 at its default: left out of ids, so older runs keep theirs."""
    return p is not None and p.new and v == p.default and type(v) is type(p.default)


def run_id_of(settings: Mapping[str, Any]) -> str:
    """A hash of the settings that determine the run's numbers: the same run has the same id anywhere."""
    schemas = _schemas(settings)
    # values as they are: 1.0 and 1 hash differently on purpose (types are schema-fixed)
    ident = {k: v for k, v in sorted(settings.items())
             if k not in ENGINE_ONLY and not _at_new_default(_param_of(schemas, k), v)}
    return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]


def static_signature(settings: Mapping[str, Any]) -> tuple:
    """The settings that decide shapes or the program: runs sharing it share one compiled program."""
    schemas = _schemas(settings)
    sig = []
    for k, v in sorted(settings.items()):
        if k == "seed" or k in ENGINE_ONLY:
            continue
        p = _param_of(schemas, k)
        if p is not None and not p.dynamic and not _at_new_default(p, v):
            sig.append((k, v))
    return tuple(sig)


def group_id_of(signature: tuple) -> str:
    return "g" + hashlib.sha1(json.dumps(signature).encode()).hexdigest()[:8]


def expand_runs(spec: SweepSpec) -> list[Run]:
    """The grid: the product of every swept key's values and the seeds, in a deterministic order."""
    keys, values = [], []
    for b in SWEPT_BLOCKS:
        for k, v in getattr(spec, b).items():
            keys.append(f"{b}.{k}")
            values.append(list(v) if isinstance(v, tuple) else [v])
    runs, seen = [], set()
    for combo in itertools.product(*values):
        base = dict(zip(keys, combo, strict=True))
        for seed in spec.seeds:
            settings = _resolve_defaults({**base, "seed": seed})
            rid = run_id_of(settings)
            if rid in seen:
                continue
            seen.add(rid)
            runs.append(Run(rid, group_id_of(static_signature(settings)), _freeze(settings)))
    runs += _point_runs(spec, keys, values, seen)
    return runs


def _resolve_defaults(settings: dict) -> dict:
    """Fill the defaults of the chosen task and model, and settle values that follow from others."""
    out = dict(settings)
    for block, schema in (("task", task_schema(out["task.name"])), ("model", model_schema(out["model.name"])),
                          ("train", TRAIN_SCHEMA)):
        for leaf, p in schema.items():
            out.setdefault(f"{block}.{leaf}", p.default)
    if out.get("task.data_seed") is None:
        out["task.data_seed"] = out["seed"]
    return dict(sorted(out.items()))


# ----------------------------------------------------------------------------------------------
# validation


def _check_value(p: Param, value: Any, where: str) -> Any:
    if value is None and p.nullable:
        return None
    if p.type in (int, float) and isinstance(value, str) and _NUMERIC.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string; a researcher means the number
        if p.type is float or not value.is_integer():
            pass
        elif abs(value) < 2**63:
            value = int(value)
    if p.type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if p.type is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    ok = isinstance(value, p.type) and not (p.type in (int, float) and isinstance(value, bool))
    if not ok:
        raise SpecError(f"{where}: expected {p.type.__name__}, got {type(value).__name__} {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(f"{where}: must be finite, got {value}")
    if p.choices is not None and value not in p.choices:
        raise SpecError(f"{where}: {value!r} is not one of {', '.join(map(str, p.choices))}"
                        f"{_suggest(str(value), [str(c) for c in p.choices])}")
    if p.check is not None:
        msg = p.check(value)
        if msg:
            raise SpecError(f"{where}: {msg}, got {value!r}")
    return value


def _check_block(block: str, raw: Any, schema: Mapping[str, Param], source: str) -> dict:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: '{block}' must be a mapping of keys, got {type(raw).__name__}")
    out = {}
    for key, value in raw.items():
        if key not in schema:
            raise SpecError(f"{source}: unknown key '{block}.{key}'{_suggest(str(key), list(schema))}")
        where = f"{source}: {block}.{key}"
        p = schema[key]
        vals = [_check_value(p, v, where) for v in expand_values(value, where)]
        if len(vals) > 1 and not p.sweepable:
            raise SpecError(f"{where}: this key cannot be swept (one value per sweep), got {vals}")
        out[key] = tuple(vals) if isinstance(value, (list, dict)) else vals[0]
    return out


def _as_list(v: Any) -> list:
    return list(v) if isinstance(v, tuple) else [v]


def check_name(name: Any, where: str) -> str:
    """A sweep name is one plain path component: results go to ``results/<name>/`` and nowhere else."""
    if not isinstance(name, str) or not name:
        raise SpecError(f"{where}: a sweep needs a name (a plain folder name), got {name!r}")
    bad = [c for c in name if c in "/\\" or ord(c) < 32 or ord(c) == 127]
    if bad or name in (".", "..") or name != name.strip():
        why = f"the character {bad[0]!r}" if bad else "leading/trailing space" if name != name.strip() else repr(name)
        raise SpecError(f"{where}: must be a plain folder name (letters, digits, -_.), not {why}: {name!r}")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise SpecError(f"{where}: not valid Unicode text (a lone surrogate): {name!r}") from None
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise SpecError(f"{where}: at most {MAX_NAME_BYTES} bytes, got {len(name.encode('utf-8', 'surrogatepass'))}")
    return name


def grid_size(spec_blocks: Sequence[Mapping[str, Any]], n_seeds: int) -> int:
    """The number of grid points (runs before deduplication), from list lengths alone."""
    n = n_seeds
    for b in spec_blocks:
        for v in b.values():
            n *= len(v) if isinstance(v, tuple) else 1
    return n


def from_dict(raw: dict, source: str = "<spec>", allow_large: bool = True) -> SweepSpec:
    """Validate a parsed sweep file; raises :class:`SpecError` naming the file and key.

    A grid of more than ``GRID_ASK`` runs needs ``allow_large`` (``--allow-large``); more than
    ``GRID_MAX`` is refused. (Results dirs written before re-read their own spec with the default.)
    """
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: a sweep file is a mapping with the blocks {', '.join(TOP_LEVEL)}")
    for key in raw:
        if key not in TOP_LEVEL:
            raise SpecError(f"{source}: unknown key '{key}'{_suggest(str(key), TOP_LEVEL)}")
    name = raw.get("name")
    check_name(name, f"{source}: name")
    seeds_raw = raw.get("seeds", 1)
    if isinstance(seeds_raw, bool) or not isinstance(seeds_raw, (int, list, dict)):
        raise SpecError(f"{source}: seeds: expected a count or a list of seeds, got {seeds_raw!r}")
    if isinstance(seeds_raw, int):
        if seeds_raw < 1:
            raise SpecError(f"{source}: seeds: at least 1, got {seeds_raw}")
        if seeds_raw > MAX_VALUES:
            raise SpecError(f"{source}: seeds: at most {MAX_VALUES:,} seeds, got {seeds_raw:,}")
        seeds = tuple(range(seeds_raw))
    else:
        seeds = tuple(expand_values(seeds_raw, f"{source}: seeds"))
        if not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**63 for s in seeds):
            raise SpecError(f"{source}: seeds: a list of seeds holds non-negative integers, got {list(seeds)}")
        if len(set(seeds)) != len(seeds):
            raise SpecError(f"{source}: seeds: repeated seed in {list(seeds)}")

    blocks = {}
    for block in ("task", "model"):
        b = raw.get(block) or {}
        if not isinstance(b, dict):
            raise SpecError(f"{source}: '{block}' must be a mapping of keys, got {type(b).__name__}")
        names = expand_values(b.get("name", "modular" if block == "task" else "transformer"), f"{source}: {block}.name")
        schemas = []
        for n in names:
            try:
                schemas.append(task_schema(n) if block == "task" else model_schema(n))
            except KeyError as e:
                raise SpecError(f"{source}: {block}.name: {e.args[0]}") from None
        # Keys valid for any of the chosen names; each name's own checks run on the expanded runs.
        merged: dict[str, Param] = {}
        for s in schemas:
            merged.update(s)
        blocks[block] = _check_block(block, b, merged, source)
        blocks[block].setdefault("name", names[0])
    blocks["train"] = _check_block("train", raw.get("train"), TRAIN_SCHEMA, source)
    analysis = _check_block("analysis", raw.get("analysis"), ANALYSIS_SCHEMA, source)
    for k, p in ANALYSIS_SCHEMA.items():
        analysis.setdefault(k, p.default)

    points, refine = _check_points(raw, blocks, source)
    n = grid_size([blocks["task"], blocks["model"], blocks["train"]], len(seeds))
    most = max(GRID_ASK, min(GRID_MAX, _ram_bytes() // 8192))  # a planned run costs a few KiB of host memory
    if n > most:
        raise SpecError(f"{source}: the grid has {n:,} runs; at most {most:,} on this machine (split it into "
                        "several sweeps)")
    if n > GRID_ASK and not allow_large:
        raise SpecError(f"{source}: the grid has {n:,} runs (more than {GRID_ASK:,}); pass --allow-large "
                        "if you mean it")
    spec = SweepSpec(name=name, task=_freeze(blocks["task"]), model=_freeze(blocks["model"]),
                     train=_freeze(blocks["train"]), analysis=_freeze(analysis), seeds=seeds, source=source,
                     points=points, refine=refine)
    _check_runs(spec)
    if analysis.get("snapshot_where"):
        check_snapshot_where(spec)
    if analysis.get("snapshot_steps") is not None:
        check_snapshot_steps(spec)
    return spec


def check_snapshot_steps(spec: SweepSpec) -> None:
    """``analysis.snapshot_steps``: 'log' or comma-separated steps within every run's budget, checked
    before anything trains (not after training, when the snapshots are taken)."""
    text = str(spec.analysis["snapshot_steps"]).strip()
    if text == "log":
        return
    where = f"{spec.source}: analysis.snapshot_steps"
    try:
        steps = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SpecError(f"{where}: 'log' or comma-separated steps (e.g. '0,500,1000'), got {text!r}") from None
    if not steps:
        raise SpecError(f"{where}: 'log' or comma-separated steps (e.g. '0,500,1000'), got {text!r}")
    budget = min(int(v) for v in _as_list(spec.train["steps"]))
    bad = [x for x in steps if not 0 <= x <= budget]
    if bad:
        raise SpecError(f"{where}: step {bad[0]} is outside 0..{budget} (train.steps)")


LABEL_COLUMNS = ("run_id", "group_id", "seed", "status", "steps_done", "diverged_step", "t_fit", "t_gen",
                 "delay", "phase")
LABEL_PATTERNS = (r"t_\w+", r"final_\w+_(acc|loss)")


def check_snapshot_where(spec: SweepSpec) -> None:
    """``analysis.snapshot_where``: a valid filter over known columns, before anything trains."""
    from gsweep import filters
    from gsweep.errors import UserError

    known = set(LABEL_COLUMNS)
    for block in ("task", "model"):
        for n in _as_list(getattr(spec, block)["name"]):
            schema = task_schema(n) if block == "task" else model_schema(n)
            known |= {f"{block}.{k}" for k in schema}
    known |= {f"train.{k}" for k in TRAIN_SCHEMA} - {f"train.{k}" for k in ("runs_per_chunk", "chunk_steps",
                                                                           "checkpoint_every")}
    try:
        filters.check(spec.analysis["snapshot_where"], known, f"{spec.source}: analysis.snapshot_where",
                      LABEL_PATTERNS)
    except UserError as e:
        raise SpecError(str(e)) from None


def _ram_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 16 << 30


def _pool_estimate(t: Mapping[str, Any]) -> tuple[int, int, int]:
    """(examples, tokens per example, vocabulary) a task's pool will hold, from its settings alone."""
    name = t["name"]
    if name == "modular":
        n_ops = len(str(t.get("op", "add")).split("|"))
        return t["p"] ** 2 * n_ops, 5, t["p"] + n_ops + 2
    if name == "modular_chain":
        return t["p"] ** 2 + t.get("n_hop2", 0) + t.get("n_hop3", 0), 8, t["p"] + 3
    if name == "composition":
        e, r = t["n_entities"], t["n_relations"]
        return e * r + t.get("max_inferred", 0) + t.get("n_ood", 0) + t.get("n_test", 0), 4, e + r + 1
    if name in ("khop", "sparse_parity"):
        width = t.get("seq_len", t.get("n_bits", 1)) + 2
        return t["pool_size"], width, t.get("alphabet", 2) + t.get("hops", 1)
    return 0, 0, 0


def check_sizes(settings: Mapping[str, Any], source: str) -> None:
    """Bounds on what one run allocates: steps, evaluations, the task's pool, the model's size."""
    steps, every = settings["train.steps"], settings["train.eval_every"]
    if steps > MAX_STEPS:
        raise SpecError(f"{source}: train.steps: at most {MAX_STEPS:,}, got {steps:,}")
    evals = steps // every + settings.get("train.early_evals", 0)
    if evals > MAX_EVALS:
        raise SpecError(f"{source}: train.eval_every: {steps:,} steps / {every:,} = {evals:,} evaluations per run; "
                        f"at most {MAX_EVALS:,} (raise train.eval_every)")
    task = {k[5:]: v for k, v in settings.items() if k.startswith("task.")}
    n, width, vocab = _pool_estimate(task)
    ram = _ram_bytes()
    if n > MAX_POOL or n * width * 8 > ram // 4:
        big = [k for k in ("p", "pool_size", "n_entities", "n_relations", "max_inferred") if k in task]
        key = f"task.{big[0]}" if big else "task"
        raise SpecError(f"{source}: {key}: the task's pool would hold {n:,} examples; at most "
                        f"{MAX_POOL:,} on this machine")
    params = param_estimate(settings)
    if params * 16 > ram // 2:
        name = settings["model.name"]
        sizes = ", ".join(f"model.{k}={settings[f'model.{k}']}" for k, p in model_schema(name).items()
                          if p.type is int and f"model.{k}" in settings)
        raise SpecError(f"{source}: model: about {params:,} parameters per run (model.name={name}"
                        f"{', ' + sizes if sizes else ''}) do not fit this machine's {ram >> 30} GiB")


def param_estimate(settings: Mapping[str, Any]) -> int:
    """Parameters of one run, from its model entry's ``param_count`` (the task's vocabulary, an
    upper bound, stands for its classes)."""
    name = settings["model.name"]
    cfg = tuple((k, settings.get(f"model.{k}", p.default)) for k, p in model_schema(name).items())
    _, width, vocab = _pool_estimate({k[5:]: v for k, v in settings.items() if k.startswith("task.")})
    return _param_count(name, cfg, max(vocab, 2), max(width, 1))


@functools.lru_cache(maxsize=1024)
def _param_count(name: str, cfg: tuple, vocab: int, width: int) -> int:
    return int(get_model(name).param_count(dict(cfg), vocab, vocab, width))


def _check_runs(spec: SweepSpec) -> None:
    """Per-run checks: keys valid for the run's task/model, and cross-key rules (heads | d_model ...)."""
    from gsweep.schema import check_combination

    for block in ("task", "model"):
        names = _as_list(getattr(spec, block)["name"])
        for key in getattr(spec, block):
            if key == "name":
                continue
            owners = [n for n in names if key in (task_schema(n) if block == "task" else model_schema(n))]
            if len(owners) < len(names):
                bad = [n for n in names if n not in owners]
                raise SpecError(f"{spec.source}: unknown key '{block}.{key}' for {block} {bad[0]!r}")
    # Cross-key rules need the combinations; check each distinct combination of the keys involved once.
    seen = set()
    keys = [f"{b}.{k}" for b in SWEPT_BLOCKS for k in getattr(spec, b)]
    values = [_as_list(getattr(spec, k.split(".")[0])[k.split(".", 1)[1]]) for k in keys]
    combos = [dict(zip(keys, c, strict=True)) for c in itertools.product(*values)]
    combos += [{**c, **p} for p in spec.points for c in _other_combos(keys, values, p)]
    for combo in combos:
        settings = _resolve_defaults({**combo, "seed": spec.seeds[0]})
        frozen = tuple(sorted((k, v) for k, v in settings.items() if k not in ("seed", "task.data_seed")))
        if frozen in seen:
            continue
        seen.add(frozen)
        msg = check_combination(settings)
        if msg:
            raise SpecError(f"{spec.source}: {msg}")
        check_sizes(settings, spec.source)


# ----------------------------------------------------------------------------------------------
# points: runs added outside the product grid (what `gsweep refine` writes)
#
#   points:
#     - {task.data_frac: 0.5, train.weight_decay: 0.3}
#
# Each point fixes the dotted keys it names (task.*, model.*, train.*); every key it does not name
# takes each of its grid values (product), and every point runs under every seed. Defaults, run ids
# and groups follow the same rules as grid runs, and a point that is already a grid run (same run id)
# adds nothing. ``refine:`` is a note of the refinement rounds (a list of mappings); it changes no run.


def point_keys(spec: SweepSpec) -> list[str]:
    """Keys the points vary: those named by a point that take more than one value over the grid and
    the points together (a key the grid leaves at its default counts the default as one value)."""
    keys: list[str] = []
    for p in spec.points:
        for k in p:
            if k in keys:
                continue
            block, leaf = k.split(".", 1)
            grid = getattr(spec, block)
            vals = {json.dumps(v) for v in _as_list(grid[leaf])} if leaf in grid else {"<default>"}
            vals |= {json.dumps(q[k]) for q in spec.points if k in q}
            if len(vals) > 1:
                keys.append(k)
    return keys


def _other_combos(keys: list[str], values: list[list], point: Mapping[str, Any]) -> list[dict]:
    others = [(k, v) for k, v in zip(keys, values, strict=True) if k not in point]
    return [dict(zip([k for k, _ in others], c, strict=True)) for c in itertools.product(*[v for _, v in others])]


def _point_runs(spec: SweepSpec, keys: list[str], values: list[list], seen: set) -> list[Run]:
    runs = []
    for p in spec.points:
        for combo in _other_combos(keys, values, p):
            for seed in spec.seeds:
                settings = _resolve_defaults({**combo, **p, "seed": seed})
                rid = run_id_of(settings)
                if rid not in seen:
                    seen.add(rid)
                    runs.append(Run(rid, group_id_of(static_signature(settings)), _freeze(settings)))
    return runs


def _check_points(raw: dict, blocks: dict, source: str) -> tuple[tuple, tuple]:
    """Validate ``points:`` (a list of mappings of dotted keys to one value each) and ``refine:``."""
    pts = raw.get("points") or []
    if not isinstance(pts, list):
        raise SpecError(f"{source}: points: expected a list of mappings such as "
                        f"{{task.data_frac: 0.5, train.weight_decay: 0.3}}, got {type(pts).__name__}")
    out = []
    for i, p in enumerate(pts):
        where = f"{source}: points[{i}]"
        if not isinstance(p, dict) or not p:
            raise SpecError(f"{where}: expected a mapping of dotted keys to values, got {p!r}")
        point = {}
        for key, value in p.items():
            block, _, leaf = str(key).partition(".")
            if block not in SWEPT_BLOCKS or not leaf:
                raise SpecError(f"{where}: {key!r}: a point names dotted keys of task, model or train "
                                "(e.g. train.weight_decay)")
            if leaf == "name":
                raise SpecError(f"{where}: {key}: a point cannot change the {block}; list it in the {block} block")
            name = blocks[block].get("name")
            names = _as_list(name)
            schema = TRAIN_SCHEMA if block == "train" else {}
            for n in names if block != "train" else ():
                schema = {**schema, **(task_schema(n) if block == "task" else model_schema(n))}
            if leaf not in schema:
                raise SpecError(f"{where}: unknown key '{key}'{_suggest(leaf, list(schema))}")
            if isinstance(value, (list, dict)):
                raise SpecError(f"{where}: {key}: a point holds one value per key, got {value!r}")
            param = schema[leaf]
            if not param.sweepable:
                raise SpecError(f"{where}: {key}: this key cannot be swept (one value per sweep)")
            point[f"{block}.{leaf}"] = _check_value(param, value, f"{where}: {key}")
        out.append(_freeze(dict(sorted(point.items()))))
    notes = raw.get("refine") or []
    if not isinstance(notes, list) or not all(isinstance(n, dict) for n in notes):
        raise SpecError(f"{source}: refine: a list of mappings (the rounds of `gsweep refine`), got {notes!r}")
    return tuple(out), tuple(_freeze(n) for n in notes)


def load_spec(path: str | Path, overrides: Sequence[str] = (), allow_large: bool = False) -> SweepSpec:
    """Read, override (``--set``), expand and validate a sweep file."""
    raw = load_raw(path)
    raw = apply_overrides(raw, overrides, str(path))
    return from_dict(raw, str(path), allow_large=allow_large)
