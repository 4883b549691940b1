"""Task registry: a sweep's ``task.name`` picks one of these."""

from gsweep.tasks.base import Task, TaskData
from gsweep.tasks.chain import ModularChain
from gsweep.tasks.composition import Composition
from gsweep.tasks.khop import KHop
from gsweep.tasks.modular import S5, Modular
from gsweep.tasks.parity import SparseParity

TASKS: dict[str, type[Task]] = {t.name: t for t in (Modular, S5, Composition, ModularChain, KHop, SparseParity)}


def register(task: type[Task]) -> type[Task]:
    """Add a task class to the registry (usable as a decorator)."""
    TASKS[task.name] = task
    return task


def get_task(name: str) -> type[Task]:
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


__all__ = ["TASKS", "Task", "TaskData", "get_task", "register"]
