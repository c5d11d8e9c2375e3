"""q-FFL (q-FedAvg, q = 1) on federated MNIST, with the default's stragglers (kept).

    python -m fedprox_jax.run --config=mnist_qffl --workdir=/tmp/qffl

Clients with a higher loss at the global model weigh more (by the power q); q = 0 would be FedAvg
keeping stragglers. No proximal term, and the client learning rate (which also sets q-FFL's
L = 1 / lr) chosen by configs/sweeps/mnist_algorithms.py's tuning sweep.
"""
import ml_collections

from fedprox_jax.configs import mnist_fedprox


def get_config() -> ml_collections.ConfigDict:
  c = mnist_fedprox.get_config()
  c.algorithm.name = 'qffl'
  c.algorithm.mu = 0.0
  c.algorithm.q = 1.0
  c.client.learning_rate = 0.1
  return c
