"""Run filters (``plot curves --where``, ``analysis.snapshot_where``): parsed, never evaluated.

A filter is parsed with Python's ``ast`` into a small whitelisted form and evaluated with pandas
boolean masks — never through ``DataFrame.query``/``eval``, which would run attribute access and
calls written by the user. Allowed:

- column names, dotted (``train.weight_decay``) or backquoted (```train.weight_decay```);
- literals: int, float, str, True/False, None (``== None`` tests for missing);
- comparisons ``== != < <= > >=`` (chains too: ``0.1 <= task.data_frac < 0.5``), ``in`` /
  ``not in`` a list or tuple of literals;
- ``and``, ``or``, ``not`` (and pandas' ``&``, ``|``, ``~``), parentheses.

Anything else (calls, attributes of values, subscripts, arithmetic, lambdas...) is refused with a
one-line :class:`~gsweep.errors.UserError` naming the expression. pandas only; no JAX.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import operator
import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from gsweep.errors import UserError

MAX_LEN = 2000
MAX_NODES = 500

_CMP = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
        ast.Gt: operator.gt, ast.GtE: operator.ge}
_QUOTED = re.compile(r"`([^`]*)`|'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


@dataclasses.dataclass(frozen=True)
class Col:
    name: str


@dataclasses.dataclass(frozen=True)
class Lit:
    value: Any


@dataclasses.dataclass(frozen=True)
class Cmp:
    op: str  # '==', '!=', '<', '<=', '>', '>=', 'in', 'not in'
    left: Any
    right: Any


@dataclasses.dataclass(frozen=True)
class BoolOp:
    op: str  # 'and' | 'or'
    args: tuple


@dataclasses.dataclass(frozen=True)
class Not:
    arg: Any


_OPS = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
        ast.In: "in", ast.NotIn: "not in"}


class _Bad(Exception):
    pass


def parse(expr: str, what: str = "filter") -> Any:
    """The whitelisted tree of ``expr``; :class:`UserError` ``"<what> '<expr>': <why>"`` otherwise."""
    shown = _show(expr)
    if not isinstance(expr, str) or not expr.strip():
        raise UserError(f"{what} {expr!r}: an empty filter")
    if len(expr) > MAX_LEN or "\x00" in expr:
        raise UserError(f"{what}: a filter of at most {MAX_LEN} characters without NUL, got {len(expr)}")
    names: dict[str, str] = {}

    def bq(m: re.Match) -> str:
        if m.group(1) is None:
            return m.group(0)
        token = f"__gsweep_col{len(names)}__"
        names[token] = m.group(1)
        return token

    code = _QUOTED.sub(bq, expr)
    try:
        tree = ast.parse(code.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        msg = getattr(e, "msg", None) or type(e).__name__
        raise UserError(f"{what} {shown}: not a valid filter ({msg})") from None
    n = sum(1 for _ in ast.walk(tree))
    if n > MAX_NODES:
        raise UserError(f"{what} {shown}: too long a filter ({n} parts; at most {MAX_NODES})")
    try:
        return _conv(tree.body, names)
    except _Bad as e:
        raise UserError(f"{what} {shown}: {e}; a filter holds column names, literals, comparisons, "
                        "in [...], and/or/not") from None


def _show(expr) -> str:
    r = repr(expr)
    return r if len(r) <= 80 else r[:77] + "..."


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return None if head is None else f"{head}.{node.attr}"
    return None


def _literal(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, (bool, int, float, str))):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)) \
            and isinstance(node.operand, ast.Constant) and isinstance(node.operand.value, (int, float)) \
            and not isinstance(node.operand.value, bool):
        v = node.operand.value
        return -v if isinstance(node.op, ast.USub) else v
    raise _Bad(f"{ast.dump(node)[:40]}... is not allowed")


def _conv(node: ast.AST, names: dict[str, str]) -> Any:
    if isinstance(node, ast.BoolOp):
        return BoolOp("and" if isinstance(node.op, ast.And) else "or", tuple(_conv(v, names) for v in node.values))
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.BitAnd, ast.BitOr)):
        return BoolOp("and" if isinstance(node.op, ast.BitAnd) else "or",
                      (_conv(node.left, names), _conv(node.right, names)))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.Invert)):
        return Not(_conv(node.operand, names))
    if isinstance(node, ast.Compare):
        parts, left = [], _operand(node.left, names)
        for op, rnode in zip(node.ops, node.comparators, strict=True):
            if type(op) not in _OPS:
                raise _Bad(f"the operator {type(op).__name__} is not allowed")
            sym = _OPS[type(op)]
            if sym in ("in", "not in"):
                if not isinstance(rnode, (ast.List, ast.Tuple, ast.Set)):
                    raise _Bad("'in' takes a list of literals, e.g. x in [1, 2]")
                right = Lit(tuple(_literal(e) for e in rnode.elts))
            else:
                right = _operand(rnode, names)
            parts.append(Cmp(sym, left, right))
            left = right
        return parts[0] if len(parts) == 1 else BoolOp("and", tuple(parts))
    d = _dotted(node)
    if d is not None or (isinstance(node, ast.Constant) and isinstance(node.value, bool)):
        return _operand(node, names)  # a bare boolean column (or True/False)
    raise _Bad(f"{type(node).__name__} is not allowed")


def _operand(node: ast.AST, names: dict[str, str]) -> Col | Lit:
    d = _dotted(node)
    if d is not None:
        if d in names:
            return Col(names[d])
        if d in ("True", "False", "None"):
            return Lit({"True": True, "False": False, "None": None}[d])
        if "__gsweep_col" in d:
            raise _Bad("a backquoted name is a whole column name")
        return Col(d)
    if isinstance(node, (ast.Call, ast.Subscript, ast.Lambda, ast.BinOp, ast.Attribute)):
        raise _Bad(f"{type(node).__name__} is not allowed")
    return Lit(_literal(node))


def columns(tree: Any) -> set[str]:
    """Every column name the filter reads."""
    if isinstance(tree, Col):
        return {tree.name}
    if isinstance(tree, Lit):
        return set()
    if isinstance(tree, Cmp):
        return columns(tree.left) | columns(tree.right)
    if isinstance(tree, BoolOp):
        return set().union(*(columns(a) for a in tree.args))
    if isinstance(tree, Not):
        return columns(tree.arg)
    return set()


def check(expr: str, known: Iterable[str], what: str = "filter", known_patterns: Iterable[str] = ()) -> Any:
    """Parse ``expr`` and check that every column it names is known; the tree."""
    tree = parse(expr, what)
    known = set(map(str, known))
    pats = [re.compile(p) for p in known_patterns]
    for c in sorted(columns(tree)):
        if c not in known and not any(p.fullmatch(c) for p in pats):
            close = difflib.get_close_matches(c, sorted(known), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"{what} {_show(expr)}: unknown column {c!r}{hint}")
    return tree


def mask(df: pd.DataFrame, expr: str, what: str = "filter") -> pd.Series:
    """The boolean mask of the rows of ``df`` that match ``expr``."""
    tree = check(expr, df.columns, what)
    try:
        m = _eval(tree, df)
    except (TypeError, ValueError) as e:
        raise UserError(f"{what} {_show(expr)}: cannot compare ({str(e).splitlines()[0][:150]})") from None
    if not isinstance(m, pd.Series):
        m = pd.Series(bool(m), index=df.index)
    if m.dtype != bool:
        try:
            m = m.astype("boolean").fillna(False).astype(bool)
        except (TypeError, ValueError):
            raise UserError(f"{what} {_show(expr)}: does not give true/false per run") from None
    return m


def select(df: pd.DataFrame, expr: str | None, what: str = "filter") -> pd.DataFrame:
    """The rows of ``df`` matching ``expr`` (all rows when it is empty)."""
    if not expr:
        return df
    return df[mask(df, expr, what)]


def _value(node: Col | Lit, df: pd.DataFrame):
    return df[node.name] if isinstance(node, Col) else node.value


def _eval(tree: Any, df: pd.DataFrame):
    if isinstance(tree, (Col, Lit)):
        v = _value(tree, df)
        return v
    if isinstance(tree, Not):
        v = _as_bool(_eval(tree.arg, df), df)
        return ~v
    if isinstance(tree, BoolOp):
        vals = [_as_bool(_eval(a, df), df) for a in tree.args]
        out = vals[0]
        for v in vals[1:]:
            out = (out & v) if tree.op == "and" else (out | v)
        return out
    if isinstance(tree, Cmp):
        a, b = _value(tree.left, df), _value(tree.right, df)
        if tree.op in ("in", "not in"):
            s = a if isinstance(a, pd.Series) else pd.Series([a] * len(df), index=df.index, dtype=object)
            vals = list(b)
            m = s.isin([v for v in vals if v is not None])
            if any(v is None for v in vals):
                m = m | s.isna()
            return m if tree.op == "in" else ~m
        if a is None or b is None:
            other = b if a is None else a
            if tree.op not in ("==", "!="):
                raise ValueError("None compares with == or != only")
            na = other.isna() if isinstance(other, pd.Series) else pd.Series(other is None, index=df.index)
            return na if tree.op == "==" else ~na
        out = _CMP[{"==": ast.Eq, "!=": ast.NotEq, "<": ast.Lt, "<=": ast.LtE, ">": ast.Gt,
                    ">=": ast.GtE}[tree.op]](a, b)
        if isinstance(out, pd.Series):
            return out.astype("boolean").fillna(tree.op == "!=").astype(bool)
        return pd.Series(bool(out), index=df.index)
    raise ValueError("bad filter tree")


def _as_bool(v, df: pd.DataFrame) -> pd.Series:
    if isinstance(v, pd.Series):
        if v.dtype == bool:
            return v
        if v.dtype == object or pd.api.types.is_bool_dtype(v.dtype):
            vals = v.dropna().map(type).unique()
            if all(t in (bool, np.bool_) for t in vals):
                return v.astype("boolean").fillna(False).astype(bool)
        raise ValueError(f"column {v.name!r} is not true/false; compare it (e.g. {v.name} == ...)")
    if isinstance(v, bool):
        return pd.Series(v, index=df.index)
    raise ValueError(f"{v!r} is not true/false")
