"""Federated tasks: each module here that defines TASK (a task.Task) is one, named by it.

Adding a task means one new module and a config that names it in config.data.name.
"""
from fedprox_jax import registry
from fedprox_jax.tasks.data_plan import DataPlan
from fedprox_jax.tasks.federated_data import FederatedData
from fedprox_jax.tasks.task import Task

TASKS = registry.discover(__name__, __path__, 'TASK', Task)


def load(data_config) -> FederatedData:
  """The federated dataset of config.data."""
  return TASKS[data_config.name].load(data_config)


def model_dims(data_config) -> tuple[int, int]:
  return TASKS[data_config.name].model_dims(data_config)


def plan(data_config, clients_per_round: int) -> DataPlan | None:
  """What config.data's data will take, before they are loaded; None for a task whose size is
  known once loaded."""
  task = TASKS[data_config.name]
  return task.plan(data_config, clients_per_round) if task.plan else None
