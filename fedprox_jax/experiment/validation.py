"""Rejects impossible configurations before any compute, naming the field and the fix; warns about
fields that the chosen algorithm or server optimizer does not read."""
import logging

import ml_collections

from fedprox_jax import aggregation
from fedprox_jax import algorithms
from fedprox_jax import config_fields
from fedprox_jax import tasks
from fedprox_jax.algorithms import server_optimizers
from fedprox_jax.config_fields import require
from fedprox_jax.core import cohort
from fedprox_jax.core.cohort import DRAWS_VERSION
from fedprox_jax.engine import client_states
from fedprox_jax.engine import cohort_rows
from fedprox_jax.engine import model_cost
from fedprox_jax.engine import resources
from fedprox_jax.experiment import communication
from fedprox_jax.experiment import preflight
from fedprox_jax.experiment import privacy
from fedprox_jax.experiment import settings
from fedprox_jax.experiment import sweep_results
from fedprox_jax.tasks import models

# Values of the fields that only some algorithms or server optimizers read: set elsewhere than
# here, they are warned about when the run's choices ignore them.
MAX_ROUNDS = 10**8
OPTIONAL_DEFAULTS = {
    'server.momentum': 0.9,
    'server.b1': 0.9,
    'server.b2': 0.99,
    'server.eps': 1e-3
}


def validate(c: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for the first invalid field."""
  config_fields.check_finite_floats(c)
  config_fields.check_seed(c.seed, 'seed')
  require(1 <= c.num_rounds <= MAX_ROUNDS, 'num_rounds',
          f'= {c.num_rounds} must be in [1, {MAX_ROUNDS}]')
  require(
      c.draws_version == DRAWS_VERSION, 'draws_version',
      f'= {c.draws_version}: this release draws cohorts, splits and synthetic data as version '
      f'{DRAWS_VERSION} only (a run begun under other draws needs the release that began it)')
  require(c.eval_every >= 1, 'eval_every', f'= {c.eval_every} must be >= 1')
  require(c.checkpoint_every >= 1, 'checkpoint_every', f'= {c.checkpoint_every} must be >= 1')
  require(c.checkpoint_keep >= 1, 'checkpoint_keep', f'= {c.checkpoint_keep} must be >= 1')
  config_fields.one_of(c, 'data.name', tuple(tasks.TASKS))
  config_fields.check_seed(c.data.seed, 'data.seed')
  config_fields.one_of(c, 'model.name', tuple(models.MODELS))
  tasks.TASKS[c.data.name].validate(c)  # (A task's own word on its model comes first.)
  models.check_options(c.model.name, models.options(c.model))
  require(c.clients_per_round >= 1, 'clients_per_round', f'= {c.clients_per_round} must be >= 1')
  if 'num_clients' in c.data:  # Other tasks know their clients once loaded (Simulation checks).
    require(c.clients_per_round <= c.data.num_clients, 'clients_per_round',
            f'= {c.clients_per_round} exceeds data.num_clients = {c.data.num_clients}')
  require(c.client.learning_rate > 0, 'client.learning_rate',
          f'= {c.client.learning_rate} must be > 0')
  require(c.client.batch_size >= 1, 'client.batch_size', f'= {c.client.batch_size} must be >= 1')
  require(c.client.local_epochs >= 1, 'client.local_epochs',
          f'= {c.client.local_epochs} must be >= 1')
  require(
      c.client.local_epochs <= resources.INT32_MAX, 'client.local_epochs',
      f'= {c.client.local_epochs:,} must be at most 2^31 - 1 = {resources.INT32_MAX:,} (the '
      'device counts steps in int32)')
  require(c.client.weight_decay >= 0, 'client.weight_decay',
          f'= {c.client.weight_decay} must be >= 0')
  _validate_algorithm(c)
  communication.validate(c)
  privacy.validate(c)
  require(0 <= c.stragglers.fraction <= 1, 'stragglers.fraction',
          f'= {c.stragglers.fraction} must be in [0, 1]')
  config_fields.one_of(c, 'stragglers.mode', ('random', 'fixed'))
  require(c.eval.clients >= 0, 'eval.clients', f'= {c.eval.clients} must be >= 0 (0: every client)')
  require(c.eval.full_every >= 0, 'eval.full_every', f'= {c.eval.full_every} must be >= 0')
  require(c.eval.full_every == 0 or c.eval.clients > 0, 'eval.full_every',
          f'= {c.eval.full_every} needs eval.clients > 0 (without it every evaluation is full)')
  require(c.eval.full_every % c.eval_every == 0, 'eval.full_every',
          f'= {c.eval.full_every} must be a multiple of eval_every = {c.eval_every}')
  require(c.eval.chunk_size >= 0, 'eval.chunk_size',
          f'= {c.eval.chunk_size} must be >= 0 (0 chooses)')
  require(
      0 <= c.compute.cpu_devices <= resources.MAX_CPU_DEVICES, 'compute.cpu_devices',
      f'= {c.compute.cpu_devices} must be in [0, {resources.MAX_CPU_DEVICES}] (0: one per core; '
      'a device more than the cores buys no speed, and with compute.client_data=replicated '
      'each holds a copy of the data)')
  config_fields.one_of(c, 'compute.client_data', cohort_rows.MODES)
  require(c.compute.num_lanes >= 0, 'compute.num_lanes',
          f'= {c.compute.num_lanes} must be >= 0 (0 chooses)')
  check_client_state_fits(c, num_runs=1)
  preflight.check_config(c, num_runs=1)


def _validate_algorithm(c: ml_collections.ConfigDict) -> None:
  config_fields.one_of(c, 'algorithm.name', tuple(algorithms.ALGORITHMS))
  algorithm = algorithms.get(c.algorithm.name)
  require(c.algorithm.mu >= 0, 'algorithm.mu', f'= {c.algorithm.mu} must be >= 0')
  check_declarations()
  for name, h in algorithms.declarations().items():
    require(
        name in c.algorithm, f'algorithm.{name}',
        'is missing: the config must hold every algorithm\'s own fields (build it on a '
        'preset, or add algorithms.own_fields() to config.algorithm)')
    value = c.algorithm[name]
    kind = type(h.default)
    require(
        isinstance(value, kind) and (kind is bool or not isinstance(value, bool)),
        f'algorithm.{name}', f'= {value!r} is a {type(value).__name__}, where it takes a '
        f'{kind.__name__}')
    require(h.valid(value), f'algorithm.{name}', f'= {value!r} {h.requirement}')
  rule = algorithm.round_rule
  if rule and c.algorithm[rule.enabled_by]:
    field = f'algorithm.{rule.enabled_by}'
    require(c.eval_every == 1, 'eval_every',
            f'= {c.eval_every}: {field} needs the {rule.metric} of every round (1)')
    require(
        not c.eval.full_every, 'eval.full_every',
        f'= {c.eval.full_every}: {field} compares each round\'s {rule.metric} with the last, '
        'which full evaluations among sampled ones would make jump; set it to 0')
  if algorithm.needs_representation:
    with_one = models.with_representation()
    require(
        c.model.name in with_one, 'model.name',
        f'= {c.model.name!r} declares no representation, which {algorithm.name} contrasts: '
        f'use a model that has one ({", ".join(with_one)})')
  config_fields.one_of(c, 'algorithm.weighting', tuple(cohort.WEIGHTINGS))
  config_fields.one_of(c, 'server.optimizer', tuple(server_optimizers.OPTIMIZERS))
  s = c.server
  require(s.learning_rate >= 0, 'server.learning_rate',
          f'= {s.learning_rate} must be >= 0 (0: the optimizer\'s default)')
  require(0 <= s.momentum < 1, 'server.momentum', f'= {s.momentum} must be in [0, 1)')
  require(0 <= s.b1 < 1, 'server.b1', f'= {s.b1} must be in [0, 1)')
  require(0 <= s.b2 < 1, 'server.b2', f'= {s.b2} must be in [0, 1)')
  require(s.eps > 0, 'server.eps', f'= {s.eps} must be > 0')


# config.algorithm's fields that are not an algorithm's own.
ALGORITHM_FIELDS = ('name', 'mu', 'drop_stragglers', 'weighting')


def check_declarations() -> None:
  """Refuses an algorithm's own hyperparameter (algorithms/base.Hyperparameter) that would take
  the place of a field, a hyperparameter or a results.csv column every run has, or that a
  program cannot carry; raises TypeError naming the algorithm, like the registry."""
  taken = set(ALGORITHM_FIELDS) | settings.taken_keys() | set(sweep_results.COLUMNS)
  taken |= {'run', 'arm', 'series', 'round'}
  for algorithm in algorithms.ALGORITHMS.values():
    for h in algorithm.hyperparameters:
      if h.name in taken:
        raise TypeError(f'algorithm {algorithm.name}: its hyperparameter {h.name!r} would take '
                        'the place of a field every run has: give it another name')
      if h.per_run and not isinstance(h.default, (bool, int, float)):
        raise TypeError(f'algorithm {algorithm.name}: its hyperparameter {h.name!r} is a '
                        f'{type(h.default).__name__}, which a program cannot carry per run: '
                        'declare it per_run=False')
    rule = algorithm.round_rule
    if rule and not any(h.name == rule.enabled_by and h.per_run for h in algorithm.hyperparameters):
      raise TypeError(f'algorithm {algorithm.name}: its round rule is enabled by '
                      f'{rule.enabled_by!r}, which must be one of its per-run hyperparameters')


def unused_fields(c: ml_collections.ConfigDict) -> list[str]:
  """Fields set away from their defaults that the run's algorithm or server optimizer ignores:
  the server optimizers' fields, the other algorithms' own hyperparameters, and the weighting
  where the algorithm weighs clients by a rule of its own."""
  algorithm = algorithms.get(c.algorithm.name)
  read = {f'algorithm.{h.name}' for h in algorithm.hyperparameters}
  read |= {f'server.{f}' for f in server_optimizers.OPTIMIZERS[c.server.optimizer]}
  defaults = {**OPTIONAL_DEFAULTS, **optional_algorithm_fields()}
  if algorithm.client_weights is not None:
    defaults['algorithm.weighting'] = 'examples'
  return [
      f for f, default in defaults.items() if f not in read and config_fields.get(c, f) != default
  ]


def optional_algorithm_fields() -> dict:
  """config.algorithm's declared fields (algorithms' own hyperparameters) at their defaults."""
  return {f'algorithm.{name}': default for name, default in algorithms.own_fields().items()}


def warn_unused(c: ml_collections.ConfigDict, label: str = 'the run') -> None:
  """Warns about fields the run ignores, and settings that make it something else than it says."""
  for field in unused_fields(c):
    readers = algorithms.readers(field.split('.', 1)[1]) if field.startswith('algorithm.') else []
    by = f'; only {", ".join(readers)} read it' if readers else ''
    logging.warning('config.%s = %r is not read by %s (algorithm %s, server optimizer %s)%s', field,
                    config_fields.get(c, field), label, c.algorithm.name, c.server.optimizer, by)
  if c.algorithm.name != 'fedprox' and c.algorithm.mu > 0:
    # The default local objective adds the proximal term: mu = 1, the default config's FedProx
    # value, kept after choosing another algorithm makes that algorithm + FedProx.
    logging.warning(
        "%s is %s with algorithm.mu = %s: its clients train FedProx's objective (the proximal "
        'term); set algorithm.mu = 0 for plain %s, or start from its preset, unless the '
        'combination is meant', label, c.algorithm.name, c.algorithm.mu, c.algorithm.name)
  algorithm = algorithms.get(c.algorithm.name)
  rate = server_optimizers.learning_rate(c.server.optimizer, c.server.learning_rate)
  if algorithm.paper_server_step and (c.server.optimizer != 'sgd' or rate != 1):
    logging.warning(
        "%s is %s with server optimizer %s at rate %s: its paper applies its server step as it "
        'is (sgd at rate 1), so this is a variant of it', label, c.algorithm.name,
        c.server.optimizer, rate)
  if c.algorithm.drop_stragglers and c.stragglers.fraction == 1:
    logging.warning(
        '%s drops stragglers and every sampled client is one (stragglers.fraction = '
        '1): its model never changes', label)


def check_client_state_fits(c: ml_collections.ConfigDict, num_runs: int) -> None:
  """Refuses per-client state (the algorithm's, error feedback's residuals) that would not fit in
  memory, before any compute."""
  algorithm = algorithms.get(c.algorithm.name)
  keeper = client_states.keepers(algorithm, aggregation.chain(settings.stages(c)))
  if not keeper or 'num_clients' not in c.data:
    return  # (A task that knows its clients once loaded is checked then, by ClientStates.)
  # From shapes, traced once per model and algorithm (not once per run of a sweep).
  num_classes, input_dim = tasks.model_dims(c.data)
  cost = model_cost.for_program(settings.for_program(c), settings.for_run(c), num_classes,
                                input_dim)
  needed = cost.client_state_bytes * num_runs * c.data.num_clients
  client_states.check_fits(keeper, needed, num_runs)
