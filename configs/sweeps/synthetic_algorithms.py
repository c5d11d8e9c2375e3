"""FedProx against the field on the paper's Synthetic(1,1): the arms of mnist_algorithms.py at 0%
and 90% stragglers, 5 seeds, 200 rounds; training loss is the measure (as in the paper's Figure 1
for the synthetic data).

This file runs as --sweep=configs/sweeps/synthetic_algorithms.py; the preset itself, run as
--sweep=synthetic_algorithms from anywhere, is
fedprox_jax/configs/sweeps/synthetic_algorithms.py.
"""
from fedprox_jax.configs.sweeps.synthetic_algorithms import get_config  # noqa: F401
