"""Split meanings recorded in a results dir against this gsweep's (refuse to mix them on resume).

``meta.json`` records, per compiled group, the split names its runs were evaluated on. A task that
changes what a split means renames or adds splits (``modular_chain``'s ``hop3`` became ``hop3`` with
parts all trained plus ``hop3_novel``), so a group whose recorded names differ from the task's current
names was written under other meanings: resuming it would put two meanings of one column in one table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gsweep.errors import UserError


def check_recorded_splits(out: Any, old_meta: Mapping[str, Any], runs: Sequence[Any]) -> None:
    """Raise a one-line UserError when a group recorded in ``old_meta`` has other split names than its
    task builds now. ``runs``: the sweep's runs (``group_id`` and ``block('task')``)."""
    groups = (old_meta or {}).get("groups") or {}
    rep = {}
    for r in runs:
        rep.setdefault(r.group_id, r)
    from gsweep.tasks import get_task

    for gid, rec in groups.items():
        old = rec.get("splits") if isinstance(rec, dict) else None
        if not old or gid not in rep:
            continue
        cfg = rep[gid].block("task")
        now = list(get_task(cfg["name"]).build(cfg).split_names)
        if list(old) != now:
            added = [s for s in now if s not in old]
            raise UserError(
                f"{out}: group {gid} was run with splits {', '.join(old)}; this gsweep's task {cfg['name']!r} has "
                f"{', '.join(now)}" + (f" (new: {', '.join(added)}; a split's meaning changed)" if added else "")
                + ": resuming would mix two meanings in one table; run into a new results dir (or --fresh)")
