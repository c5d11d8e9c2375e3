"""SCAFFOLD (control variates, option II) on federated MNIST, with the default's stragglers.

    python -m fedprox_jax.run --config=configs/mnist_scaffold.py --workdir=/tmp/scaffold

Every client's control variate persists across rounds (31 MB for the logistic regression on 1000
clients, kept on the device). No proximal term, and the client learning rate chosen by
configs/sweeps/mnist_algorithms.py's tuning sweep.
"""
import ml_collections

from fedprox_jax.configs import mnist_fedprox


def get_config() -> ml_collections.ConfigDict:
  c = mnist_fedprox.get_config()
  c.algorithm.name = 'scaffold'
  c.algorithm.mu = 0.0
  c.client.learning_rate = 0.003
  return c
