"""Rejects impossible configurations before any compute, naming the field and the fix."""
import ml_collections

from fedprox_jax.models import MODELS


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


def _require(ok: bool, field: str, problem: str) -> None:
  if not ok:
    raise ConfigError(f'config.{field} {problem}')


def _one_of(config: ml_collections.ConfigDict, field: str, choices) -> None:
  value = config
  for part in field.split('.'):
    value = value[part]
  _require(value in choices, field,
           f'= {value!r} is not one of {", ".join(repr(c) for c in choices)}')


def validate(c: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for the first invalid field."""
  _require(isinstance(c.seed, int) and c.seed >= 0, 'seed', f'= {c.seed!r} must be an int >= 0')
  _require(c.num_rounds >= 1, 'num_rounds', f'= {c.num_rounds} must be >= 1')
  _require(c.eval_every >= 1, 'eval_every', f'= {c.eval_every} must be >= 1')
  _require(c.checkpoint_every >= 1, 'checkpoint_every', f'= {c.checkpoint_every} must be >= 1')
  _require(c.checkpoint_keep >= 1, 'checkpoint_keep', f'= {c.checkpoint_keep} must be >= 1')
  _one_of(c, 'data.name', ('mnist', 'synthetic'))
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
  # Every client must keep at least one local training example.
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
  _require(c.model.name == 'logistic_regression', 'model.name',
           f"= {c.model.name!r}: synthetic data have no image shape; use 'logistic_regression'")
