"""Federated tasks: each module here that defines TASK (a task.Task) is one, named by it.

Adding a task means one new module and a config that names it in config.data.name.
"""
import importlib
import pkgutil

from fedprox_jax.tasks.federated_data import FederatedData
from fedprox_jax.tasks.task import Task


def _discover() -> dict[str, Task]:
  found = {}
  for info in pkgutil.iter_modules(__path__):
    task = getattr(importlib.import_module(f'{__name__}.{info.name}'), 'TASK', None)
    if isinstance(task, Task):
      found[task.name] = task
  return found


TASKS = _discover()


def load(data_config) -> FederatedData:
  """The federated dataset of config.data."""
  return TASKS[data_config.name].load(data_config)


def model_dims(data_config) -> tuple[int, int]:
  return TASKS[data_config.name].model_dims(data_config)
