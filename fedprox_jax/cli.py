"""What the command lines share: reading config flags and turning known failures into one line."""
import sys

from absl import flags
from absl import logging

from fedprox_jax import config_checks
from fedprox_jax import mnist
from fedprox_jax import train

# Failures whose message already says what is wrong and what to do: no traceback for these.
KNOWN_FAILURES = (config_checks.ConfigError, mnist.DataError, train.NonFiniteError)


def _one_line(e: Exception) -> str:
  text = ' '.join(str(e).replace('\\n', ' ').replace("\\'", "'").split())
  return text[1:-1] if text[:1] == text[-1:] == "'" else text  # A KeyError's repr quotes.


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad flag or config override answered in one line."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, OSError, AttributeError, KeyError, TypeError, ValueError) as e:
    sys.exit(f'error: {_one_line(e)}')


def config_value(flag_holder, name: str):
  """The config of a config_flags flag; an unreadable config file exits with one line.
  (config_flags loads lazily and reports a failed load on first use.)"""
  try:
    config = flag_holder.value
    config.keys()
    return config
  except (OSError, AttributeError, KeyError, TypeError, ValueError) as e:
    sys.exit(f'error: --{name}: {_one_line(e)}')


def fail(e: Exception) -> None:
  logging.error('%s', e)
  sys.exit(f'error: {e}')
