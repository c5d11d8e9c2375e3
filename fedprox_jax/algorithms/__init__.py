"""Federated algorithms: each module here that defines ALGORITHM (a base.Algorithm) is one, named
by it; the server optimizers are in server_optimizers.py.

Adding an algorithm means one new module and a config that names it in config.algorithm.name; its
own hyperparameters, declared in the module, become config.algorithm fields of every config built
on the presets (own_fields), validated, recorded and sweepable by the experiment layer.
"""
import contextlib

from fedprox_jax import registry
from fedprox_jax.algorithms.base import Algorithm
from fedprox_jax.algorithms.base import Hyperparameter

ALGORITHMS = registry.discover(__name__, __path__, 'ALGORITHM', Algorithm)


def get(name: str) -> Algorithm:
  return ALGORITHMS[name]


def declarations() -> dict[str, Hyperparameter]:
  """Every algorithm's own hyperparameters by name (one declaration per name: algorithms that
  share a field, such as FedAvg and FedProx, share its declaration)."""
  out, owner = {}, {}
  for algorithm in ALGORITHMS.values():
    for h in algorithm.hyperparameters:
      if h.name in out and out[h.name] != h:
        raise ValueError(f'algorithms {owner[h.name]} and {algorithm.name} both declare '
                         f'{h.name!r}, differently: give one of them another name')
      out.setdefault(h.name, h)
      owner.setdefault(h.name, algorithm.name)
  return out


def own_fields() -> dict:
  """config.algorithm's fields that the algorithms declare, at their defaults."""
  return {name: h.default for name, h in declarations().items()}


def readers(name: str) -> list[str]:
  """The algorithms that read config.algorithm.<name> (one of their own hyperparameters)."""
  return [a.name for a in ALGORITHMS.values() if any(h.name == name for h in a.hyperparameters)]


def register(algorithm: Algorithm) -> None:
  """Adds an algorithm defined outside this package (a test's, a user's script's) to this
  process's registry, as a module here would be."""
  if not isinstance(algorithm, Algorithm):
    raise TypeError(f'{algorithm!r} is not an Algorithm')
  if algorithm.name in ALGORITHMS:
    raise ValueError(f'an algorithm named {algorithm.name!r} exists already')
  ALGORITHMS[algorithm.name] = algorithm
  try:
    declarations()  # Refuses a declaration that clashes with another algorithm's.
  except ValueError:
    del ALGORITHMS[algorithm.name]
    raise


@contextlib.contextmanager
def registered(algorithm: Algorithm):
  """register(algorithm) for the duration of a `with` block."""
  register(algorithm)
  try:
    yield algorithm
  finally:
    del ALGORITHMS[algorithm.name]
