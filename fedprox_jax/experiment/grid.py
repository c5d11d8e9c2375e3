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
import re
from typing import NamedTuple

import ml_collections

from fedprox_jax import algorithms
from fedprox_jax import config_fields
from fedprox_jax import quiet
from fedprox_jax import tasks
from fedprox_jax.algorithms import server_optimizers
from fedprox_jax.engine import processes
from fedprox_jax.engine import run_settings
from fedprox_jax.engine.simulation import Simulation
from fedprox_jax.errors import ConfigError
from fedprox_jax.errors import WriteError
from fedprox_jax.experiment import chunks as chunks_lib
from fedprox_jax.experiment import rounds
from fedprox_jax.experiment import single_run
from fedprox_jax.experiment import validation
from fedprox_jax.experiment.checkpoint_state import earlier_fingerprints
from fedprox_jax.experiment.checkpoint_state import fingerprint
from fedprox_jax.experiment.checkpoints import Checkpoints
from fedprox_jax.experiment.workdir import WorkdirLock
from fedprox_jax.experiment.workdir import prepare_workdir
from fedprox_jax.experiment.writers import RunWriter
from fedprox_jax.files import write_atomically

# Besides the hyperparameters (run_settings), what a run of a sweep may change: the seed, choices
# that are data of the program, and the structure (one program per algorithm and optimizer).
VARIABLE_FIELDS = ('seed', 'algorithm.name', 'algorithm.adaptive_mu', 'algorithm.drop_stragglers',
                   'algorithm.weighting', 'stragglers.mode', 'server.optimizer')
SWEEP_FIELDS = ('repeats', 'arms', 'grid', 'max_runs_per_chunk', 'cpu_devices')
# The sweep fields that may be left out, and their values then.
SWEEP_DEFAULTS = {'grid': {}, 'max_runs_per_chunk': 0, 'cpu_devices': 0}
# Arm names become directory names: letters, digits and a few marks, nothing that leaves runs/.
ARM_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9_+=-]*')
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


class SweepRun(NamedTuple):
  name: str  # arm-gridvalues-seedN: its directory under runs/
  arm: str  # As written in the sweep config.
  series: str  # The arm and its grid values but the straggler fraction: a line of the figure.
  config: ml_collections.ConfigDict


def with_defaults(sweep: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The sweep config with the fields it may leave out filled in."""
  return ml_collections.ConfigDict({**SWEEP_DEFAULTS, **sweep.to_dict()})


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
    if key not in sweep and key not in SWEEP_DEFAULTS:
      raise ConfigError(f'the sweep has no field {key}: every sweep sets repeats and arms')
  is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)
  for key, lowest in (('repeats', 1), ('max_runs_per_chunk', 0), ('cpu_devices', 0)):
    if not is_int(sweep[key]) or sweep[key] < lowest:
      raise ConfigError(f'sweep.{key} = {sweep[key]!r} must be an int >= {lowest}')
  config_fields.check_seed(base.seed, 'seed', span=sweep.repeats)
  if not sweep.arms:
    raise ConfigError('sweep.arms is empty: name at least one arm (it may override nothing)')
  known = list(config_fields.flatten(base))
  shared = set(config_fields.flatten(sweep.grid))
  lowered = set()
  for arm, overrides in sweep.arms.items():
    if not ARM_NAME.fullmatch(arm):
      raise ConfigError(f'sweep arm {arm!r}: an arm name names directories, so it takes letters, '
                        'digits, _ + = - only (and starts with a letter or digit)')
    if arm.lower() in lowered:  # Case-insensitive file systems would merge their directories.
      raise ConfigError(f'sweep arm {arm!r}: another arm has the same name but for case')
    lowered.add(arm.lower())
    fixed = set(config_fields.flatten({k: v for k, v in overrides.items() if k != ARM_GRID}))
    for field in fixed:
      if field not in known:
        raise ConfigError(
            config_fields.unknown_field_message(field, known, f'sweep arm {arm!r}: the config'))
    own = overrides.get(ARM_GRID, {})
    _check_grid(own, known, f'sweep arm {arm!r}: grid')
    if 'seed' in fixed | set(config_fields.flatten(own)) | shared:
      raise ConfigError(f'sweep arm {arm!r}: sets seed, which a sweep chooses (run r of '
                        'sweep.repeats has the base config\'s seed + r): set --config.seed and '
                        'sweep.repeats instead')
    for field in set(config_fields.flatten(own)):
      if field in shared or field in fixed:
        raise ConfigError(f'sweep arm {arm!r}: {field} is set both by its grid and by '
                          f'{"sweep.grid" if field in shared else "the arm itself"}: set it once')
    for field in fixed & shared:
      raise ConfigError(f'sweep arm {arm!r}: {field} is set both by the arm and by sweep.grid: '
                        'set it once')
  _check_grid(sweep.grid, known, 'sweep.grid')


def _with_changes(base: ml_collections.ConfigDict, changes: dict,
                  name: str) -> ml_collections.ConfigDict:
  """The base config with a run's `changes`; a value of the wrong type is named in one line."""
  config = ml_collections.ConfigDict(base.to_dict())
  for field, value in changes.items():
    try:
      config.update_from_flattened_dict({field: value})
    except (TypeError, ValueError) as e:
      wanted = type(config_fields.get(base, field)).__name__
      raise ConfigError(f'sweep run {name}: {field} = {value!r} is a {type(value).__name__}, '
                        f'where the config holds a {wanted} ({" ".join(str(e).split())[:120]}): '
                        f'give {wanted} values') from None
  return config


def expand(base: ml_collections.ConfigDict, sweep: ml_collections.ConfigDict) -> list[SweepRun]:
  """Every run: each arm x its grid x the sweep's grid x repeats, each config validated."""
  sweep = with_defaults(sweep)
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
        named = [f'{k.split(".")[-1]}{v}' for k, v in zip(grid, values)]
        name = '-'.join([arm, *named, f'seed{changes["seed"]}'])
        config = _with_changes(base, changes, name)
        if len(name.encode()) > 255:
          raise ConfigError(f'sweep run {name[:60]}...: its directory name would be '
                            f'{len(name.encode())} bytes, over the 255 a name takes: use shorter '
                            'arm names or fewer grid fields')
        series = '-'.join([arm, *(n for n, k in zip(named, grid) if k != 'stragglers.fraction')])
        try:
          validation.validate(config)
        except ConfigError as e:
          raise ConfigError(f'sweep run {name}: {e}') from None
        if name.lower() in names:
          raise ConfigError(f'the sweep names two runs {name}: give every arm and grid value '
                            'once')
        names.add(name.lower())
        runs.append(SweepRun(name, arm, series, config))
  return runs


def prepare(base: ml_collections.ConfigDict, sweep: ml_collections.ConfigDict):
  """The sweep's base config (with its CPU device count) and its runs."""
  validation.validate(base)
  sweep = with_defaults(sweep)
  _check_sweep(base, sweep)
  base = ml_collections.ConfigDict(base.to_dict())
  base.compute.cpu_devices = sweep.cpu_devices
  runs = expand(base, sweep)
  for run in runs:
    validation.warn_unused(run.config, f'sweep run {run.name}')
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
  sweep = with_defaults(sweep)
  base, runs = prepare(base, sweep)
  processes.join(base)
  with processes.telling_failure():
    if not workdir or not processes.is_leader():  # The leader alone touches the workdir.
      return _run_chunks(base, sweep, runs, None)
    root = pathlib.Path(workdir)
    with WorkdirLock(workdir) as lock:
      try:
        prepare_workdir(workdir, {'sweep.json': sweep, 'base_config.json': base}, overwrite)
        for name, config in (('sweep.json', sweep), ('base_config.json', base)):
          _write(root / name, config.to_json(indent=2, sort_keys=True) + '\n')
        return _run_chunks(base, sweep, runs, root)
      except BaseException:
        lock.remove_if_unstarted(any(p.stat().st_size for p in root.glob('runs/*/metrics.jsonl')))
        raise


def prepared_base(base: ml_collections.ConfigDict,
                  sweep: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The base config as the sweep runs it (its devices: sweep.cpu_devices)."""
  return prepare(base, with_defaults(sweep))[0]


def _run_chunks(base, sweep, runs, root: pathlib.Path | None) -> dict[str, list[dict]]:
  """The chunks one after the other. With several processes the leader (which alone has `root`)
  tells the others, chunk by chunk, whether it is complete or from which round it resumes, and
  hands them the state it restored."""
  leader = processes.is_leader()
  chunks = chunks_lib.split(runs, sweep.max_runs_per_chunk)
  logging.info('Sweep of %d runs in %d program%s%s', len(runs), len(chunks),
               's' if len(chunks) > 1 else '',
               ' (one per structure and memory chunk)' if len(chunks) > 1 else '')
  evaluate_at = rounds.evaluation_rounds(base.num_rounds, base.eval_every)
  checkpoints = [
      Checkpoints(root / 'checkpoints' / chunk.label, base.checkpoint_every, base.checkpoint_keep,
                  fingerprint([run.config
                               for run in chunk.runs]),
                  earlier_fingerprints([run.config
                                        for run in chunk.runs])) if root else None
      for chunk in chunks
  ]
  data, records, rows = None, {}, []
  for i, chunk in enumerate(chunks):
    logging.info('Chunk %d/%d: %d runs of %s', i + 1, len(chunks), len(chunk.runs),
                 chunk.description)
    writers = [
        RunWriter(str(root / 'runs' / run.name) if root else None, run.config) for run in chunk.runs
    ]
    restored, restored_round = None, -1
    if leader:
      processes.expect_announcement()
      restored = checkpoints[i].restore() if root else None
      single_run.check_rounds_done(restored, base.num_rounds, str(root))
      complete = bool(restored and restored.round == base.num_rounds)
      if complete:
        processes.announce(processes.COMPLETE)
    else:
      status, restored_round = processes.hear()
      complete = status == processes.COMPLETE
    if complete:
      for writer in writers if root else []:
        single_run.finish_completed(writer, restored, evaluate_at)
      logging.info('Chunk %d/%d is complete: kept as it is', i + 1, len(chunks))
    else:
      if data is None:
        data = tasks.load(base.data)
      # The others load the data once the leader has (from the cache it filled).
      processes.announce(processes.START, restored.round if restored else -1)
      sim = Simulation(chunk.runs[0].config, data,
                       [run_settings.from_config(run.config) for run in chunk.runs])
      restored = rounds.share_restored(sim, restored, restored_round)
      try:
        later = sum(len(c.runs) for c in chunks[i + 1:]) * base.num_rounds
        progress = rounds.run_rounds(sim, writers, [run.name for run in chunk.runs], checkpoints[i],
                                     restored, data.statistics(), later)
      except BaseException:
        for writer in writers:
          writer.abort()
        raise
      finally:
        if checkpoints[i]:
          checkpoints[i].close()
      for writer in writers:
        writer.close(rounds.summarize(writer.records, progress))
    for run, writer in zip(chunk.runs, writers):
      records[run.name] = writer.records
      settings = {column: config_fields.get(run.config, f) for column, f in COLUMNS.items()}
      settings['server_learning_rate'] = server_learning_rate(run.config)
      rows += [{
          'run': run.name,
          'arm': run.arm,
          'series': run.series,
          **settings,
          **r
      } for r in writer.records]
    if root:
      _write(root / 'results.csv', table_text(rows))
  if root:
    logging.info('Wrote %s and %d run directories', root / 'results.csv', len(runs))
  return records
