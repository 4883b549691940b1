"""Run identity: a run's id (a hash of the settings that decide its numbers), the static signature
its group shares (the settings that decide the compiled program) and the group's id, and the
defaults filled in before either is taken.

Existing results dirs are keyed by these ids: a change here must leave every id as it was.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from gsweep.params import Param
from gsweep.schema import TRAIN_SCHEMA, model_schema, task_schema

# Keys that change how the engine schedules work, never the numbers a run produces:
# they are left out of run ids and group signatures.
ENGINE_ONLY = frozenset({"train.runs_per_chunk", "train.chunk_steps", "train.checkpoint_every", "train.batching"})



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
