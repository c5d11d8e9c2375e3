"""Sweeps: grids of runs that share data, model and round count.

A sweep config names arms (field overrides, each with an optional grid of its own), a grid shared
by every arm, and a number of repeats (seeds). Runs whose algorithm and server optimizer have the
same structure share one compiled program, advanced together; each structure gets its own. Each
run gets a directory with the files of a single run; the sweep directory gets results.csv, one tidy
row per (run, evaluated round), and checkpoints per chunk of runs.
"""
import csv
import io
import itertools
import logging
import pathlib

import ml_collections

from fedprox_jax import algorithms
from fedprox_jax import config_fields
from fedprox_jax import quiet
from fedprox_jax import tasks
from fedprox_jax.algorithms import server_optimizers
from fedprox_jax.engine import devices
from fedprox_jax.engine import run_settings
from fedprox_jax.engine.simulation import Simulation
from fedprox_jax.errors import ConfigError
from fedprox_jax.errors import WriteError
from fedprox_jax.experiment import chunks as chunks_lib
from fedprox_jax.experiment import rounds
from fedprox_jax.experiment import single_run
from fedprox_jax.experiment import validation
from fedprox_jax.experiment.checkpoint_state import fingerprint
from fedprox_jax.experiment.checkpoints import Checkpoints
from fedprox_jax.experiment.workdir import WorkdirLock
from fedprox_jax.experiment.workdir import prepare_workdir
from fedprox_jax.experiment.workdir import remove_if_unstarted
from fedprox_jax.experiment.writers import RunWriter
from fedprox_jax.files import write_atomically

# Besides the hyperparameters (run_settings), what a run of a sweep may change: the seed, choices
# that are data of the program, and the structure (one program per algorithm and optimizer).
VARIABLE_FIELDS = ('seed', 'algorithm.name', 'algorithm.adaptive_mu', 'algorithm.drop_stragglers',
                   'algorithm.weighting', 'stragglers.mode', 'server.optimizer')
SWEEP_FIELDS = ('repeats', 'arms', 'grid', 'max_runs_per_chunk', 'cpu_devices')
ARM_GRID = 'grid'  # An arm's own grid, inside its overrides.
# results.csv: the run's settings, then its record.
COLUMNS = {
    'algorithm': 'algorithm.name',
    'server_optimizer': 'server.optimizer',
    'seed': 'seed',
    'stragglers': 'stragglers.fraction',
    'mu': 'algorithm.mu',
    'learning_rate': 'client.learning_rate',
    'weight_decay': 'client.weight_decay',
    'drop_stragglers': 'algorithm.drop_stragglers',
    'server_learning_rate': 'server.learning_rate',
    'server_momentum': 'server.momentum',
    'server_b1': 'server.b1',
    'server_b2': 'server.b2',
    'server_eps': 'server.eps'
}


def server_learning_rate(config) -> float:
  return server_optimizers.learning_rate(config.server.optimizer, config.server.learning_rate)


def _variable() -> set[str]:
  return set(VARIABLE_FIELDS) | set(run_settings.COMMON_HYPERPARAMETERS) | {
      field for a in algorithms.ALGORITHMS.values() for field, _ in a.hyperparameters
  }


def _check_grid(grid, known: list[str], where: str) -> None:
  for field, values in config_fields.flatten(grid).items():
    if field not in known:
      raise ConfigError(config_fields.unknown_field_message(field, known, f'{where}: the config'))
    if not isinstance(values, (list, tuple)) or not values:
      raise ConfigError(f'{where}.{field} = {values!r} must be a non-empty list of values')


def _check_sweep(base: ml_collections.ConfigDict, sweep: ml_collections.ConfigDict) -> None:
  """The sweep config's own fields, and every field it sets exists in the base config."""
  for key in sweep.keys():
    if key not in SWEEP_FIELDS:
      raise ConfigError(config_fields.unknown_field_message(key, list(SWEEP_FIELDS), 'the sweep'))
  for key in SWEEP_FIELDS:
    if key not in sweep:
      raise ConfigError(f'the sweep has no field {key}: every sweep sets {", ".join(SWEEP_FIELDS)}')
  is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)
  for key, lowest in (('repeats', 1), ('max_runs_per_chunk', 0), ('cpu_devices', 0)):
    if not is_int(sweep[key]) or sweep[key] < lowest:
      raise ConfigError(f'sweep.{key} = {sweep[key]!r} must be an int >= {lowest}')
  config_fields.check_seed(base.seed, 'seed', span=sweep.repeats)
  if not sweep.arms:
    raise ConfigError('sweep.arms is empty: name at least one arm (it may override nothing)')
  known = list(config_fields.flatten(base))
  for arm, overrides in sweep.arms.items():
    for field in config_fields.flatten({k: v for k, v in overrides.items() if k != ARM_GRID}):
      if field not in known:
        raise ConfigError(
            config_fields.unknown_field_message(field, known, f'sweep arm {arm!r}: the config'))
    _check_grid(overrides.get(ARM_GRID, {}), known, f'sweep arm {arm!r}: grid')
  _check_grid(sweep.grid, known, 'sweep.grid')


def expand(base: ml_collections.ConfigDict,
           sweep: ml_collections.ConfigDict) -> list[tuple[str, str, ml_collections.ConfigDict]]:
  """(name, arm, config) of every run: each arm x its grid x the sweep's grid x repeats, each
  config validated."""
  _check_sweep(base, sweep)
  variable = _variable()
  runs, names = [], set()
  for arm, overrides in sweep.arms.items():
    fixed = config_fields.flatten({k: v for k, v in overrides.items() if k != ARM_GRID})
    grid = {
        **config_fields.flatten(overrides.get(ARM_GRID, {})),
        **config_fields.flatten(sweep.grid)
    }
    for values in itertools.product(*grid.values()):
      for repeat in range(sweep.repeats):
        changes = {**fixed, **dict(zip(grid, values)), 'seed': base.seed + repeat}
        for field in changes:
          if field not in variable:
            raise ConfigError(f'sweep field {field} cannot vary within a sweep (only '
                              f'{", ".join(sorted(variable))}); run one sweep per value instead')
        config = ml_collections.ConfigDict(base.to_dict())
        config.update_from_flattened_dict(changes)
        grid_name = '-'.join(f'{k.split(".")[-1]}{v}' for k, v in zip(grid, values))
        name = '-'.join(filter(None, [arm, grid_name, f'seed{config.seed}']))
        try:
          validation.validate(config)
        except ConfigError as e:
          raise ConfigError(f'sweep run {name}: {e}') from None
        if name in names:
          raise ConfigError(f'the sweep names two runs {name}: give every arm and grid value '
                            'once')
        names.add(name)
        runs.append((name, arm, config))
  return runs


def prepare(base: ml_collections.ConfigDict, sweep: ml_collections.ConfigDict):
  """The sweep's base config (with its CPU device count) and its (name, arm, config) runs."""
  validation.validate(base)
  _check_sweep(base, sweep)
  base = ml_collections.ConfigDict(base.to_dict())
  base.compute.cpu_devices = sweep.cpu_devices
  runs = expand(base, sweep)
  for name, _, config in runs:
    validation.warn_unused(config, f'sweep run {name}')
  return base, runs


def table_text(rows: list[dict]) -> str:
  """One CSV row per (run, evaluated round)."""
  columns = list(dict.fromkeys(k for row in rows for k in row))
  out = io.StringIO(newline='')
  writer = csv.DictWriter(out, fieldnames=columns)
  writer.writeheader()
  writer.writerows(rows)
  return out.getvalue()


def _write(path: pathlib.Path, text: str) -> None:
  try:
    write_atomically(path, text)
  except OSError as e:
    raise WriteError(f'{path} could not be written ({e.strerror}): free disk space or fix the '
                     'directory, then rerun the same command to resume') from None


def run_sweep(base: ml_collections.ConfigDict,
              sweep: ml_collections.ConfigDict,
              workdir: str | None,
              overwrite: bool = False) -> dict[str, list[dict]]:
  """Runs every run of the sweep; returns {run name: metrics records}.

  A workdir is locked for the whole sweep. One of the same sweep resumes it: finished chunks of
  runs are kept as they are, an interrupted one continues from its newest verified checkpoint.
  """
  quiet.install()
  base, runs = prepare(base, sweep)
  if not workdir:
    return _run_chunks(base, sweep, runs, None)
  root = pathlib.Path(workdir)
  lock = WorkdirLock(workdir)
  try:
    with lock:
      prepare_workdir(workdir, {'sweep.json': sweep, 'base_config.json': base}, overwrite)
      for name, config in (('sweep.json', sweep), ('base_config.json', base)):
        _write(root / name, config.to_json(indent=2, sort_keys=True) + '\n')
      return _run_chunks(base, sweep, runs, root)
  except BaseException:
    remove_if_unstarted(lock, any(p.stat().st_size for p in root.glob('runs/*/metrics.jsonl')))
    raise


def _run_chunks(base, sweep, runs, root: pathlib.Path | None) -> dict[str, list[dict]]:
  devices.configure(base)
  chunks = chunks_lib.split(runs, sweep.max_runs_per_chunk)
  logging.info('Sweep of %d runs in %d program%s%s', len(runs), len(chunks),
               's' if len(chunks) > 1 else '',
               ' (one per structure and memory chunk)' if len(chunks) > 1 else '')
  evaluate_at = rounds.evaluation_rounds(base.num_rounds, base.eval_every)
  checkpoints = [
      Checkpoints(root / 'checkpoints' / chunk.label, base.checkpoint_every, base.checkpoint_keep,
                  fingerprint([c for _, _, c in chunk.runs])) if root else None for chunk in chunks
  ]
  data, records, rows = None, {}, []
  for i, chunk in enumerate(chunks):
    logging.info('Chunk %d/%d: %d runs of %s', i + 1, len(chunks), len(chunk.runs),
                 chunk.description)
    writers = [
        RunWriter(str(root / 'runs' / name) if root else None, c) for name, _, c in chunk.runs
    ]
    restored = checkpoints[i].restore() if root else None
    single_run.check_rounds_done(restored, base.num_rounds, str(root))
    if restored and restored.round == base.num_rounds:
      for writer in writers:
        single_run.finish_completed(writer, restored, evaluate_at)
      logging.info('Chunk %d/%d is complete: kept as it is', i + 1, len(chunks))
    else:
      if data is None:
        data = tasks.load(base.data)
      sim = Simulation(chunk.runs[0][2], data,
                       [run_settings.from_config(c) for _, _, c in chunk.runs])
      try:
        later = sum(len(c.runs) for c in chunks[i + 1:]) * base.num_rounds
        progress = rounds.run_rounds(sim, writers, [name for name, _, _ in chunk.runs],
                                     checkpoints[i], restored, data.statistics(), later)
      except BaseException:
        for writer in writers:
          writer.abort()
        raise
      finally:
        if checkpoints[i]:
          checkpoints[i].close()
      for writer in writers:
        writer.close(rounds.summarize(writer.records, progress))
    for (name, arm, c), writer in zip(chunk.runs, writers):
      records[name] = writer.records
      settings = {column: config_fields.get(c, field) for column, field in COLUMNS.items()}
      settings['server_learning_rate'] = server_learning_rate(c)
      rows += [{'run': name, 'arm': arm, **settings, **r} for r in writer.records]
    if root:
      _write(root / 'results.csv', table_text(rows))
  if root:
    logging.info('Wrote %s and %d run directories', root / 'results.csv', len(runs))
  return records
