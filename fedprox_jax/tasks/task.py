"""What a task is: its data (config.data), checked and loaded, and the shape of its examples."""
from collections.abc import Callable
from typing import NamedTuple

import ml_collections

from fedprox_jax.tasks.data_plan import DataPlan
from fedprox_jax.tasks.federated_data import FederatedData


class Task(NamedTuple):
  name: str  # config.data.name
  # Raises ConfigError for an invalid config.data field (or a model the data cannot feed).
  validate: Callable[[ml_collections.ConfigDict], None]
  load: Callable[[ml_collections.ConfigDict], FederatedData]  # From config.data.
  # (classes, input features) from config.data, known without loading the data.
  model_dims: Callable[[ml_collections.ConfigDict], tuple[int, int]]
  # (config.data, clients_per_round) -> what the data will take (tasks/data_plan.py), known
  # without loading them; None: known once they are loaded.
  plan: Callable[[ml_collections.ConfigDict, int], DataPlan] | None = None
