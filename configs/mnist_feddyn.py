"""FedDyn on federated MNIST.

This file runs as --config=configs/mnist_feddyn.py; the preset itself, run as
--config=mnist_feddyn from anywhere, is fedprox_jax/configs/mnist_feddyn.py: copy that file to
make a config of your own.
"""
from fedprox_jax.configs.mnist_feddyn import get_config  # noqa: F401
