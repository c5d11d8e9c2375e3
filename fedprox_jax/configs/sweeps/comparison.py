"""What the two comparison sweeps share (mnist_algorithms.py, synthetic_algorithms.py): the arms,
each method's own tuning grid, and how the sweeps are built from them.

Every method runs with the base config's local solver (SGD, its learning rate, batch size and
epochs); the ones other than FedProx take mu = 0. Each is tuned over 4 values of one of its own
hyperparameters (the same budget for every method), on seeds disjoint from the reported ones. q-FFL
runs at q = 1 (the q-FFL paper's value on its synthetic data), tuned over its learning rate, which
also sets its L = 1 / lr.
"""
import ml_collections

# Arm -> (its overrides, the field it is tuned over).
ARMS = {
    'fedavg_drop': ({
        'algorithm': {
            'name': 'fedavg',
            'mu': 0.0,
            'drop_stragglers': True
        }
    }, 'client.learning_rate'),
    'fedprox': ({
        'algorithm': {
            'name': 'fedprox'
        }
    }, 'algorithm.mu'),
    'fednova': ({
        'algorithm': {
            'name': 'fednova',
            'mu': 0.0
        }
    }, 'client.learning_rate'),
    'scaffold': ({
        'algorithm': {
            'name': 'scaffold',
            'mu': 0.0
        }
    }, 'client.learning_rate'),
    'qffl': ({
        'algorithm': {
            'name': 'qffl',
            'mu': 0.0,
            'q': 1.0
        }
    }, 'client.learning_rate'),
    'feddyn': ({
        'algorithm': {
            'name': 'feddyn',
            'mu': 0.0
        }
    }, 'algorithm.alpha'),
    'fedavgm': ({
        'algorithm': {
            'mu': 0.0
        },
        'server': {
            'optimizer': 'momentum'
        }
    }, 'server.learning_rate'),
    'fedadam': ({
        'algorithm': {
            'mu': 0.0
        },
        'server': {
            'optimizer': 'adam'
        }
    }, 'server.learning_rate'),
    'fedyogi': ({
        'algorithm': {
            'mu': 0.0
        },
        'server': {
            'optimizer': 'yogi'
        }
    }, 'server.learning_rate'),
    'fedadagrad': ({
        'algorithm': {
            'mu': 0.0
        },
        'server': {
            'optimizer': 'adagrad'
        }
    }, 'server.learning_rate'),
}
VARIANTS = ('tune',)  # Beside none (the comparison): the tuning sweep.
TUNING_SEEDS = 100  # Tuning runs use seeds 100, 101 (--config.seed=100); reported ones 0-4.


def _nested(field: str, value) -> dict:
  group, name = field.split('.')
  return {group: {name: value}}


def _merge(a: dict, b: dict) -> dict:
  out = {k: dict(v) for k, v in a.items()}
  for group, fields in b.items():
    out.setdefault(group, {}).update(fields)
  return out


def sweep(values: dict, tune: bool, fractions=(0.0, 0.9)) -> ml_collections.ConfigDict:
  """The report sweep (each arm at its chosen value, 5 seeds) or, with `tune`, the tuning sweep
  (each arm over its grid, 2 seeds); `values`: arm -> chosen value, or its grid when tuning."""
  s = ml_collections.ConfigDict()
  s.repeats = 2 if tune else 5
  arms = {}
  for arm, (overrides, field) in ARMS.items():
    if tune:
      arms[arm] = {**overrides, 'grid': _nested(field, list(values[arm]))}
    else:
      arms[arm] = _merge(overrides, _nested(field, values[arm]))
  s.arms = ml_collections.ConfigDict(arms)
  s.grid = ml_collections.ConfigDict({'stragglers': {'fraction': list(fractions)}})
  s.max_runs_per_chunk = 0
  s.cpu_devices = 0
  return s


def get_config(grids: dict, chosen: dict, variant: str | None) -> ml_collections.ConfigDict:
  """The report sweep (variant None) or the tuning sweep ('tune') of a comparison config."""
  if variant not in (None, *VARIANTS):
    raise ValueError(f'unknown variant {variant!r}: none (the comparison) or tune')
  return sweep(grids if variant == 'tune' else chosen, tune=variant == 'tune')
