"""Where a model-step's time goes on XLA:CPU: per-op times of a compiled chunk program.

XLA:CPU records one trace event per executed HLO instruction when ``XLA_FLAGS`` holds
``--xla_cpu_enable_xprof_traceme=true`` (set before JAX starts). :func:`hlo_ops` reads the compiled
program's HLO text (``compiled.as_text()``) into what each instruction is; :func:`op_times` sums a
``jax.profiler`` trace's events per instruction; :func:`breakdown` joins them into milliseconds per
model-step, split into matmuls (a ``dot``, or a fusion whose computation holds one, e.g. XLA's
YNNPACK/oneDNN fusions) and everything else. ``scripts/cpu_step_profile.py`` runs it on the bench's
standard recipe. This module imports no JAX. (Not `profile.py`: the PyTorch peer runs as a script from this
folder, and a `profile` module here would shadow the standard library's.)
"""

from __future__ import annotations

import collections
import gzip
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

_COMP_RE = re.compile(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->\s*.*\{\s*$")
_INSTR_RE = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\S+?\[[^\]]*\](?:\{[^}]*\})?|\([^=]*?\)|\S+)\s+([\w\-]+)\(")
_CALLS_RE = re.compile(r"calls=%?([\w.\-]+)")
_OPNAME_RE = re.compile(r'op_name="([^"]*)"')


def hlo_ops(hlo_text: str) -> dict[str, dict[str, str]]:
    """{instruction name: {"opcode", "shape", "kind" ("matmul" | "other"), "source"}} of an HLO module's
    text. A fusion is a matmul when the computation it calls (or one that one calls) holds a dot."""
    comp_instrs: dict[str, list[tuple[str, str, str, str, list[str]]]] = collections.defaultdict(list)
    comp = ""
    for line in hlo_text.splitlines():
        m = _COMP_RE.match(line)
        if m and "=" not in line.split("(")[0]:
            comp = m.group(1)
            continue
        m = _INSTR_RE.match(line)
        if not m:
            continue
        name, shape, opcode = m.groups()
        src = _OPNAME_RE.search(line)
        comp_instrs[comp].append((name, shape, opcode, src.group(1) if src else "", _CALLS_RE.findall(line)))

    has_dot: dict[str, bool] = {}

    def holds_dot(c: str, seen: frozenset = frozenset()) -> bool:
        if c not in has_dot:
            has_dot[c] = c not in seen and any(
                op in ("dot", "convolution") or any(holds_dot(k, seen | {c}) for k in calls)
                for _, _, op, _, calls in comp_instrs.get(c, ()))
        return has_dot[c]

    out: dict[str, dict[str, str]] = {}
    for instrs in comp_instrs.values():
        for name, shape, opcode, src, calls in instrs:
            matmul = opcode in ("dot", "convolution") or (opcode == "fusion" and any(holds_dot(k) for k in calls))
            out[name] = {"opcode": opcode, "shape": shape, "kind": "matmul" if matmul else "other", "source": src}
    return out


def trace_events(trace_dir: str | Path) -> list[dict[str, Any]]:
    """The complete ('X') events of the newest ``*.trace.json.gz`` under a ``jax.profiler.trace`` dir."""
    files = sorted(Path(trace_dir).rglob("*.trace.json.gz"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise FileNotFoundError(f"{trace_dir}: no *.trace.json.gz (did the profiler run?)")
    with gzip.open(files[-1], "rt") as f:
        return [e for e in json.load(f).get("traceEvents", []) if e.get("ph") == "X"]


def op_times(events: Iterable[Mapping[str, Any]],
             names: Iterable[str]) -> tuple[collections.Counter, collections.Counter]:
    """Microseconds and counts per HLO instruction: the events named like one of ``names``."""
    names = set(names)
    us: collections.Counter = collections.Counter()
    n: collections.Counter = collections.Counter()
    for e in events:
        if e.get("name") in names:
            us[e["name"]] += float(e.get("dur", 0.0))
            n[e["name"]] += 1
    return us, n


def breakdown(ops: Mapping[str, Mapping[str, str]], us: Mapping[str, float], counts: Mapping[str, int],
              model_steps: int, top: int = 15) -> dict[str, Any]:
    """Milliseconds per model-step: in all, in matmuls, in the rest, and the ``top`` instructions."""
    if model_steps < 1:
        raise ValueError(f"model_steps must be positive, got {model_steps}")
    per = {k: v / 1e3 / model_steps for k, v in us.items()}
    total = sum(per.values())
    matmul = sum(v for k, v in per.items() if ops[k]["kind"] == "matmul")
    rows = [{"op": k, "ms_per_model_step": v, "share": v / total if total else 0.0, "calls": int(counts[k]),
             **ops[k]} for k, v in sorted(per.items(), key=lambda kv: -kv[1])[:top]]
    return {"model_steps": model_steps, "ms_per_model_step": total, "matmul_ms": matmul,
            "other_ms": total - matmul, "matmul_share": matmul / total if total else 0.0, "top": rows}
