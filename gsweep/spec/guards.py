"""Size guards: bounds on what a sweep allocates (the grid, steps, evaluations, a task's pool, a
model's parameters from its entry's ``param_count``), checked before anything is materialised."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

from gsweep.models import get_model
from gsweep.schema import model_schema
from gsweep.spec.sweepfile import SpecError

# Sizes that allocate, bounded before anything is materialised (a typo must not eat the machine).
GRID_ASK = 100_000            # runs above which `--allow-large` is needed
GRID_MAX = 10_000_000         # runs above which a grid is refused outright
MAX_STEPS = 1_000_000_000     # train.steps (step counters are int32 on the device)
MAX_EVALS = 100_000           # evaluations per run (curve rows)
MAX_POOL = 50_000_000         # examples in one task's pool



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
