"""What may differ between the runs of one compiled program: each run's seed and its
hyperparameters, which are data (traced values) of the program: the common ones, the server's,
and the algorithm's own per-run ones (algorithms/base.Hyperparameter).

Structure (the algorithm's functions and its fixed hyperparameters, the server optimizer, model,
data, batch size, epochs, ...) is shared by all runs of a program; a sweep that varies it compiles
one program per structure.
"""
from typing import NamedTuple

import jax.numpy as jnp
import ml_collections
import numpy as np

from fedprox_jax import algorithms
from fedprox_jax import config_fields
from fedprox_jax.algorithms import server_optimizers
from fedprox_jax.core import cohort

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
}
_CODES = {'weighting': lambda c: cohort.WEIGHTINGS[c.algorithm.weighting]}


class RunSettings(NamedTuple):
  seed: int
  hp: dict  # name -> float, int or bool: traced values of the program
  fixed: dict  # name -> value: the algorithm's hyperparameters that are not per run


def _own(config: ml_collections.ConfigDict, per_run: bool) -> dict:
  """The run's algorithm's own hyperparameters of that kind: {name: value}."""
  return {
      h.name: config.algorithm[h.name]
      for h in algorithms.get(config.algorithm.name).hyperparameters
      if h.per_run == per_run
  }


def structure(config: ml_collections.ConfigDict) -> tuple:
  """Runs whose configs share this can share one program (given the same base config)."""
  return (algorithms.get(config.algorithm.name).structure(), config.server.optimizer,
          tuple(sorted(_own(config, per_run=False).items())))


def taken_keys() -> set[str]:
  """The hp keys every run has: an algorithm's own hyperparameter may not take one."""
  return set(COMMON_HYPERPARAMETERS.values()) | set(_FLAGS) | set(_CODES)


def from_config(config: ml_collections.ConfigDict) -> RunSettings:
  hp = {key: config_fields.get(config, field) for field, key in COMMON_HYPERPARAMETERS.items()}
  hp = {key: float(value) for key, value in hp.items()}
  hp['server_learning_rate'] = server_optimizers.learning_rate(config.server.optimizer,
                                                               hp['server_learning_rate'])
  hp.update(_own(config, per_run=True))
  hp.update({key: bool(flag(config)) for key, flag in _FLAGS.items()})
  hp.update({key: int(code(config)) for key, code in _CODES.items()})
  return RunSettings(seed=config.seed, hp=hp, fixed=_own(config, per_run=False))


def _dtype(value):
  if isinstance(value, (bool, np.bool_)):
    return bool
  return np.int32 if isinstance(value, (int, np.integer)) else np.float32


def stacked_hp(runs: list[RunSettings]) -> dict[str, jnp.ndarray]:
  """{name: [R]} over the runs: float32, int32 (ints, the weighting code) or bool."""
  return {k: np.asarray([r.hp[k] for r in runs], _dtype(runs[0].hp[k])) for k in runs[0].hp}
