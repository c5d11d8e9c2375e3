"""SCAFFOLD (control variates, option II) on federated MNIST, with the default's stragglers.

This file runs as --config=configs/mnist_scaffold.py; the preset itself, run as
--config=mnist_scaffold from anywhere, is fedprox_jax/configs/mnist_scaffold.py: copy that file
to make a config of your own.
"""
from fedprox_jax.configs.mnist_scaffold import get_config  # noqa: F401
