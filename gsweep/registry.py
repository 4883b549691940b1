"""The one register/lookup helper of gsweep's registries (models, tasks, optimizers, losses), and the
shared set of ``train.*`` keys that the schema and the optimizer entries declare into.

No imports from gsweep besides :mod:`gsweep.params` and no JAX, so every registry and the schema can
use it without a cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gsweep.params import Param


class Registry(dict):
    """``name -> entry`` for one kind of thing (a plain dict to read). :meth:`register` adds an entry
    after the kind's own checks (``validate(name, entry)`` raises ``ValueError`` naming the problem);
    :meth:`lookup` fails with a ``KeyError`` that names the valid entries."""

    def __init__(self, kind: str, validate: Callable[[str, Any], None] | None = None):
        super().__init__()
        self.kind = kind
        self._validate = validate

    def register(self, entry: Any, name: str | None = None) -> Any:
        name = entry.name if name is None else name
        if self._validate is not None:
            self._validate(name, entry)
        self[name] = entry
        return entry

    def lookup(self, name: str) -> Any:
        if name not in self:
            raise KeyError(f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(sorted(self))}")
        return self[name]

    def known(self, name: Any) -> str | None:
        """A :class:`Param` check: None when ``name`` is registered, else the message."""
        return None if name in self else f"unknown {self.kind}; valid: {', '.join(sorted(self))}"


class KeyBlock(dict):
    """The keys of one block of a sweep file (``key -> Param``) declared by several owners (the
    schema, each optimizer entry). A key is declared once: a second owner may only share the very
    same :class:`Param` object (sgd's and muon's ``momentum``); anything else is refused when it is
    declared, naming the key and both owners."""

    def __init__(self, block: str):
        super().__init__()
        self.block = block
        self.owners: dict[str, str] = {}

    def clash(self, owner: str, params: Mapping[str, Param]) -> str | None:
        for k, p in params.items():
            if k in self and self[k] is not p:
                return (f"{self.block}.{k}: declared by {owner} and by {self.owners[k]} with a different "
                        "declaration (reuse that Param or pick another name)")
        return None

    def declare(self, owner: str, params: Mapping[str, Param], first: bool = False) -> None:
        """Add ``params`` (``first``: ahead of the keys already there, for the schema's own keys)."""
        msg = self.clash(owner, params)
        if msg:
            raise ValueError(msg)
        for k in params:
            self.owners.setdefault(k, owner)
        merged = {**params, **self} if first else {**self, **params}
        self.clear()
        self.update(merged)


# The train.* keys: the schema's own (gsweep.schema) and those the optimizer entries add.
TRAIN_KEYS = KeyBlock("train")
