"""Grids of runs that share data, model and round count, advanced together as one program.

A sweep config names arms (sets of field overrides), a grid (fields and their values) and a
number of repeats (seeds). Each run gets its own directory with the files of a single run; the
sweep directory gets results.csv, one tidy row per (run, evaluated round).
"""
import csv
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
from fedprox_jax.checkpoints import Checkpoints, prepare_workdir
from fedprox_jax.simulation import RunSpec, Simulation
from fedprox_jax.writers import RunWriter

# The fields a run of a sweep may change: each is data of the shared round program.
VARIABLE_FIELDS = ('seed', 'algorithm.name', 'algorithm.mu', 'algorithm.drop_stragglers',
                   'algorithm.adaptive_mu', 'stragglers.fraction', 'stragglers.mode')


def expand(base: ml_collections.ConfigDict,
           sweep: ml_collections.ConfigDict) -> list[tuple[str, ml_collections.ConfigDict]]:
  """(name, config) of every run: arms x grid x repeats, each config validated."""
  grid = config_checks.flatten(sweep.grid)
  runs = []
  for arm, overrides in sweep.arms.items():
    for values in itertools.product(*grid.values()):
      for repeat in range(sweep.repeats):
        changes = {**config_checks.flatten(overrides), **dict(zip(grid, values)),
                   'seed': base.seed + repeat}
        for field in changes:
          if field not in VARIABLE_FIELDS:
            raise config_checks.ConfigError(
                f'sweep field {field} cannot vary within a sweep (only {", ".join(VARIABLE_FIELDS)}'
                '); run one sweep per value instead')
        config = ml_collections.ConfigDict(base.to_dict())
        config.update_from_flattened_dict(changes)
        config_checks.validate(config)
        grid_name = '-'.join(f'{k.split(".")[-1]}{v}' for k, v in zip(grid, values))
        runs.append(('-'.join(filter(None, [arm, grid_name, f'seed{config.seed}'])), config))
  return runs


def prepare(base: ml_collections.ConfigDict, sweep: ml_collections.ConfigDict):
  """The sweep's base config (with its CPU device count) and its (name, config) runs."""
  config_checks.validate(base)
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


def write_table(path: pathlib.Path, rows: list[dict]) -> None:
  """One CSV row per (run, evaluated round), written atomically."""
  columns = list(dict.fromkeys(k for row in rows for k in row))
  tmp = path.with_suffix('.tmp')
  with open(tmp, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
  os.replace(tmp, path)


def run_sweep(base: ml_collections.ConfigDict, sweep: ml_collections.ConfigDict,
              workdir: str | None, overwrite: bool = False) -> dict[str, list[dict]]:
  """Runs every run of the sweep; returns {run name: metrics records}.

  A workdir of the same sweep resumes it: finished chunks of runs are kept, an interrupted one
  continues from its latest checkpoint.
  """
  base, runs = prepare(base, sweep)
  root = pathlib.Path(workdir) if workdir else None
  if root:
    prepare_workdir(workdir, {'sweep.json': sweep, 'base_config.json': base}, overwrite)
    (root / 'sweep.json').write_text(sweep.to_json(indent=2, sort_keys=True) + '\n')
    (root / 'base_config.json').write_text(base.to_json(indent=2, sort_keys=True) + '\n')
  devices.configure(base)
  data = datasets.load_federated(base.data)
  shapes = jax.eval_shape(lambda key: models.create_model(
      base.model.name, data.num_classes, data.input_dim, key)[1], jax.random.PRNGKey(0))
  num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(shapes))
  chunk = runs_per_chunk(base, num_params, sweep.max_runs_per_chunk)
  chunks = [runs[i:i + chunk] for i in range(0, len(runs), chunk)]
  logging.info('Sweep of %d runs%s', len(runs),
               f' in {len(chunks)} chunks of up to {chunk} runs (memory)' if len(chunks) > 1 else
               ' in one program')
  stats = data.statistics()
  records, rows = {}, []
  for i, part in enumerate(chunks):
    if len(chunks) > 1:
      logging.info('Chunk %d/%d: %d runs', i + 1, len(chunks), len(part))
    sim = Simulation(base, data, [RunSpec.from_config(c) for _, c in part])
    writers = [RunWriter(str(root / 'runs' / name) if root else None, c) for name, c in part]
    # Named by the runs it holds, so a resumption with other chunk sizes does not mix them up.
    checkpoints = (Checkpoints(root / 'checkpoints' / f'runs{i * chunk}-{i * chunk + len(part)}',
                               base.checkpoint_every, base.checkpoint_keep) if root else None)
    try:
      train.run_rounds(sim, writers, [name for name, _ in part], checkpoints)
    finally:
      if checkpoints:
        checkpoints.close()
    for (name, c), writer in zip(part, writers):
      writer.close(train.summarize(writer.records, sim.totals, stats, sim.num_lanes))
      records[name] = writer.records
      arm = name.split('-')[0]
      rows += [{'run': name, 'arm': arm, 'algorithm': c.algorithm.name, 'mu': c.algorithm.mu,
                'stragglers': c.stragglers.fraction, 'seed': c.seed, **r} for r in writer.records]
    if root:
      write_table(root / 'results.csv', rows)
  if root:
    logging.info('Wrote %s and %d run directories', root / 'results.csv', len(runs))
  return records
