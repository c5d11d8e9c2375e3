"""FedProx on federated MNIST with the Flower baseline's settings (the project default).

This file runs as --config=configs/mnist_fedprox.py; the preset itself, run as
--config=mnist_fedprox from anywhere, is fedprox_jax/configs/mnist_fedprox.py: copy that file to
make a config of your own.
"""
from fedprox_jax.configs.mnist_fedprox import get_config  # noqa: F401
