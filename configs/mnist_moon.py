"""MOON on federated MNIST with the CNN.

This file runs as --config=configs/mnist_moon.py; the preset itself, run as --config=mnist_moon
from anywhere, is fedprox_jax/configs/mnist_moon.py: copy that file to make a config of your own.
"""
from fedprox_jax.configs.mnist_moon import get_config  # noqa: F401
