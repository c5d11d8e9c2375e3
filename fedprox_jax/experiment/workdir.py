"""A run's (or a sweep's) directory: one writer at a time, the same config throughout.

The lock is an OS file lock (flock) on WORKDIR/.lock, held for the whole run: the kernel releases
it when the process ends, however it ends, so a killed run never leaves a stale lock behind. A
process counts a workdir as its own (to remove after a failed start) only when its own `mkdir`
made it, and removes it only while it holds the lock: of two processes started at once on a new
workdir, the one refused never touches the other's.
"""
import atexit
import errno
import fcntl
import itertools
import json
import os
import pathlib
import shutil

import ml_collections

from fedprox_jax import algorithms
from fedprox_jax.config_fields import flatten
from fedprox_jax.errors import ConfigError

LOCK_NAME = '.lock'
# Fields that may change between a run and its resumption: where things are read from and how
# the work is spread; more rounds extend a finished run.
_RESUMABLE_CHANGES = ('num_rounds', 'data.tfds_data_dir', 'data.manual_dir', 'data.cache_dir',
                      'compute.')
# Fields added since earlier releases, with the values that give those releases' runs: a workdir
# written before a field existed resumes when the field keeps that value.
ADDED_FIELDS = {
    'server.optimizer': 'sgd',
    'server.learning_rate': 0.0,
    'server.momentum': 0.9,
    'server.b1': 0.9,
    'server.b2': 0.99,
    'server.eps': 1e-3,
    'eval.clients': 0,
    'eval.full_every': 0,
    'draws_version': 1,  # Runs begun before the field drew cohorts with jax.random.choice.
    'privacy.clip_norm': 0.0,
    'privacy.noise_multiplier': 0.0,
    'privacy.target_epsilon': 0.0,
    'privacy.delta': 0.0,
    'privacy.target_quantile': 0.0,
    'privacy.clip_learning_rate': 0.2,
    'privacy.clipped_count_stddev': 0.0,
    'compression.bits': 0,
    'compression.topk': 1.0,
    'compression.error_feedback': False,
}
# Algorithms' own hyperparameters that every release's configs have held.
_ALWAYS_HELD = ('algorithm.adaptive_mu',)


def added_fields() -> dict:
  """ADDED_FIELDS, then every algorithm's own hyperparameter (declared in its file) at its
  default, in a fixed order: a field an algorithm declares is one added since earlier releases,
  whose runs it leaves as they were at that value."""
  declared = {
      f'algorithm.{name}': default
      for name, default in sorted(algorithms.own_fields().items())
      if f'algorithm.{name}' not in _ALWAYS_HELD
  }
  return {**ADDED_FIELDS, **declared}


class WorkdirBusy(ConfigError):
  """Another process holds the workdir."""


_claimed: set[pathlib.Path] = set()  # Default workdirs made by this process (claim_new).


def _remove_unused_claim(path: pathlib.Path, made_parent: bool) -> None:
  try:
    path.rmdir()  # Only while empty: a run that locked it has left at least .lock there.
    if made_parent:
      path.parent.rmdir()  # ./runs/ too, if this process made it and nothing else is there.
  except OSError:
    pass


def claim_new(base: pathlib.Path) -> pathlib.Path:
  """A new directory `base` (or base-2, base-3, ...) made by this process, so that processes
  started in the same second never choose the same one. Left empty by the process (it failed
  before its run began), it is removed when the process exits."""
  try:
    made_parent = not base.parent.is_dir()
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
      path = base if n == 1 else base.with_name(f'{base.name}-{n}')
      try:
        path.mkdir()
      except FileExistsError:
        continue
      _claimed.add(path.absolute())
      atexit.register(_remove_unused_claim, path.absolute(), made_parent)
      return path
  except OSError as e:
    raise ConfigError(f'a workdir cannot be made in {base.parent} ({e.strerror}): give '
                      '--workdir=DIR') from None


def check_name(workdir: str) -> None:
  """Each part of the path must fit the file system's 255 bytes per name."""
  for part in pathlib.Path(workdir).parts:
    if len(os.fsencode(part)) > 255:
      raise ConfigError(f'--workdir has a name of {len(os.fsencode(part))} bytes ({part[:40]}...): '
                        'a file or directory name takes at most 255 bytes: choose a shorter name')


class WorkdirLock:
  """Holds an exclusive lock on a workdir (creating it) while the `with` block runs."""

  def __init__(self, workdir: str):
    check_name(workdir)
    self.root = pathlib.Path(workdir)
    self._fd = None
    self.created = False  # Whether this process made the directory (a failed start removes it).

  def _open(self) -> int:
    """The lock file's descriptor, making the directory if it is not there."""
    for _ in range(3):  # A directory removed under us (a failed start of its maker) is made anew.
      try:
        self.root.parent.mkdir(parents=True, exist_ok=True)
        try:
          self.root.mkdir()
          self.created = True
        except FileExistsError:
          self.created = self.root.absolute() in _claimed
        return os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
      except FileNotFoundError:
        continue
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))

  def __enter__(self) -> 'WorkdirLock':
    if self.root.exists() and not self.root.is_dir():
      raise ConfigError(f'--workdir {self.root} is a file, not a directory: choose another path')
    try:
      fd = self._open()
    except OSError as e:
      raise ConfigError(f'--workdir {self.root} cannot be written ({e.strerror}): choose another '
                        'directory') from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      holder = os.read(fd, 32).decode(errors='replace').strip() or 'unknown'
      os.close(fd)
      self.created = False  # Not ours to remove: the holder's.
      if e.errno not in (errno.EAGAIN, errno.EACCES):
        raise ConfigError(f'--workdir {self.root} cannot be locked ({e.strerror}): choose a '
                          'directory on a local file system') from None
      raise WorkdirBusy(f'--workdir {self.root} is in use by another run (pid {holder}): wait '
                        'for it to finish, or choose another workdir') from None
    try:
      os.ftruncate(fd, 0)
      os.write(fd, f'{os.getpid()}\n'.encode())
    except OSError as e:
      os.close(fd)
      raise ConfigError(f'--workdir {self.root} cannot be written ({e.strerror}): free disk '
                        'space, or choose another directory') from None
    self._fd = fd
    return self

  def remove_if_unstarted(self, started: bool) -> None:
    """After a failure, while the lock is held: a workdir that this process made, and in which
    its run recorded nothing, goes."""
    if self._fd is not None and self.created and not started:
      shutil.rmtree(self.root, ignore_errors=True)

  def __exit__(self, *exc) -> None:
    if self._fd is not None:
      os.close(self._fd)  # Releases the lock; the file stays (removing it would race).
      self._fd = None


def resumable(field: str) -> bool:
  """Whether a config field may change between a run and its resumption."""
  return field.startswith(_RESUMABLE_CHANGES)


def config_differences(old: dict, new: dict) -> list[str]:
  """'field: old -> new' for each field that differs and may not change on resumption."""
  old, new = flatten(old), flatten(new)
  old = {**{k: v for k, v in added_fields().items() if k not in old and k in new}, **old}
  return [
      f'{k}: {old.get(k)!r} -> {new.get(k)!r}' for k in sorted(old.keys() | new.keys())
      if old.get(k) != new.get(k) and not resumable(k)
  ]


# What a run or a sweep writes in its workdir: all that --overwrite may delete.
WRITTEN = ('config.json', 'metrics.jsonl', 'summary.json', 'checkpoints', 'checkpoints-rejected',
           'sweep.json', 'base_config.json', 'results.csv', 'runs', 'table.md', 'figure.png',
           'figure.pdf', 'metrics.png', '.write_test')
# Files whose presence means a run has started in the workdir.
RUN_FILES = ('metrics.jsonl', 'checkpoints', 'results.csv', 'runs')


def _written_here(name: str) -> bool:
  return (name in WRITTEN or name == LOCK_NAME or name.startswith('events.out.tfevents.') or
          (name.startswith('.') and name.endswith('.tmp')))


def check_overwrite(root: pathlib.Path) -> None:
  """Refuses --overwrite of a workdir that holds anything runs do not write (reads only)."""
  foreign = sorted(p.name for p in root.iterdir() if not _written_here(p.name))
  if foreign:
    raise ConfigError(f'--overwrite would delete {root / foreign[0]}'
                      f'{f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""}, which no '
                      'run wrote: choose another workdir')


def _overwrite(root: pathlib.Path) -> None:
  """Empties a workdir of what runs write there, refusing if it holds anything else."""
  check_overwrite(root)
  for child in root.iterdir():
    if child.name != LOCK_NAME:
      shutil.rmtree(child) if child.is_dir() else child.unlink()


def refuse_sweep_run(workdir: str) -> None:
  """A single run may not write into a sweep's run directory: the sweep owns it."""
  root = pathlib.Path(workdir).absolute()
  if root.parent.name == 'runs' and (root.parent.parent / 'sweep.json').exists():
    raise ConfigError(f'--workdir {workdir} is a run of the sweep in {root.parent.parent}: rerun '
                      'that sweep, or choose another workdir')


def prepare_workdir(workdir: str, configs: dict[str, ml_collections.ConfigDict],
                    overwrite: bool) -> None:
  """Makes sure the (locked) `workdir` can be written and, if it holds a run, that it is this one.

  `configs` maps a JSON file name in the workdir to the config it must match. With `overwrite`,
  the workdir is emptied first of what runs write (never of anything else).
  """
  root = pathlib.Path(workdir)
  try:
    probe = root / '.write_test'
    probe.write_text('')
    probe.unlink()
  except OSError as e:
    raise ConfigError(f'--workdir {workdir} cannot be written ({e.strerror}): choose another '
                      'directory') from None
  if overwrite:
    _overwrite(root)
    return
  check_same_run(workdir, configs)


def check_same_run(workdir: str, configs: dict[str, ml_collections.ConfigDict]) -> None:
  """Refuses a workdir that holds a run of another config, or one without its config (reads
  only)."""
  root = pathlib.Path(workdir)
  started = [name for name in RUN_FILES if (root / name).exists()]
  for name, config in configs.items():
    path = root / name
    if not path.exists():
      if started:
        raise ConfigError(f'--workdir {workdir} holds {started[0]} but no {name}: restore it, or '
                          'use --overwrite to start the run over')
      continue
    try:
      old = json.loads(path.read_text())
      if not isinstance(old, dict):
        raise ValueError(f'a JSON {type(old).__name__}, not a config')
    except (OSError, ValueError) as e:
      raise ConfigError(f'{path} cannot be read ({e}): restore it, or use --overwrite to start '
                        'the run over') from None
    diffs = config_differences(old, json.loads(config.to_json()))
    if diffs:
      raise ConfigError(f'--workdir {workdir} holds a run of another config ({"; ".join(diffs)})'
                        ': use another workdir, or --overwrite to start it over')
