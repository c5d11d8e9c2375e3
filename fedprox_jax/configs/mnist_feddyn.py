"""FedDyn on federated MNIST, with the default's stragglers (kept).

    python -m fedprox_jax.run --config=mnist_feddyn --workdir=/tmp/feddyn

No proximal term (FedDyn's own dynamic one replaces it), and alpha chosen by
configs/sweeps/mnist_algorithms.py's tuning sweep. Every client's g_k persists across rounds
(31 MB for the logistic regression on 1000 clients, kept on the device).
"""
import ml_collections

from fedprox_jax.configs import mnist_fedprox


def get_config() -> ml_collections.ConfigDict:
  c = mnist_fedprox.get_config()
  c.algorithm.name = 'feddyn'
  c.algorithm.mu = 0.0
  c.algorithm.alpha = 3.0
  return c
