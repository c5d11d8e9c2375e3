"""Command line: python -m fedprox_jax.run --config=configs/mnist_fedprox.py --workdir=DIR."""
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from fedprox_jax import config_checks
from fedprox_jax import mnist
from fedprox_jax import train

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where config.json, metrics.jsonl and '
                               'summary.json go; none are written if unset.')


def main(argv):
  del argv
  try:
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except (config_checks.ConfigError, mnist.DataError, train.NonFiniteError) as e:
    logging.error('%s', e)
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  flags.mark_flag_as_required('config')
  app.run(main)
