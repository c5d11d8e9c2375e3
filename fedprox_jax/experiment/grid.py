"""A sweep's runs: its arms (field overrides, each with an optional grid of its own) x a grid shared
by every arm x repeats (seeds), each run named (its directory under runs/) and its config checked
before anything runs. experiment/sweep_runner.py runs them.
"""
import itertools
import re
from typing import NamedTuple

import ml_collections

from fedprox_jax import aggregation
from fedprox_jax import algorithms
from fedprox_jax import config_fields
from fedprox_jax.errors import ConfigError
from fedprox_jax.experiment import settings
from fedprox_jax.experiment import validation

# Besides the hyperparameters (run_settings), what a run of a sweep may change: the seed, choices
# that are data of the program, and the structure (one program per algorithm and optimizer).
VARIABLE_FIELDS = ('seed', 'algorithm.name', 'algorithm.drop_stragglers', 'algorithm.weighting',
                   'stragglers.mode', 'server.optimizer')
SWEEP_FIELDS = ('repeats', 'arms', 'grid', 'max_runs_per_chunk', 'cpu_devices')
# The sweep fields that may be left out, and their values then.
SWEEP_DEFAULTS = {'grid': {}, 'max_runs_per_chunk': 0, 'cpu_devices': 0}
# Arm names become directory names: letters, digits and a few marks, nothing that leaves runs/.
ARM_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9_+=-]*')
ARM_GRID = 'grid'  # An arm's own grid, inside its overrides.


class SweepRun(NamedTuple):
  name: str  # arm-gridvalues-seedN: its directory under runs/
  arm: str  # As written in the sweep config.
  series: str  # The arm and its grid values but the straggler fraction: a line of the figure.
  config: ml_collections.ConfigDict


def with_defaults(sweep: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The sweep config with the fields it may leave out filled in."""
  return ml_collections.ConfigDict({**SWEEP_DEFAULTS, **sweep.to_dict()})


def _variable() -> set[str]:
  # Every algorithm's own hyperparameters vary too: traced values, or one program per value; and
  # the aggregation stages' (traced; turning a stage on or off makes another program).
  return set(VARIABLE_FIELDS) | set(settings.COMMON_HYPERPARAMETERS) | {
      f'algorithm.{name}' for name in algorithms.declarations()
  } | set(aggregation.fields())


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


def prepared_base(base: ml_collections.ConfigDict,
                  sweep: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The base config as the sweep runs it (its devices: sweep.cpu_devices)."""
  return prepare(base, with_defaults(sweep))[0]
