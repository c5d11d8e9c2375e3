"""MOON against FedAvg and FedProx on federated MNIST with the CNN (the mnist_moon preset: 200
clients, 10 a round, one local epoch, no stragglers, 30 rounds), 3 seeds.

    python -m fedprox_jax.sweep --config=mnist_moon --sweep=mnist_moon --workdir=/tmp/moon_sweep
    python -m fedprox_jax.plot /tmp/moon_sweep

MOON's moon_mu = 1 and T = 0.5 and FedProx's mu = 0.01 are the values the MOON paper uses or found
best for FedProx; none is tuned here. FedAvg and FedProx are one program, MOON another.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.repeats = 3
  s.arms = ml_collections.ConfigDict({
      'fedavg': {
          'algorithm': {
              'name': 'fedavg',
              'mu': 0.0
          }
      },
      'fedprox': {
          'algorithm': {
              'name': 'fedprox',
              'mu': 0.01
          }
      },
      'moon': {},
  })
  s.grid = ml_collections.ConfigDict()
  s.max_runs_per_chunk = 0
  s.cpu_devices = 0
  return s
