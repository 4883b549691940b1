"""What keys a sweep file may hold, their types, defaults and limits, and which are static.

Static keys decide array shapes or the compiled program (runs that share them form one group);
dynamic keys are per-run values, vmapped inside one program. This module imports no JAX, so
`gsweep validate` and the analysis side stay light.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gsweep.models import get_model, model_params
from gsweep.params import (
    Param,
    at_least,
    in_unit_closed_open,
    in_unit_open_closed,
    positive,
)
from gsweep.registry import TRAIN_KEYS
from gsweep.tasks import TASKS
from gsweep.train.losses import LOSSES
from gsweep.train.optimizers import OPTIMIZERS

# Keys every task has.
COMMON_TASK = {
    "name": Param(str, "modular", doc="task from the registry (gsweep.tasks)"),
    "data_frac": Param(float, 0.3, dynamic=True, check=in_unit_open_closed,
                       doc="share of the example pool used for training"),
    "data_seed": Param(int, None, dynamic=True, nullable=True, check=at_least(0),
                       doc="seed of the train/test split; null: the run's seed"),
}

_TRAIN: dict[str, Param] = {
    "steps": Param(int, 1000, check=at_least(1), doc="optimiser steps"),
    "eval_every": Param(int, 100, check=at_least(1), doc="steps between evaluations"),
    "early_evals": Param(int, 8, check=at_least(0),
                         doc="extra log-spaced evaluations before the first eval_every"),
    "batch_size": Param(int, 0, check=at_least(0), doc="0: full batch; else per-run shuffled minibatches"),
    "lr": Param(float, 1e-3, dynamic=True, check=positive),
    "optimizer": Param(str, "adamw", check=OPTIMIZERS.known, new=True,
                       doc="from the registry (gsweep.train.optimizers): " + ", ".join(OPTIMIZERS)),
    "weight_decay": Param(float, 1.0, dynamic=True, check=at_least(0),
                          doc="decoupled decay (adamw, lion, muon); L2 in the loss (adam, sgd)"),
    "b1": Param(float, 0.9, dynamic=True, check=in_unit_closed_open),
    "b2": Param(float, 0.98, dynamic=True, check=in_unit_closed_open),
    "warmup": Param(int, 0, dynamic=True, check=at_least(0), doc="steps of linear learning-rate warm-up (each optimizer's own schedule)"),
    "alpha_lr_scaling": Param(bool, False, new=True,
                              doc="the optimizer's learning rate divided by model.output_scale^2 (Kumar et al. 2024)"),
    "loss": Param(str, "softmax_ce", check=LOSSES.known, new=True,
                  doc="cross-entropy on softmax, or on StableMax (Prieto et al. 2025)"),
    "orthogonal_grad": Param(bool, False, new=True,
                             doc="⊥Grad: drop each gradient's component along its weights, keep its norm"),
    "grokfast": Param(str, "none", choices=("none", "ema", "ma"), new=True,
                      doc="Grokfast gradient filter (Lee et al. 2024): g + lamb * (EMA or window mean of g)"),
    "grokfast_alpha": Param(float, 0.98, dynamic=True, check=in_unit_closed_open, new=True,
                            doc="EMA decay of grokfast=ema"),
    "grokfast_lamb": Param(float, 2.0, dynamic=True, check=at_least(0), new=True,
                           doc="amplification of the filtered gradient"),
    "grokfast_window": Param(int, 100, check=at_least(1), new=True, doc="window of grokfast=ma (steps)"),
    "stop_when_generalized": Param(int, 0, check=at_least(0), new=True,
                                   doc="0: off; else stop a run once every evaluated split has stayed at or above "
                                       "analysis.threshold for this many steps (README: Stop decided runs)"),
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
                            doc="filter over runs (as --where); matching runs get parameter snapshots"),
    "snapshot_steps": Param(str, "log", sweepable=False, doc="'log' or comma-separated steps"),
}

# The train block: the keys above, then those the optimizer entries declare (an entry registered
# later adds its keys here when it registers; a clash is refused there).
TRAIN_KEYS.declare("the schema", _TRAIN, first=True)
TRAIN_SCHEMA: dict[str, Param] = TRAIN_KEYS


def task_schema(name: str) -> dict[str, Param]:
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(TASKS))}")
    return {**COMMON_TASK, **TASKS[name].params}


def model_schema(name: str) -> dict[str, Param]:
    return model_params(name)  # KeyError naming the valid models


def hyper_params(model_name: str) -> dict[str, Param]:
    """The per-run (dynamic) model.* and train.* keys: the engine stacks exactly these into the
    run's hyperparameter pytree (task keys act through the split masks instead)."""
    out = {f"model.{k}": p for k, p in model_schema(model_name).items() if p.dynamic}
    out.update({f"train.{k}": p for k, p in TRAIN_SCHEMA.items() if p.dynamic})
    return out


def check_combination(settings: Mapping[str, Any]) -> str | None:
    """Rules across keys of one run; the message names the key."""
    msg = get_model(settings["model.name"]).check(
        {k[6:]: v for k, v in settings.items() if k.startswith("model.")})
    if msg:
        return msg
    if settings["train.eval_every"] > settings["train.steps"]:
        return (f"train.eval_every: {settings['train.eval_every']} is more than train.steps = "
                f"{settings['train.steps']}: no evaluation would run")
    task = {k[5:]: v for k, v in settings.items() if k.startswith("task.")}
    return TASKS[settings["task.name"]].check(task)


def key_table(task: str = "modular", model: str = "transformer") -> str:
    """The README's key table (markdown), rendered from the declarations: the README follows the schema."""
    def fmt(v: Any) -> str:
        return "null" if v is None else str(v)

    rows = ["| key | type | default | kind | meaning |", "| --- | --- | --- | --- | --- |"]
    blocks = (("task", task_schema(task)), ("model", model_schema(model)), ("train", TRAIN_SCHEMA),
              ("analysis", ANALYSIS_SCHEMA))
    for block, schema in blocks:
        for k, p in schema.items():
            if block == "model" and k == "name":
                continue
            doc = p.doc or (f"one of {', '.join(map(str, p.choices))}" if p.choices else "")
            rows.append(f"| `{block}.{k}` | {p.type.__name__} | `{fmt(p.default)}` | "
                        f"{'per run' if p.dynamic else 'static'} | {doc} |")
    return "\n".join(rows)
