"""FedProx on the paper's synthetic data: Synthetic-IID, (0,0), (0.5,0.5), (1,1).

This file runs as --config=configs/synthetic.py; the preset itself, run as --config=synthetic
from anywhere, is fedprox_jax/configs/synthetic.py: copy that file to make a config of your own.
"""
from fedprox_jax.configs.synthetic import get_config  # noqa: F401
