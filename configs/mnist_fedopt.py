"""Server optimizers on federated MNIST: FedAvgM, FedAdam, FedYogi, FedAdagrad (Reddi et al.).

This file runs as --config=configs/mnist_fedopt.py; the preset itself, run as
--config=mnist_fedopt from anywhere, is fedprox_jax/configs/mnist_fedopt.py: copy that file to
make a config of your own.
"""
from fedprox_jax.configs.mnist_fedopt import get_config  # noqa: F401
