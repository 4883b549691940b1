"""Validation of a sweep file's values: one value against its key's :class:`~gsweep.params.Param`,
a block against its schema, the sweep's name, and the grid's size from list lengths alone."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from gsweep.params import Param
from gsweep.spec.sweepfile import _NUMERIC, SpecError, _suggest, expand_values

MAX_NAME_BYTES = 200          # a sweep name is one path component (filesystems allow 255 bytes)



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
