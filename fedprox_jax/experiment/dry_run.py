"""--dry_run: what a start would check, load, compile, hold and take, printed, with nothing written.

A dry run makes the checks of a real start (the config's fields, a sweep's arms and grid, the
workdir, the data's source, the Simulation's int32 counts and memory) and fails as it would, in one
line. It writes nothing: no workdir, no ./runs/, no lock, no partition cache, no copy of a
dataset (dry_run_data.py: how the data are had). JAX starts, to see the devices; nothing is
compiled or run.
"""
from collections.abc import Callable
import logging
import os
import pathlib
import sys
import textwrap

import ml_collections

from fedprox_jax import config_fields
from fedprox_jax import errors
from fedprox_jax import quiet
from fedprox_jax.configs import mnist_fedprox
from fedprox_jax.engine import devices as devices_lib
from fedprox_jax.engine import machine
from fedprox_jax.experiment import chunks as chunks_lib
from fedprox_jax.experiment import dry_run_data
from fedprox_jax.experiment import grid
from fedprox_jax.experiment import program_plan
from fedprox_jax.experiment import settings
from fedprox_jax.experiment import validation
from fedprox_jax.experiment import workdir as workdir_lib

WIDTH = 100
NOTHING_WRITTEN = ('Dry run: nothing was started and nothing was written (no workdir, no ./runs/, '
                   'no lock, no data cache)')


def main(report: Callable[[], str]) -> None:
  """Prints report(); a known failure ends the process with one line, as a start's would. The
  command line's process: its config's CPU device count applies, as in a start."""
  devices_lib.own_process()
  quiet.install()
  try:
    text = report()
  except errors.USER_ERRORS as e:
    sys.exit(f'error: {e}')
  print(text)


def single(config: ml_collections.ConfigDict, workdir: str | None, chosen: bool,
           overwrite: bool) -> str:
  """The dry run of one run (python -m fedprox_jax.run): `workdir` as the command line chose it
  (`chosen`: a default one, made only by a start)."""
  validation.validate(config)
  validation.warn_unused(config)
  lines = _config_lines(config, 'Config')
  lines += _wrap(f'Workdir: {_workdir(workdir, chosen, {"config.json": config}, overwrite, True)}')
  data = dry_run_data.describe(config)
  lines += _wrap(f'Data: {data.plan.described}; {data.source}')
  devices = _devices(config)
  program = program_plan.plan([config], data.plan, devices, data.num_clients)
  lines += ['Runs: 1']
  lines += _program_lines([('the run', program)])
  lines += _memory_lines([program], devices)
  lines += _time_lines(config, [program], data.load_s)
  return '\n'.join(lines + [NOTHING_WRITTEN])


def sweep(base: ml_collections.ConfigDict, sweep_config: ml_collections.ConfigDict,
          workdir: str | None, chosen: bool, overwrite: bool) -> str:
  """The dry run of a sweep (python -m fedprox_jax.sweep): every run expanded and validated, and
  its chunks of runs, each one compiled program, planned."""
  sweep_config = grid.with_defaults(sweep_config)
  base, runs = grid.prepare(base, sweep_config)
  lines = _config_lines(base, 'Base config')
  lines += _wrap(f'Sweep: {len(sweep_config.arms)} arm(s) x their grids x repeats = '
                 f'{sweep_config.repeats}; max_runs_per_chunk = '
                 f'{sweep_config.max_runs_per_chunk}, cpu_devices = {sweep_config.cpu_devices}')
  configs = {'sweep.json': sweep_config, 'base_config.json': base}
  lines += _wrap(f'Workdir: {_workdir(workdir, chosen, configs, overwrite, False)}')
  data = dry_run_data.describe(base)
  lines += _wrap(f'Data: {data.plan.described}; {data.source}')
  lines += [f'Runs: {len(runs)} (name: what it changes in the base config)']
  flat_base = config_fields.flatten(base)
  for run in runs:
    changes = [
        f'{k} = {v!r}' for k, v in config_fields.flatten(run.config).items()
        if flat_base.get(k) != v
    ]
    lines += _wrap(f'{run.name}: {", ".join(changes) or "nothing"}', indent='  ')
  devices = _devices(base)
  chunks = chunks_lib.split(runs, sweep_config.max_runs_per_chunk)
  programs = [(f'{c.description} ({c.label})',
               program_plan.plan([run.config
                                  for run in c.runs], data.plan, devices, data.num_clients))
              for c in chunks]
  lines += _program_lines(programs)
  lines += _memory_lines([p for _, p in programs], devices)
  lines += _time_lines(base, [p for _, p in programs], data.load_s)
  return '\n'.join(lines + [NOTHING_WRITTEN])


def _wrap(text: str, indent: str = '') -> list[str]:
  return textwrap.wrap(
      text, WIDTH, initial_indent=indent, subsequent_indent=indent + '    ',
      break_on_hyphens=False) or [indent]


def _config_lines(config: ml_collections.ConfigDict, label: str) -> list[str]:
  """The fields that differ from the project's default config (configs/mnist_fedprox.py)."""
  default = config_fields.flatten(mnist_fedprox.get_config())
  changed = [
      f'{k} = {v!r}' for k, v in config_fields.flatten(config).items()
      if k not in default or default[k] != v
  ]
  gone = sorted(k for k in default if k not in config_fields.flatten(config))
  text = (f'{label}: valid; fields that differ from the project default (configs/mnist_fedprox.py):'
          f' {", ".join(changed) or "none"}')
  if gone:
    text += f'; fields it has not: {", ".join(gone)}'
  return _wrap(text)


def _workdir(workdir: str | None, chosen: bool, configs: dict, overwrite: bool,
             single_run: bool) -> str:
  """What a start would do with the workdir, checked as it would check it, reading only."""
  if not workdir:
    return 'none (--workdir=): nothing would be saved'
  if chosen:
    return (f'{workdir} (--workdir unset: a start makes it, or {workdir}-2, -3, ... if taken; '
            'rerun with --workdir= that folder to resume)')
  workdir_lib.check_name(workdir)
  if single_run:
    workdir_lib.refuse_sweep_run(workdir)
  root = pathlib.Path(workdir)
  if not root.exists():
    parent = next(p for p in root.absolute().parents if p.exists())
    if not os.access(parent, os.W_OK | os.X_OK):
      raise errors.ConfigError(f'--workdir {workdir} cannot be written (permission denied in '
                               f'{parent}): choose another directory')
    return f'{workdir}: new, made at the start'
  if not root.is_dir():
    raise errors.ConfigError(f'--workdir {root} is a file, not a directory: choose another path')
  if not os.access(root, os.W_OK | os.X_OK):
    raise errors.ConfigError(f'--workdir {workdir} cannot be written (permission denied): choose '
                             'another directory')
  if overwrite:
    workdir_lib.check_overwrite(root)
    return f'{workdir}: --overwrite: what runs wrote there is deleted at the start'
  workdir_lib.check_same_run(workdir, configs)
  if any((root / name).exists() for name in workdir_lib.RUN_FILES):
    return (f'{workdir}: holds a run of this config, which a start resumes from its newest '
            'checkpoint that verifies (a finished one is left as it is)')
  return f'{workdir}: there, without a run: the run starts in it'


def _devices(c: ml_collections.ConfigDict) -> machine.Devices:
  """The devices a start would have: in a command line's process, the CPU split into
  compute.cpu_devices (no processes joined, no compilation cache: nothing here would fill it).
  JAX starts here; nothing is compiled."""
  devices_lib.configure(
      settings.for_compute(c)._replace(compilation_cache_dir='', distributed=False))
  if c.compute.distributed:
    logging.warning('compute.distributed: a dry run does not join the other processes; its '
                    'devices and estimates are this process\'s alone')
  return machine.devices_now()


def _program_lines(programs: list[tuple[str, program_plan.ProgramPlan]]) -> list[str]:
  count = sum(len(p.programs) for _, p in programs)
  lines = [f'Compiled programs: {count}, in {len(programs)} chunk(s) of runs side by side']
  for i, (label, p) in enumerate(programs):
    lines += _wrap(
        f'chunk {i + 1}/{len(programs)}, {label}: {p.num_runs} run(s), about '
        f'{machine.size_text(p.host_bytes)} at the peak',
        indent='  ')
    for text in p.programs:
      lines += _wrap(text, indent='    ')
  return lines


def _memory_lines(programs: list[program_plan.ProgramPlan], devices: machine.Devices) -> list[str]:
  top = max(programs, key=lambda p: p.host_bytes)
  text = (f'Memory estimate: about {machine.size_text(top.host_bytes)} at the peak (this machine '
          f'has {machine.size_text(machine.machine_memory())}); the most, {top.largest}. From '
          'formulas: a start checks them again with the compiled programs\' own working memory')
  if not devices.cpu:
    text += (f'; each {devices.platform} device about {machine.size_text(top.device_bytes)} of '
             f'its {machine.size_text(devices.memory)}')
  return _wrap(text)


def _time_lines(c: ml_collections.ConfigDict, programs: list[program_plan.ProgramPlan],
                load_s: float | None) -> list[str]:
  if load_s is None or any(p.round_s is None for p in programs):
    return ['Wall time estimate: unknown until the data are loaded']
  compile_s = len(programs) * program_plan.COMPILE_S
  round_s = sum(p.round_s for p in programs)
  eval_s = sum(p.eval_s for p in programs)
  total = program_plan.START_S + load_s + compile_s + c.num_rounds * round_s + eval_s
  steps = sum(p.steps_per_round for p in programs)
  return _wrap(
      f'Wall time estimate: about {_duration(total)}, rough (a model calibrated on a 2-core '
      'CPU\'s benchmark figures, within about 2x of them; an upper bound on an accelerator): '
      f'{program_plan.START_S:.0f} s to start, {_duration(load_s)} for the data, '
      f'{_duration(compile_s)} to compile {len(programs)} chunk(s) of programs, '
      f'{c.num_rounds:,} rounds of about {steps:,.0f} client steps ({_duration(round_s)} a round), '
      f'{program_plan.evaluations(c):,} evaluations ({_duration(eval_s)} in all)')


def _duration(seconds: float) -> str:
  if seconds < 1:
    return f'{seconds * 1000:.0f} ms'
  if seconds < 120:
    return f'{seconds:.1f} s'
  if seconds < 7200:
    return f'{seconds / 60:.1f} min'
  return f'{seconds / 3600:.1f} h'
