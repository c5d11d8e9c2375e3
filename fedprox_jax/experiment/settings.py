"""A config's settings as the engine takes them: the program's structure (ProgramSettings) and a
run's seed and hyperparameters (RunSettings), and which config field each one is."""
import ml_collections

from fedprox_jax import aggregation
from fedprox_jax import algorithms
from fedprox_jax import config_fields
from fedprox_jax.algorithms import server_optimizers
from fedprox_jax.core import cohort
from fedprox_jax.engine import devices
from fedprox_jax.engine.program_settings import ProgramSettings
from fedprox_jax.engine.run_settings import RunSettings
from fedprox_jax.experiment import privacy
from fedprox_jax.tasks import models

# ProgramSettings field -> the config field it is.
PROGRAM_FIELDS = {
    'algorithm': 'algorithm.name',
    'model': 'model.name',
    'server_optimizer': 'server.optimizer',
    'clients_per_round': 'clients_per_round',
    'local_epochs': 'client.local_epochs',
    'batch_size': 'client.batch_size',
    'num_lanes': 'compute.num_lanes',
    'client_data': 'compute.client_data',
    'eval_clients': 'eval.clients',
    'eval_full_every': 'eval.full_every',
    'eval_chunk': 'eval.chunk_size',
    'eval_dissimilarity': 'eval.dissimilarity',
    'eval_seed': 'data.seed',
}
# The other settings that the engine's messages advise on.
OTHER_NAMES = {
    'cpu_devices': 'compute.cpu_devices',
    'data': 'config.data',
    'runs_per_chunk': 'sweep.max_runs_per_chunk',
}
NAMES = tuple(sorted({**PROGRAM_FIELDS, **OTHER_NAMES}.items()))

# Config field -> hyperparameter key, for what every run has whatever its algorithm.
COMMON_HYPERPARAMETERS = {
    'client.learning_rate': 'learning_rate',
    'client.weight_decay': 'weight_decay',
    'algorithm.mu': 'mu',
    'stragglers.fraction': 'straggler_fraction',
    **{
        f'server.{field}': key for field, key in server_optimizers.HYPERPARAMETERS.items()
    },
}
# Settings of the cohort's draw, derived from choices: also data of the program.
_FLAGS = {
    'fixed_straggler_count': lambda c: c.stragglers.mode == 'fixed',
    'drop_stragglers': lambda c: c.algorithm.drop_stragglers,
}
_CODES = {'weighting': lambda c: cohort.WEIGHTINGS[c.algorithm.weighting]}


def for_program(config: ml_collections.ConfigDict) -> ProgramSettings:
  """The structure that the runs of `config` share."""
  values = {field: config_fields.get(config, path) for field, path in PROGRAM_FIELDS.items()}
  return ProgramSettings(model_options=tuple(sorted(models.options(config.model).items())),
                         names=NAMES,
                         aggregation=stages(config),
                         **values)


def stages(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The aggregation stages that `config` turns on (their names, in order)."""
  return aggregation.active(
      {field: config_fields.get(config, field) for field in aggregation.fields()})


def _own(config: ml_collections.ConfigDict, per_run: bool) -> dict:
  """The run's algorithm's own hyperparameters of that kind: {name: value}."""
  return {
      h.name: config.algorithm[h.name]
      for h in algorithms.get(config.algorithm.name).hyperparameters
      if h.per_run == per_run
  }


def structure(config: ml_collections.ConfigDict) -> tuple:
  """Runs whose configs share this can share one program (given the same base config)."""
  return (algorithms.get(config.algorithm.name).structure(), config.server.optimizer,
          tuple(sorted(_own(config, per_run=False).items())), stages(config))


def taken_keys() -> set[str]:
  """The hp keys every run has: an algorithm's own hyperparameter may not take one."""
  return (set(COMMON_HYPERPARAMETERS.values()) | set(_FLAGS) | set(_CODES) |
          set(aggregation.fields().values()))


def for_run(config: ml_collections.ConfigDict) -> RunSettings:
  """A run's seed and hyperparameters (the program's data)."""
  hp = {key: config_fields.get(config, field) for field, key in COMMON_HYPERPARAMETERS.items()}
  hp = {key: float(value) for key, value in hp.items()}
  hp['server_learning_rate'] = server_optimizers.learning_rate(config.server.optimizer,
                                                               hp['server_learning_rate'])
  hp.update(_own(config, per_run=True))
  for stage in aggregation.chain(stages(config)):
    hp.update({
        key: float(stage.encode.get(key, float)(config_fields.get(config, f)))
        for f, key in stage.fields.items()
    })
  hp.update({key: bool(flag(config)) for key, flag in _FLAGS.items()})
  hp.update({key: int(code(config)) for key, code in _CODES.items()})
  return RunSettings(seed=config.seed, hp=hp, fixed=_own(config, per_run=False))


def simulation(config: ml_collections.ConfigDict, data, runs: list[RunSettings] | None = None):
  """The engine's Simulation of `config`'s program over `data` for `runs` (default: the config's
  own run)."""
  from fedprox_jax.engine.simulation import Simulation  # pylint: disable=g-import-not-at-top
  runs = runs or [for_run(config)]
  if 'gaussian_noise' in stages(config):
    runs = privacy.with_calibrated_noise(runs, data.num_clients, config.clients_per_round,
                                         config.num_rounds)
  return Simulation(for_program(config), data, runs)


def for_compute(config: ml_collections.ConfigDict) -> devices.ComputeSettings:
  """The process's settings: the config's `compute` group."""
  return devices.ComputeSettings(
      **{field: config.compute[field] for field in devices.ComputeSettings._fields})


def configure_process(config: ml_collections.ConfigDict) -> None:
  """Applies `config`'s settings of the whole process (its CPU devices, its compilation cache),
  for a library call that owns the process; before JAX's first computation."""
  devices.apply_process_settings(for_compute(config))
