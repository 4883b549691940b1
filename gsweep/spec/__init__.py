"""Sweep files: YAML -> validated, frozen :class:`SweepSpec` -> one :class:`Run` per grid point.

A sweep file has the top-level blocks ``name``, ``task``, ``model``, ``train``, ``analysis`` and
``seeds``. Any leaf under ``task``, ``model`` and ``train`` may be a list, which sweeps that key;
``{logspace: [lo, hi, n]}``, ``{linspace: [lo, hi, n]}`` and ``{range: n}`` (or ``[start, stop]``,
``[start, stop, step]``) expand to lists, also inside a list. Every key is checked against the
schema of the chosen task and model (see :mod:`gsweep.schema`); every error names the file and the
key and is raised before anything is compiled or written.

This module is the public face (:func:`load_spec`, :func:`from_dict`, :class:`SweepSpec`,
:class:`Run`, :class:`SpecError`) and what works on a whole spec; the parts live beside it:
:mod:`~gsweep.spec.sweepfile` (YAML, ``--set``, list helpers), :mod:`~gsweep.spec.validate`
(values, blocks, names), :mod:`~gsweep.spec.identity` (run ids, group signatures),
:mod:`~gsweep.spec.guards` (size and memory bounds), :mod:`~gsweep.spec.points` (``points:``).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from gsweep.params import Param
from gsweep.schema import ANALYSIS_SCHEMA, TRAIN_SCHEMA, model_schema, task_schema
from gsweep.spec.guards import GRID_ASK, GRID_MAX, _ram_bytes, check_sizes
from gsweep.spec.identity import _resolve_defaults, group_id_of, run_id_of, static_signature
from gsweep.spec.points import _check_points, _other_combos
from gsweep.spec.sweepfile import (
    MAX_VALUES,
    SWEPT_BLOCKS,
    TOP_LEVEL,
    SpecError,
    _as_list,
    _freeze,
    _suggest,
    apply_overrides,
    expand_values,
    load_raw,
)
from gsweep.spec.validate import _check_block, check_name, grid_size

# ----------------------------------------------------------------------------------------------
# the frozen objects


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


# ----------------------------------------------------------------------------------------------
# the runs: the grid's and the points' (see gsweep.spec.points)


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


# ----------------------------------------------------------------------------------------------
# validation of a whole sweep


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


def load_spec(path: str | Path, overrides: Sequence[str] = (), allow_large: bool = False) -> SweepSpec:
    """Read, override (``--set``), expand and validate a sweep file."""
    raw = load_raw(path)
    raw = apply_overrides(raw, overrides, str(path))
    return from_dict(raw, str(path), allow_large=allow_large)
