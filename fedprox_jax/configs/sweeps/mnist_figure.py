"""The Flower baseline's MNIST figure: 3 algorithms x 3 straggler fractions x 5 seeds = 45 runs.

    python -m fedprox_jax.sweep --config=configs/mnist_fedprox.py \
        --sweep=configs/sweeps/mnist_figure.py --workdir=/tmp/figure
    python -m fedprox_jax.plot /tmp/figure

Every run shares the base config's data, model and rounds; what varies is data of one compiled
round program (see README.md for the measured wall time and the results table).
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.repeats = 5  # Seeds base.seed, base.seed + 1, ...
  # Each arm overrides base-config fields (nested as in the config).
  s.arms = ml_collections.ConfigDict({
      'fedavg': {
          'algorithm': {
              'name': 'fedavg',
              'mu': 0.0,
              'drop_stragglers': True
          }
      },
      'fedprox_mu0': {
          'algorithm': {
              'name': 'fedprox',
              'mu': 0.0
          }
      },
      'fedprox_mu2': {
          'algorithm': {
              'name': 'fedprox',
              'mu': 2.0
          }
      },
  })
  # Every combination of these values is run for every arm.
  s.grid = ml_collections.ConfigDict({'stragglers': {'fraction': [0.0, 0.5, 0.9]}})
  s.max_runs_per_chunk = 0  # Runs compiled together; 0 fits as many as memory allows.
  s.cpu_devices = 0  # Overrides compute.cpu_devices: 0 = one CPU device per core.
  return s
