"""Task registry: a sweep's ``task.name`` picks one of these."""

from gsweep.registry import Registry
from gsweep.tasks.base import Task, TaskData
from gsweep.tasks.chain import ModularChain
from gsweep.tasks.composition import Composition
from gsweep.tasks.khop import KHop
from gsweep.tasks.modular import S5, Modular
from gsweep.tasks.parity import SparseParity

TASKS: Registry = Registry("task")


def register(task: type[Task]) -> type[Task]:
    """Add a task class to the registry (usable as a decorator)."""
    return TASKS.register(task)


for _t in (Modular, S5, Composition, ModularChain, KHop, SparseParity):
    register(_t)

get_task = TASKS.lookup


__all__ = ["TASKS", "Task", "TaskData", "get_task", "register"]
