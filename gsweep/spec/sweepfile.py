"""Sweep files as text: the YAML read strictly (no key twice, no alias bomb), ``--set`` overrides,
and the list helpers (``logspace``, ``linspace``, ``range``) that expand a leaf to its values.

Every error is a :class:`SpecError` that names the file and the key.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

TOP_LEVEL = ("name", "task", "model", "train", "analysis", "seeds", "points", "refine")
SWEPT_BLOCKS = ("task", "model", "train")


# Sizes that allocate, bounded before anything is materialised (a typo must not eat the machine).
MAX_VALUES = 1_000_000        # values in one list, helper or seeds count
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



def _as_list(v: Any) -> list:
    return list(v) if isinstance(v, tuple) else [v]


def _freeze(d: Mapping) -> Mapping:
    return MappingProxyType(dict(d))
