"""The paper's Figures 2 and 3 on one synthetic dataset: mu = 0, mu = 1 and adaptive mu.

This file runs as --sweep=configs/sweeps/synthetic.py; the preset itself, run as
--sweep=synthetic from anywhere, is fedprox_jax/configs/sweeps/synthetic.py.
"""
from fedprox_jax.configs.sweeps.synthetic import get_config  # noqa: F401
