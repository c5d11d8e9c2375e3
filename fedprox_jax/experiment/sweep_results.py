"""A sweep's results.csv: one tidy row per (run, evaluated round), the run's settings (COLUMNS)
and then its record.
"""
import csv
import io

from fedprox_jax import aggregation
from fedprox_jax import algorithms
from fedprox_jax import config_fields
from fedprox_jax.algorithms import server_optimizers
from fedprox_jax.experiment import settings as program_settings

# results.csv: the run's settings (these, then its algorithm's own hyperparameters under their
# names), then its record.
COLUMNS = {
    'algorithm': 'algorithm.name',
    'server_optimizer': 'server.optimizer',
    'seed': 'seed',
    'stragglers': 'stragglers.fraction',
    'mu': 'algorithm.mu',
    'learning_rate': 'client.learning_rate',
    'weight_decay': 'client.weight_decay',
    'drop_stragglers': 'algorithm.drop_stragglers',
    'weighting': 'algorithm.weighting',
    'server_learning_rate': 'server.learning_rate',
    'server_momentum': 'server.momentum',
    'server_b1': 'server.b1',
    'server_b2': 'server.b2',
    'server_eps': 'server.eps'
}


def server_learning_rate(config) -> float:
  return server_optimizers.learning_rate(config.server.optimizer, config.server.learning_rate)


def rows_of(run, records: list[dict]) -> list[dict]:
  """The rows of a run (a grid.SweepRun): its name, arm, series and settings, then each record."""
  settings = {column: config_fields.get(run.config, f) for column, f in COLUMNS.items()}
  settings['server_learning_rate'] = server_learning_rate(run.config)
  for h in algorithms.get(run.config.algorithm.name).hyperparameters:
    settings[h.name] = run.config.algorithm[h.name]
  # The aggregation stages' settings, of the runs that have them (client-level DP's, as configured:
  # a target epsilon's calibrated noise is the record's privacy/noise_multiplier).
  for stage in aggregation.chain(program_settings.stages(run.config)):
    settings.update({key: config_fields.get(run.config, f) for f, key in stage.fields.items()})
  return [{'run': run.name, 'arm': run.arm, 'series': run.series, **settings, **r} for r in records]


def table_text(rows: list[dict]) -> str:
  """One CSV row per (run, evaluated round)."""
  columns = list(dict.fromkeys(k for row in rows for k in row))
  out = io.StringIO(newline='')
  writer = csv.DictWriter(out, fieldnames=columns)
  writer.writeheader()
  writer.writerows(rows)
  return out.getvalue()
