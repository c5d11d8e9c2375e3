"""Command line: python -m fedprox_jax.sweep --config=BASE.py --sweep=SWEEP.py --workdir=DIR."""
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from fedprox_jax import config_checks
from fedprox_jax import mnist
from fedprox_jax import sweeps
from fedprox_jax import train

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Base experiment config file.',
                                          lock_config=True)
_SWEEP = config_flags.DEFINE_config_file('sweep', None, 'Sweep config file (arms, grid, '
                                         'repeats).', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where results.csv and runs/NAME/ go.')


def main(argv):
  del argv
  try:
    sweeps.run_sweep(_CONFIG.value, _SWEEP.value, _WORKDIR.value)
  except (config_checks.ConfigError, mnist.DataError, train.NonFiniteError) as e:
    logging.error('%s', e)
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'sweep'])
  app.run(main)
