"""The Flower baseline's MNIST figure: 3 algorithms x 3 straggler fractions x 5 seeds = 45 runs.

This file runs as --sweep=configs/sweeps/mnist_figure.py; the preset itself, run as
--sweep=mnist_figure from anywhere, is fedprox_jax/configs/sweeps/mnist_figure.py.
"""
from fedprox_jax.configs.sweeps.mnist_figure import get_config  # noqa: F401
