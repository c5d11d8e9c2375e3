"""FedProx on MNIST as the paper's own code (TensorFlow 1) runs it, as far as config allows.

This file runs as --config=configs/mnist_paper.py; the preset itself, run as --config=mnist_paper
from anywhere, is fedprox_jax/configs/mnist_paper.py: copy that file to make a config of your
own.
"""
from fedprox_jax.configs.mnist_paper import get_config  # noqa: F401
