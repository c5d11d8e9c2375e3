"""Federated algorithms: each module here that defines ALGORITHM (a base.Algorithm) is one, named
by it; the server optimizers are in server_optimizers.py.

Adding an algorithm means one new module and a config that names it in config.algorithm.name.
"""
from fedprox_jax import registry
from fedprox_jax.algorithms.base import Algorithm

ALGORITHMS = registry.discover(__name__, __path__, 'ALGORITHM', Algorithm)


def get(name: str) -> Algorithm:
  return ALGORITHMS[name]
