"""FedNova (normalised averaging) on federated MNIST, with the default's stragglers (kept).

This file runs as --config=configs/mnist_fednova.py; the preset itself, run as
--config=mnist_fednova from anywhere, is fedprox_jax/configs/mnist_fednova.py: copy that file to
make a config of your own.
"""
from fedprox_jax.configs.mnist_fednova import get_config  # noqa: F401
