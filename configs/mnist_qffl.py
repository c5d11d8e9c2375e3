"""q-FFL on federated MNIST.

This file runs as --config=configs/mnist_qffl.py; the preset itself, run as --config=mnist_qffl
from anywhere, is fedprox_jax/configs/mnist_qffl.py: copy that file to make a config of your own.
"""
from fedprox_jax.configs.mnist_qffl import get_config  # noqa: F401
