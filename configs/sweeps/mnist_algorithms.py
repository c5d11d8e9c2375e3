"""FedProx against the field on the default MNIST task: FedAvg (dropping stragglers), FedProx,
FedNova, SCAFFOLD, FedAvgM, FedAdam, FedYogi and FedAdagrad at 0% and 90% stragglers, 5 seeds.

This file runs as --sweep=configs/sweeps/mnist_algorithms.py; the preset itself, run as
--sweep=mnist_algorithms from anywhere, is fedprox_jax/configs/sweeps/mnist_algorithms.py.
"""
from fedprox_jax.configs.sweeps.mnist_algorithms import get_config  # noqa: F401
