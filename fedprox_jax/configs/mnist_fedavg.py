"""FedAvg on federated MNIST: the default with mu = 0 and stragglers dropped.

    python -m fedprox_jax.run --config=configs/mnist_fedavg.py --workdir=/tmp/fedavg
"""
import ml_collections

from fedprox_jax.configs import mnist_fedprox


def get_config() -> ml_collections.ConfigDict:
  c = mnist_fedprox.get_config()
  c.algorithm.name = 'fedavg'
  c.algorithm.mu = 0.0
  c.algorithm.drop_stragglers = True
  return c
