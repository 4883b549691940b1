"""Points: runs added outside the product grid (what `gsweep refine` writes), and their checks.

    points:
      - {task.data_frac: 0.5, train.weight_decay: 0.3}

Each point fixes the dotted keys it names (task.*, model.*, train.*); every key it does not name
takes each of its grid values (product), and every point runs under every seed. Defaults, run ids
and groups follow the same rules as grid runs, and a point that is already a grid run (same run id)
adds nothing. ``refine:`` is a note of the refinement rounds (a list of mappings); it changes no run.
(The runs themselves are made in :mod:`gsweep.spec` with the grid's.)
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from gsweep.schema import TRAIN_SCHEMA, model_schema, task_schema
from gsweep.spec.sweepfile import SWEPT_BLOCKS, SpecError, _as_list, _freeze, _suggest
from gsweep.spec.validate import _check_value


def _other_combos(keys: list[str], values: list[list], point: Mapping[str, Any]) -> list[dict]:
    others = [(k, v) for k, v in zip(keys, values, strict=True) if k not in point]
    return [dict(zip([k for k, _ in others], c, strict=True)) for c in itertools.product(*[v for _, v in others])]


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
