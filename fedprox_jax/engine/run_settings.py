"""What may differ between the runs of one compiled program: each run's seed, whether its mu
adapts, and its hyperparameters, which are data (traced values) of the program.

Structure (the algorithm's functions, the server optimizer, model, data, batch size, epochs, ...)
is shared by all runs of a program; a sweep that varies it compiles one program per structure.
"""
from typing import NamedTuple

import jax.numpy as jnp
import ml_collections
import numpy as np

from fedprox_jax import algorithms
from fedprox_jax import config_fields
from fedprox_jax.algorithms import server_optimizers

# Config field -> hyperparameter key, for what every run has whatever its algorithm.
COMMON_HYPERPARAMETERS = {
    'client.learning_rate': 'learning_rate',
    'client.weight_decay': 'weight_decay',
    'algorithm.mu': 'mu',
    'stragglers.fraction': 'straggler_fraction',
    **{
        f'server.{field}': key for field, key in server_optimizers.HYPERPARAMETERS.items()
    },
}
# Settings of the cohort's draw, derived from choices: also data of the program.
_FLAGS = {
    'fixed_straggler_count': lambda c: c.stragglers.mode == 'fixed',
    'drop_stragglers': lambda c: c.algorithm.drop_stragglers,
    'weight_by_batches': lambda c: c.algorithm.weighting == 'batches',
}


class RunSettings(NamedTuple):
  seed: int
  adaptive_mu: bool
  hp: dict  # name -> float or bool


def structure(config: ml_collections.ConfigDict) -> tuple:
  """Runs whose configs share this can share one program (given the same base config)."""
  return algorithms.get(config.algorithm.name).structure(), config.server.optimizer


def hyperparameter_fields(config: ml_collections.ConfigDict) -> dict[str, str]:
  """Config field -> hyperparameter key for a run of this config's algorithm."""
  own = dict(algorithms.get(config.algorithm.name).hyperparameters)
  return {**COMMON_HYPERPARAMETERS, **own}


def from_config(config: ml_collections.ConfigDict) -> RunSettings:
  hp = {
      key: float(config_fields.get(config, field))
      for field, key in hyperparameter_fields(config).items()
  }
  hp['server_learning_rate'] = server_optimizers.learning_rate(config.server.optimizer,
                                                               hp['server_learning_rate'])
  hp.update({key: bool(flag(config)) for key, flag in _FLAGS.items()})
  return RunSettings(seed=config.seed, adaptive_mu=config.algorithm.adaptive_mu, hp=hp)


def stacked_hp(runs: list[RunSettings]) -> dict[str, jnp.ndarray]:
  """{name: [R]} float32 (bool for the flags) over the runs."""
  dtype = lambda k: bool if k in _FLAGS else np.float32
  return {k: np.asarray([r.hp[k] for r in runs], dtype(k)) for k in runs[0].hp}
