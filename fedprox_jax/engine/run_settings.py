"""What may differ between the runs of one compiled program: each run's seed and its
hyperparameters, which are data (traced values) of the program: the common ones, the server's,
and the algorithm's own per-run ones (algorithms/base.Hyperparameter).

Structure (the algorithm's functions and its fixed hyperparameters, the server optimizer, model,
data, batch size, epochs, ...) is shared by all runs of a program; a sweep that varies it compiles
one program per structure. The experiment layer makes them from a config (experiment/settings.py).
"""
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np


class RunSettings(NamedTuple):
  seed: int
  hp: dict  # name -> float, int or bool: traced values of the program
  fixed: dict  # name -> value: the algorithm's hyperparameters that are not per run


def _dtype(value):
  if isinstance(value, (bool, np.bool_)):
    return bool
  return np.int32 if isinstance(value, (int, np.integer)) else np.float32


def stacked_hp(runs: list[RunSettings]) -> dict[str, jnp.ndarray]:
  """{name: [R]} over the runs: float32, int32 (ints, the weighting code) or bool."""
  return {k: np.asarray([r.hp[k] for r in runs], _dtype(runs[0].hp[k])) for k in runs[0].hp}
