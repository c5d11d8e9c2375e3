"""Rejects impossible configurations before any compute, naming the field and the fix."""
import difflib
import math

import ml_collections

from fedprox_jax.mnist import CLASS_COUNTS as MNIST_CLASS_COUNTS
from fedprox_jax.models import MODELS

# Seeds feed JAX keys and NumPy generators; JAX keeps only the low 32 bits of a seed, so a larger
# one would silently give the results of another.
SEED_LIMIT = 2**32
SYNTHETIC_MIN_EXAMPLES = 50  # Every synthetic device has lognormal(4, 2) + 50 examples.


class ConfigError(ValueError):
  """An invalid configuration field; the message names it."""


def flatten(tree, prefix: str = '') -> dict:
  """A nested config (ConfigDict or dict) as {'dotted.field': value}."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      out.update(flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def unknown_field_message(field: str, known: list[str], where: str = 'config') -> str:
  """'<where> has no field F' with the closest known field, or the fields of F's group."""
  group = field.rsplit('.', 1)[0] + '.' if '.' in field else ''
  children = sorted({k[len(group):].split('.')[0] for k in known if k.startswith(group)})
  if children:  # A known group: the nearest of its own fields.
    close = [group + c for c in difflib.get_close_matches(field[len(group):], children, n=1)]
  else:  # The group itself is misspelt: the nearest field anywhere, else the top level.
    close = difflib.get_close_matches(field, known, n=1)
    group, children = '', sorted({k.split('.')[0] for k in known})
  if close:
    return f'{where} has no field {field}: did you mean {close[0]}?'
  return (f'{where} has no field {field}; the fields of {group[:-1] or "the top level"} are '
          f'{", ".join(children)}')


def _require(ok: bool, field: str, problem: str) -> None:
  if not ok:
    raise ConfigError(f'config.{field} {problem}')


def _one_of(config: ml_collections.ConfigDict, field: str, choices) -> None:
  value = config
  for part in field.split('.'):
    value = value[part]
  _require(value in choices, field,
           f'= {value!r} is not one of {", ".join(repr(c) for c in choices)}')


def check_seed(value, field: str, span: int = 1) -> None:
  """0 <= value and value + span - 1 < 2^32 (`span` seeds from value on, as a sweep's repeats)."""
  ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value
  last = f' (and seed + repeats - 1 = {value + span - 1})' if span > 1 and ok else ''
  _require(ok and value + span - 1 < SEED_LIMIT, field,
           f'= {value!r}{last} must be an int in [0, 2^32 - 1 = {SEED_LIMIT - 1}]')


def _check_finite_floats(c: ml_collections.ConfigDict) -> None:
  for field, value in flatten(c).items():
    if isinstance(value, float):
      _require(math.isfinite(value), field, f'= {value} must be a finite number')


def validate(c: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for the first invalid field."""
  _check_finite_floats(c)
  check_seed(c.seed, 'seed')
  _require(c.num_rounds >= 1, 'num_rounds', f'= {c.num_rounds} must be >= 1')
  _require(c.eval_every >= 1, 'eval_every', f'= {c.eval_every} must be >= 1')
  _require(c.checkpoint_every >= 1, 'checkpoint_every', f'= {c.checkpoint_every} must be >= 1')
  _require(c.checkpoint_keep >= 1, 'checkpoint_keep', f'= {c.checkpoint_keep} must be >= 1')
  _one_of(c, 'data.name', ('mnist', 'synthetic'))
  check_seed(c.data.seed, 'data.seed')
  if c.data.name == 'mnist':
    _validate_mnist(c)
  else:
    _validate_synthetic(c)
  _require(c.clients_per_round >= 1, 'clients_per_round',
           f'= {c.clients_per_round} must be >= 1')
  _require(c.clients_per_round <= c.data.num_clients, 'clients_per_round',
           f'= {c.clients_per_round} exceeds data.num_clients = {c.data.num_clients}')
  _one_of(c, 'model.name', tuple(MODELS))
  _require(c.client.learning_rate > 0, 'client.learning_rate',
           f'= {c.client.learning_rate} must be > 0')
  _require(c.client.batch_size >= 1, 'client.batch_size', f'= {c.client.batch_size} must be >= 1')
  _require(c.client.local_epochs >= 1, 'client.local_epochs',
           f'= {c.client.local_epochs} must be >= 1')
  _require(c.client.weight_decay >= 0, 'client.weight_decay',
           f'= {c.client.weight_decay} must be >= 0')
  _one_of(c, 'algorithm.name', ('fedprox', 'fedavg'))
  _require(c.algorithm.mu >= 0, 'algorithm.mu', f'= {c.algorithm.mu} must be >= 0')
  _require(not c.algorithm.adaptive_mu or c.eval_every == 1, 'eval_every',
           f'= {c.eval_every}: algorithm.adaptive_mu needs the training loss of every round (1)')
  _one_of(c, 'algorithm.weighting', ('examples', 'batches'))
  _require(0 <= c.stragglers.fraction <= 1, 'stragglers.fraction',
           f'= {c.stragglers.fraction} must be in [0, 1]')
  _one_of(c, 'stragglers.mode', ('random', 'fixed'))
  _require(c.eval.chunk_size >= 0, 'eval.chunk_size',
           f'= {c.eval.chunk_size} must be >= 0 (0 chooses)')
  _require(c.compute.cpu_devices >= 0, 'compute.cpu_devices',
           f'= {c.compute.cpu_devices} must be >= 0 (0: one per core)')
  _require(c.compute.num_lanes >= 0, 'compute.num_lanes',
           f'= {c.compute.num_lanes} must be >= 0 (0 chooses)')


def _validate_mnist(c: ml_collections.ConfigDict) -> None:
  d = c.data
  _one_of(c, 'data.pool', ('train', 'all'))
  _one_of(c, 'data.normalization', ('global', 'per_pixel'))
  _require(d.num_clients >= 10 and d.num_clients % 10 == 0, 'data.num_clients',
           f'= {d.num_clients} must be a positive multiple of the 10 MNIST classes')
  _require(1 <= d.labels_per_client <= 10, 'data.labels_per_client',
           f'= {d.labels_per_client} must be in 1..10')
  _require(d.examples_per_label >= 1, 'data.examples_per_label',
           f'= {d.examples_per_label} must be >= 1 (every client needs data)')
  _require(d.lognormal_sigma >= 0, 'data.lognormal_sigma', 'must be >= 0')
  _require(0 < d.train_fraction < 1, 'data.train_fraction',
           f'= {d.train_fraction} must be in (0, 1)')
  # Every client first takes examples_per_label examples of each of its labels; each digit is
  # held by labels_per_client * num_clients / 10 clients, and the pool must have enough of it.
  counts = MNIST_CLASS_COUNTS['train']
  if d.pool == 'all':
    counts = tuple(a + b for a, b in zip(counts, MNIST_CLASS_COUNTS['test']))
  per_client = d.examples_per_label * d.labels_per_client
  most = 10 * (min(counts) // per_client)
  _require(d.num_clients <= most, 'data.num_clients',
           f'= {d.num_clients} is more than the {d.pool!r} pool can give '
           f'{d.examples_per_label} examples of each of {d.labels_per_client} labels '
           f'(digit {counts.index(min(counts))} has {min(counts)} examples): use at most {most}')
  # Every client must keep at least one local training example (and one test example, which
  # train_fraction < 1 guarantees).
  smallest = d.examples_per_label * d.labels_per_client
  _require(int(d.train_fraction * smallest) >= 1, 'data.train_fraction',
           f'= {d.train_fraction} leaves clients of {smallest} examples no training data')


def _validate_synthetic(c: ml_collections.ConfigDict) -> None:
  d = c.data
  _require(d.alpha >= 0, 'data.alpha', f'= {d.alpha} must be >= 0')
  _require(d.beta >= 0, 'data.beta', f'= {d.beta} must be >= 0')
  _require(d.num_clients >= 1, 'data.num_clients', f'= {d.num_clients} must be >= 1')
  _require(d.dim >= 1, 'data.dim', f'= {d.dim} must be >= 1')
  _require(d.num_classes >= 2, 'data.num_classes', f'= {d.num_classes} must be >= 2')
  _require(0 < d.train_fraction < 1, 'data.train_fraction',
           f'= {d.train_fraction} must be in (0, 1)')
  smallest = SYNTHETIC_MIN_EXAMPLES
  _require(int(d.train_fraction * smallest) >= 1, 'data.train_fraction',
           f'= {d.train_fraction} leaves devices of {smallest} examples no training data')
  _require(c.model.name == 'logistic_regression', 'model.name',
           f"= {c.model.name!r}: synthetic data have no image shape; use 'logistic_regression'")
