"""Grids of runs that share data, model and round count, advanced together as one program.

A sweep config names arms (sets of field overrides), a grid (fields and their values) and a
number of repeats (seeds). Each run gets its own directory with the files of a single run; the
sweep directory gets results.csv, one tidy row per (run, evaluated round).
"""
import csv
import io
import itertools
import logging
import os
import pathlib

import jax
import ml_collections
import numpy as np

from fedprox_jax import config_checks
from fedprox_jax import datasets
from fedprox_jax import devices
from fedprox_jax import evaluation
from fedprox_jax import models
from fedprox_jax import train
from fedprox_jax.checkpoints import Checkpoints
from fedprox_jax.config_checks import ConfigError
from fedprox_jax.simulation import RunSpec, Simulation
from fedprox_jax.workdir import WorkdirLock, prepare_workdir, write_atomically
from fedprox_jax.writers import RunWriter

# The fields a run of a sweep may change: each is data of the shared round program.
VARIABLE_FIELDS = ('seed', 'algorithm.name', 'algorithm.mu', 'algorithm.drop_stragglers',
                   'algorithm.adaptive_mu', 'stragglers.fraction', 'stragglers.mode')
SWEEP_FIELDS = ('repeats', 'arms', 'grid', 'max_runs_per_chunk', 'cpu_devices')


def _check_sweep(base: ml_collections.ConfigDict, sweep: ml_collections.ConfigDict) -> None:
  """The sweep config's own fields, and every field it sets exists in the base config."""
  for key in sweep.keys():
    if key not in SWEEP_FIELDS:
      raise ConfigError(config_checks.unknown_field_message(key, list(SWEEP_FIELDS), 'the sweep'))
  for key in SWEEP_FIELDS:
    if key not in sweep:
      raise ConfigError(f'the sweep has no field {key}: every sweep sets {", ".join(SWEEP_FIELDS)}')
  is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)
  for key, lowest in (('repeats', 1), ('max_runs_per_chunk', 0), ('cpu_devices', 0)):
    if not is_int(sweep[key]) or sweep[key] < lowest:
      raise ConfigError(f'sweep.{key} = {sweep[key]!r} must be an int >= {lowest}')
  config_checks.check_seed(base.seed, 'seed', span=sweep.repeats)
  if not sweep.arms:
    raise ConfigError('sweep.arms is empty: name at least one arm (it may override nothing)')
  known = list(config_checks.flatten(base))
  for arm, overrides in sweep.arms.items():
    for field in config_checks.flatten(overrides):
      if field not in known:
        raise ConfigError(config_checks.unknown_field_message(field, known,
                                                              f'sweep arm {arm!r}: the config'))
  for field, values in config_checks.flatten(sweep.grid).items():
    if field not in known:
      raise ConfigError(config_checks.unknown_field_message(field, known, 'sweep.grid: the config'))
    if not isinstance(values, (list, tuple)) or not values:
      raise ConfigError(f'sweep.grid.{field} = {values!r} must be a non-empty list of values')


def expand(base: ml_collections.ConfigDict,
           sweep: ml_collections.ConfigDict) -> list[tuple[str, ml_collections.ConfigDict]]:
  """(name, config) of every run: arms x grid x repeats, each config validated."""
  _check_sweep(base, sweep)
  grid = config_checks.flatten(sweep.grid)
  runs, names = [], set()
  for arm, overrides in sweep.arms.items():
    for values in itertools.product(*grid.values()):
      for repeat in range(sweep.repeats):
        changes = {**config_checks.flatten(overrides), **dict(zip(grid, values)),
                   'seed': base.seed + repeat}
        for field in changes:
          if field not in VARIABLE_FIELDS:
            raise ConfigError(
                f'sweep field {field} cannot vary within a sweep (only {", ".join(VARIABLE_FIELDS)}'
                '); run one sweep per value instead')
        config = ml_collections.ConfigDict(base.to_dict())
        config.update_from_flattened_dict(changes)
        grid_name = '-'.join(f'{k.split(".")[-1]}{v}' for k, v in zip(grid, values))
        name = '-'.join(filter(None, [arm, grid_name, f'seed{config.seed}']))
        try:
          config_checks.validate(config)
        except ConfigError as e:
          raise ConfigError(f'sweep run {name}: {e}') from None
        if name in names:
          raise ConfigError(f'the sweep names two runs {name}: give every arm and grid value '
                            'once')
        names.add(name)
        runs.append((name, config))
  return runs


def prepare(base: ml_collections.ConfigDict, sweep: ml_collections.ConfigDict):
  """The sweep's base config (with its CPU device count) and its (name, config) runs."""
  config_checks.validate(base)
  _check_sweep(base, sweep)
  base = ml_collections.ConfigDict(base.to_dict())
  base.compute.cpu_devices = sweep.cpu_devices
  return base, expand(base, sweep)


def runs_per_chunk(base: ml_collections.ConfigDict, num_params: int, requested: int) -> int:
  """How many runs one program may hold: `requested`, or a quarter of the device's memory over a
  rough per-run footprint (parameters in every lane and the evaluation's activations)."""
  if requested:
    return requested
  device = jax.devices()[0]
  stats = device.memory_stats() if device.platform != 'cpu' else None
  memory = (stats or {}).get('bytes_limit') or os.sysconf('SC_PAGE_SIZE') * os.sysconf(
      'SC_PHYS_PAGES')
  lanes = max(base.compute.num_lanes, jax.device_count())
  eval_chunk = base.eval.chunk_size or evaluation.AUTO_CHUNK[base.model.name]
  per_run = 4 * num_params * (4 + 2 * lanes) + 4 * eval_chunk * 10 * 3
  if base.model.name == 'cnn':
    per_run += 4 * eval_chunk * 28 * 28 * 32 * 4  # Evaluation chunk activations.
  return max(1, int(memory // 4 // per_run))


def table_text(rows: list[dict]) -> str:
  """One CSV row per (run, evaluated round)."""
  columns = list(dict.fromkeys(k for row in rows for k in row))
  out = io.StringIO(newline='')
  writer = csv.DictWriter(out, fieldnames=columns)
  writer.writeheader()
  writer.writerows(rows)
  return out.getvalue()


def run_sweep(base: ml_collections.ConfigDict, sweep: ml_collections.ConfigDict,
              workdir: str | None, overwrite: bool = False) -> dict[str, list[dict]]:
  """Runs every run of the sweep; returns {run name: metrics records}.

  A workdir is locked for the whole sweep. One of the same sweep resumes it: finished chunks of
  runs are kept as they are, an interrupted one continues from its newest verified checkpoint.
  """
  base, runs = prepare(base, sweep)
  if not workdir:
    return _run_chunks(base, sweep, runs, None)
  root = pathlib.Path(workdir)
  with WorkdirLock(workdir):
    prepare_workdir(workdir, {'sweep.json': sweep, 'base_config.json': base}, overwrite)
    for name, config in (('sweep.json', sweep), ('base_config.json', base)):
      write_atomically(root / name, config.to_json(indent=2, sort_keys=True) + '\n')
    return _run_chunks(base, sweep, runs, root)


def _run_chunks(base, sweep, runs, root: pathlib.Path | None) -> dict[str, list[dict]]:
  devices.configure(base)
  data = None
  shapes = jax.eval_shape(lambda key: models.create_model(
      base.model.name, *datasets.model_dims(base.data), key)[1], jax.random.PRNGKey(0))
  num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(shapes))
  chunk = runs_per_chunk(base, num_params, sweep.max_runs_per_chunk)
  chunks = [runs[i:i + chunk] for i in range(0, len(runs), chunk)]
  logging.info('Sweep of %d runs%s', len(runs),
               f' in {len(chunks)} chunks of up to {chunk} runs (memory)' if len(chunks) > 1 else
               ' in one program')
  evaluate_at = train.evaluation_rounds(base.num_rounds, base.eval_every)
  checkpoints = [Checkpoints(root / 'checkpoints' / f'runs{i * chunk}-{i * chunk + len(part)}',
                             base.checkpoint_every, base.checkpoint_keep) if root else None
                 for i, part in enumerate(chunks)]
  for c in filter(None, checkpoints):
    train.check_rounds_done(c, base.num_rounds, str(root))
  records, rows = {}, []
  for i, part in enumerate(chunks):
    if len(chunks) > 1:
      logging.info('Chunk %d/%d: %d runs', i + 1, len(chunks), len(part))
    writers = [RunWriter(str(root / 'runs' / name) if root else None, c) for name, c in part]
    # Named by the runs it holds, so a resumption with other chunk sizes does not mix them up.
    restored = checkpoints[i].restore() if root else None
    if restored and restored.round == base.num_rounds:
      for writer in writers:
        train.finish_completed(writer, restored, evaluate_at)
      logging.info('Chunk %d/%d is complete: kept as it is', i + 1, len(chunks))
    else:
      if data is None:
        data = datasets.load_federated(base.data)
      sim = Simulation(base, data, [RunSpec.from_config(c) for _, c in part])
      try:
        progress = train.run_rounds(sim, writers, [name for name, _ in part], checkpoints[i],
                                    restored, data.statistics())
      finally:
        if checkpoints[i]:
          checkpoints[i].close()
      for writer in writers:
        writer.close(train.summarize(writer.records, progress))
    for (name, c), writer in zip(part, writers):
      records[name] = writer.records
      arm = name.split('-')[0]
      rows += [{'run': name, 'arm': arm, 'algorithm': c.algorithm.name, 'mu': c.algorithm.mu,
                'stragglers': c.stragglers.fraction, 'seed': c.seed, **r} for r in writer.records]
    if root:
      write_atomically(root / 'results.csv', table_text(rows))
  if root:
    logging.info('Wrote %s and %d run directories', root / 'results.csv', len(runs))
  return records
