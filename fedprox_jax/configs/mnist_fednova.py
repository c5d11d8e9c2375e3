"""FedNova (normalised averaging) on federated MNIST, with the default's stragglers (kept).

    python -m fedprox_jax.run --config=configs/mnist_fednova.py --workdir=/tmp/fednova

No proximal term (FedNova's paper pairs it with FedProx's: set algorithm.mu > 0 for that), and
the client learning rate chosen by configs/sweeps/mnist_algorithms.py's tuning sweep.
"""
import ml_collections

from fedprox_jax.configs import mnist_fedprox


def get_config() -> ml_collections.ConfigDict:
  c = mnist_fedprox.get_config()
  c.algorithm.name = 'fednova'
  c.algorithm.mu = 0.0
  c.client.learning_rate = 0.001
  return c
