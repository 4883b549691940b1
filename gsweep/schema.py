"""What keys a sweep file may hold, their types, defaults and limits, and which are static.

Static keys decide array shapes or the compiled program (runs that share them form one group);
dynamic keys are per-run values, vmapped inside one program. This module imports no JAX, so
`gsweep validate` and the analysis side stay light.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class Param:
    """One key of a block: its type, default, limits and whether it is a per-run (dynamic) value."""

    type: type
    default: Any
    dynamic: bool = False
    check: Callable[[Any], str | None] | None = None
    choices: tuple | None = None
    nullable: bool = False
    sweepable: bool = True
    doc: str = ""


def at_least(lo: float) -> Callable[[Any], str | None]:
    return lambda v: None if v >= lo else f"must be >= {lo}"


def positive(v: Any) -> str | None:
    return None if v > 0 else "must be > 0"


def in_unit_open_closed(v: Any) -> str | None:
    return None if 0 < v <= 1 else "must lie in (0, 1]"


def in_unit_closed_open(v: Any) -> str | None:
    return None if 0 <= v < 1 else "must lie in [0, 1)"


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % k for k in range(2, int(n**0.5) + 1))


# Keys every task has.
COMMON_TASK = {
    "name": Param(str, "modular", doc="task from the registry (gsweep.tasks)"),
    "data_frac": Param(float, 0.3, dynamic=True, check=in_unit_open_closed,
                       doc="share of the example pool used for training"),
    "data_seed": Param(int, None, dynamic=True, nullable=True, check=at_least(0),
                       doc="seed of the train/test split; null: the run's seed"),
}

MODEL_SCHEMAS: dict[str, dict[str, Param]] = {
    "transformer": {
        "name": Param(str, "transformer"),
        "depth": Param(int, 1, check=at_least(1), doc="number of blocks"),
        "d_model": Param(int, 128, check=at_least(1)),
        "heads": Param(int, 4, check=at_least(1)),
        "d_mlp": Param(int, 512, check=at_least(1)),
        "layernorm": Param(bool, False, doc="pre-LayerNorm in each block and before the unembedding"),
        "activation": Param(str, "relu", choices=("relu", "gelu")),
        "init_scale": Param(float, 1.0, dynamic=True, check=positive,
                            doc="multiplies every initial weight (Liu et al. 2022's knob)"),
    },
    "mlp": {
        "name": Param(str, "mlp"),
        "depth": Param(int, 2, check=at_least(1), doc="hidden layers"),
        "d_model": Param(int, 128, check=at_least(1), doc="embedding width per input token"),
        "d_mlp": Param(int, 512, check=at_least(1), doc="hidden width"),
        "activation": Param(str, "relu", choices=("relu", "gelu")),
        "init_scale": Param(float, 1.0, dynamic=True, check=positive),
    },
}

TRAIN_SCHEMA: dict[str, Param] = {
    "steps": Param(int, 1000, check=at_least(1), doc="optimiser steps"),
    "eval_every": Param(int, 100, check=at_least(1), doc="steps between evaluations"),
    "early_evals": Param(int, 8, check=at_least(0),
                         doc="extra log-spaced evaluations before the first eval_every"),
    "batch_size": Param(int, 0, check=at_least(0), doc="0: full batch; else per-run shuffled minibatches"),
    "lr": Param(float, 1e-3, dynamic=True, check=positive),
    "weight_decay": Param(float, 1.0, dynamic=True, check=at_least(0), doc="AdamW decoupled decay"),
    "b1": Param(float, 0.9, dynamic=True, check=in_unit_closed_open),
    "b2": Param(float, 0.98, dynamic=True, check=in_unit_closed_open),
    "warmup": Param(int, 0, dynamic=True, check=at_least(0), doc="linear warm-up steps"),
    "precision": Param(str, "highest", choices=("highest", "tf32", "bf16"),
                       doc="matmul precision: exact float32, TF32, or bf16 compute with float32 master weights"),
    "runs_per_chunk": Param(int, 0, check=at_least(0), sweepable=False,
                            doc="0: sized automatically from memory; else most runs in one compiled batch"),
    "chunk_steps": Param(int, 0, check=at_least(0), sweepable=False,
                         doc="0: automatic; steps per compiled call (metrics come back once per call)"),
    "checkpoint_every": Param(int, 1, check=at_least(1), sweepable=False,
                              doc="checkpoint every N step-chunks (and at the end)"),
    "batching": Param(str, "auto", choices=("auto", "map", "vmap"), sweepable=False,
                      doc="how a device steps its runs: map (one at a time, bitwise exact), vmap (batched); "
                          "auto: map on CPU, vmap on accelerators"),
}

ANALYSIS_SCHEMA: dict[str, Param] = {
    "threshold": Param(float, 0.99, check=in_unit_open_closed, sweepable=False,
                       doc="accuracy that counts as fitted / generalised"),
    "gap": Param(float, 10.0, check=positive, sweepable=False,
                 doc="grokking when t_gen >= gap * t_fit (relative) or t_gen - t_fit >= gap (absolute)"),
    "gap_mode": Param(str, "relative", choices=("relative", "absolute"), sweepable=False),
    "snapshot_where": Param(str, None, nullable=True, sweepable=False,
                            doc="pandas query over runs; matching runs get parameter snapshots"),
    "snapshot_steps": Param(str, "log", sweepable=False, doc="'log' or comma-separated steps"),
}


def task_schema(name: str) -> dict[str, Param]:
    from gsweep.tasks import TASKS

    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(TASKS))}")
    return {**COMMON_TASK, **TASKS[name].params}


def model_schema(name: str) -> dict[str, Param]:
    if name not in MODEL_SCHEMAS:
        raise KeyError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODEL_SCHEMAS))}")
    return MODEL_SCHEMAS[name]


def check_combination(settings: Mapping[str, Any]) -> str | None:
    """Rules across keys of one run; the message names the key."""
    from gsweep.tasks import TASKS

    if settings["model.name"] == "transformer":
        d, h = settings["model.d_model"], settings["model.heads"]
        if d % h:
            return f"model.heads: {h} heads do not divide model.d_model = {d}"
    if settings["train.eval_every"] > settings["train.steps"]:
        return (f"train.eval_every: {settings['train.eval_every']} is more than train.steps = "
                f"{settings['train.steps']}: no evaluation would run")
    task = {k[5:]: v for k, v in settings.items() if k.startswith("task.")}
    return TASKS[settings["task.name"]].check(task)
