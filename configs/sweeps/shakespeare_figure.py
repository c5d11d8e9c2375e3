"""FedAvg dropping stragglers against FedProx on Shakespeare at 90% stragglers, 3 seeds.

This file runs as --sweep=configs/sweeps/shakespeare_figure.py; the preset itself, run as
--sweep=shakespeare_figure from anywhere, is fedprox_jax/configs/sweeps/shakespeare_figure.py.
"""
from fedprox_jax.configs.sweeps.shakespeare_figure import get_config  # noqa: F401
