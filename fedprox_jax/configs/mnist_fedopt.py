"""Server optimizers on federated MNIST: FedAvgM, FedAdam, FedYogi, FedAdagrad (Reddi et al.).

    python -m fedprox_jax.run --config=configs/mnist_fedopt.py:adam --workdir=/tmp/fedadam

VARIANT is the server optimizer: momentum, adam (the default), yogi or adagrad. Local training is
FedAvg's (mu = 0, stragglers' partial work kept); the server learning rate is the optimizer's
default (server.learning_rate = 0), chosen by configs/sweeps/mnist_algorithms.py's tuning sweep.
"""
import ml_collections

from fedprox_jax.configs import mnist_fedprox

VARIANTS = ('momentum', 'adam', 'yogi', 'adagrad')


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  variant = variant or 'adam'
  if variant not in VARIANTS:
    raise ValueError(f'unknown server optimizer {variant!r}; one of {", ".join(VARIANTS)}')
  c = mnist_fedprox.get_config()
  c.algorithm.mu = 0.0
  c.server.optimizer = variant
  return c
