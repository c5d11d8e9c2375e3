"""FedAvg on federated MNIST: the default with mu = 0 and stragglers dropped.

This file runs as --config=configs/mnist_fedavg.py; the preset itself, run as
--config=mnist_fedavg from anywhere, is fedprox_jax/configs/mnist_fedavg.py: copy that file to
make a config of your own.
"""
from fedprox_jax.configs.mnist_fedavg import get_config  # noqa: F401
