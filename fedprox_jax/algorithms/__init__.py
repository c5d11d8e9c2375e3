"""Federated algorithms: each module here that defines ALGORITHM (a base.Algorithm) is one, named
by it; the server optimizers are in server_optimizers.py.

Adding an algorithm means one new module and a config that names it in config.algorithm.name.
"""
import importlib
import pkgutil

from fedprox_jax.algorithms.base import Algorithm


def _discover() -> dict[str, Algorithm]:
  found = {}
  for info in pkgutil.iter_modules(__path__):
    algorithm = getattr(importlib.import_module(f'{__name__}.{info.name}'), 'ALGORITHM', None)
    if isinstance(algorithm, Algorithm):
      found[algorithm.name] = algorithm
  return dict(sorted(found.items()))


ALGORITHMS = _discover()


def get(name: str) -> Algorithm:
  return ALGORITHMS[name]
