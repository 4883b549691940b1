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
import hashlib
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from gsweep.schema import ANALYSIS_SCHEMA, TRAIN_SCHEMA, Param, model_schema, task_schema

TOP_LEVEL = ("name", "task", "model", "train", "analysis", "seeds")
SWEPT_BLOCKS = ("task", "model", "train")
# Keys that change how the engine schedules work, never the numbers a run produces:
# they are left out of run ids and group signatures.
ENGINE_ONLY = frozenset({"train.runs_per_chunk", "train.chunk_steps", "train.checkpoint_every", "train.batching"})


class SpecError(ValueError):
    """A sweep file (or a --set override) is invalid. The message names the file and the key."""


# ----------------------------------------------------------------------------------------------
# loading


def _yaml_load(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise SpecError(f"{source}: malformed YAML{where}: {problem}") from None


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
    if not path.exists():
        raise SpecError(f"{path}: no such sweep file")
    raw = _yaml_load(path.read_text(), str(path))
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
        if not (isinstance(args, list) and len(args) == 3 and all(isinstance(a, (int, float)) for a in args)
                and isinstance(args[2], int) and args[2] >= 1):
            raise SpecError(f"{where}: {kind} takes [lo, hi, n] with n a positive integer, got {args}")
        lo, hi, n = args
        pts = [lo + (hi - lo) * i / (n - 1) for i in range(n)] if n > 1 else [lo]
        if kind == "logspace":
            return [float(f"{10.0 ** x:.12g}") for x in pts]
        return [float(f"{x:.12g}") for x in pts]
    if kind == "range":
        if isinstance(args, int):
            args = [args]
        if not (isinstance(args, list) and 1 <= len(args) <= 3 and all(isinstance(a, int) for a in args)):
            raise SpecError(f"{where}: range takes n, [start, stop] or [start, stop, step] integers, got {args}")
        return list(range(*args))
    raise SpecError(f"{where}: unknown helper {kind!r}{_suggest(kind, ['logspace', 'linspace', 'range'])}")


def expand_values(value: Any, where: str) -> list:
    """A leaf's list of values: a scalar gives one value, a list or helper gives several."""
    helper = _expand_helper(value, where)
    if helper is not None:
        return helper
    if isinstance(value, list):
        out: list = []
        for v in value:
            h = _expand_helper(v, where)
            if h is not None:
                out.extend(h)
            elif isinstance(v, (list, dict)):
                raise SpecError(f"{where}: a list of values holds scalars (or helpers), got {v!r}")
            else:
                out.append(v)
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

    def to_dict(self) -> dict:
        def plain(m):
            return {k: (list(v) if isinstance(v, tuple) else v) for k, v in m.items()}
        return {"name": self.name, "task": plain(self.task), "model": plain(self.model),
                "train": plain(self.train), "analysis": dict(self.analysis), "seeds": list(self.seeds)}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @property
    def swept_keys(self) -> list[str]:
        """Dotted keys that take more than one value (``seed`` when there is more than one seed)."""
        keys = [f"{b}.{k}" for b in SWEPT_BLOCKS for k, v in getattr(self, b).items()
                if isinstance(v, tuple) and len(v) > 1]
        return keys + (["seed"] if len(self.seeds) > 1 else [])

    def runs(self) -> list[Run]:
        return expand_runs(self)


def _to_jsonable(v: Any) -> Any:
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return v  # keep floats as floats: 1.0 and 1 hash differently on purpose (types are schema-fixed)
    return v


def run_id_of(settings: Mapping[str, Any]) -> str:
    """A hash of the settings that determine the run's numbers: the same run has the same id anywhere."""
    ident = {k: _to_jsonable(v) for k, v in sorted(settings.items()) if k not in ENGINE_ONLY}
    return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]


def static_signature(settings: Mapping[str, Any]) -> tuple:
    """The settings that decide shapes or the program: runs sharing it share one compiled program."""
    tname, mname = settings["task.name"], settings["model.name"]
    schemas = {"task": task_schema(tname), "model": model_schema(mname), "train": TRAIN_SCHEMA}
    sig = []
    for k, v in sorted(settings.items()):
        if k == "seed" or k in ENGINE_ONLY:
            continue
        block, leaf = k.split(".", 1)
        if block in schemas and not schemas[block][leaf].dynamic:
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


def from_dict(raw: dict, source: str = "<spec>") -> SweepSpec:
    """Validate a parsed sweep file; raises :class:`SpecError` naming the file and key."""
    for key in raw:
        if key not in TOP_LEVEL:
            raise SpecError(f"{source}: unknown key '{key}'{_suggest(str(key), TOP_LEVEL)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name or "/" in name:
        raise SpecError(f"{source}: name: a sweep needs a name (a string without '/'), got {name!r}")
    seeds_raw = raw.get("seeds", 1)
    if isinstance(seeds_raw, bool) or not isinstance(seeds_raw, (int, list, dict)):
        raise SpecError(f"{source}: seeds: expected a count or a list of seeds, got {seeds_raw!r}")
    if isinstance(seeds_raw, int):
        if seeds_raw < 1:
            raise SpecError(f"{source}: seeds: at least 1, got {seeds_raw}")
        seeds = tuple(range(seeds_raw))
    else:
        seeds = tuple(expand_values(seeds_raw, f"{source}: seeds"))
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
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

    spec = SweepSpec(name=name, task=_freeze(blocks["task"]), model=_freeze(blocks["model"]),
                     train=_freeze(blocks["train"]), analysis=_freeze(analysis), seeds=seeds, source=source)
    _check_runs(spec)
    return spec


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
    for combo in itertools.product(*values):
        settings = _resolve_defaults({**dict(zip(keys, combo, strict=True)), "seed": spec.seeds[0]})
        frozen = tuple(sorted((k, v) for k, v in settings.items() if k not in ("seed", "task.data_seed")))
        if frozen in seen:
            continue
        seen.add(frozen)
        msg = check_combination(settings)
        if msg:
            raise SpecError(f"{spec.source}: {msg}")


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> SweepSpec:
    """Read, override (``--set``), expand and validate a sweep file."""
    raw = load_raw(path)
    raw = apply_overrides(raw, overrides, str(path))
    return from_dict(raw, str(path))
