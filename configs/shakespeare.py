"""FedProx on the paper's federated Shakespeare (one client per speaking role), and a CPU variant.

This file runs as --config=configs/shakespeare.py (the paper's settings) or
--config=configs/shakespeare.py:cpu; the preset itself, run as --config=shakespeare from anywhere,
is fedprox_jax/configs/shakespeare.py: copy that file to make a config of your own.
"""
from fedprox_jax.configs.shakespeare import get_config  # noqa: F401
