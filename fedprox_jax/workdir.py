"""A run's (or a sweep's) directory: one writer at a time, the same config throughout.

The lock is an OS file lock (flock) on WORKDIR/.lock, held for the whole run: the kernel releases
it when the process ends, however it ends, so a killed run never leaves a stale lock behind.
"""
import errno
import fcntl
import json
import os
import pathlib
import shutil

import ml_collections

from fedprox_jax.config_checks import ConfigError, flatten

LOCK_NAME = '.lock'
# Fields that may change between a run and its resumption: where things are read from and how
# the work is spread; more rounds extend a finished run.
_RESUMABLE_CHANGES = ('num_rounds', 'data.tfds_data_dir', 'data.manual_dir', 'data.cache_dir',
                      'compute.')


class WorkdirBusy(ConfigError):
  """Another process holds the workdir."""


def write_atomically(path: pathlib.Path, content: str | bytes) -> None:
  """Writes `content` to `path` so that a reader (or a kill) sees the old file or the new, never
  half of one; a failed write leaves the old file and no temporary one."""
  tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
  try:
    with open(tmp, 'wb') as f:
      f.write(content.encode() if isinstance(content, str) else content)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise


class WorkdirLock:
  """Holds an exclusive lock on a workdir (creating it) while the `with` block runs."""

  def __init__(self, workdir: str):
    self.root = pathlib.Path(workdir)
    self._fd = None

  def __enter__(self) -> 'WorkdirLock':
    try:
      self.root.mkdir(parents=True, exist_ok=True)
      fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise ConfigError(f'--workdir {self.root} cannot be written ({e.strerror}): choose another '
                        'directory') from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      holder = os.read(fd, 32).decode(errors='replace').strip() or 'unknown'
      os.close(fd)
      if e.errno not in (errno.EAGAIN, errno.EACCES):
        raise ConfigError(f'--workdir {self.root} cannot be locked ({e.strerror}): choose a '
                          'directory on a local file system') from None
      raise WorkdirBusy(f'--workdir {self.root} is in use by another run (pid {holder}): wait '
                        'for it to finish, or choose another workdir') from None
    os.ftruncate(fd, 0)
    os.write(fd, f'{os.getpid()}\n'.encode())
    self._fd = fd
    return self

  def __exit__(self, *exc) -> None:
    if self._fd is not None:
      os.close(self._fd)  # Releases the lock; the file stays (removing it would race).
      self._fd = None


def config_differences(old: dict, new: dict) -> list[str]:
  """'field: old -> new' for each field that differs and may not change on resumption."""
  old, new = flatten(old), flatten(new)
  return [f'{k}: {old.get(k)!r} -> {new.get(k)!r}' for k in sorted(old.keys() | new.keys())
          if old.get(k) != new.get(k) and not k.startswith(_RESUMABLE_CHANGES)]


def prepare_workdir(workdir: str, configs: dict[str, ml_collections.ConfigDict],
                    overwrite: bool) -> None:
  """Makes sure the (locked) `workdir` can be written and, if it holds a run, that it is this one.

  `configs` maps a JSON file name in the workdir to the config it must match. With `overwrite`,
  the workdir is emptied first (all but its lock).
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
    for child in root.iterdir():
      if child.name != LOCK_NAME:
        shutil.rmtree(child) if child.is_dir() else child.unlink()
    return
  for name, config in configs.items():
    path = root / name
    if path.exists():
      try:
        old = json.loads(path.read_text())
      except (OSError, ValueError) as e:
        raise ConfigError(f'{path} cannot be read ({e}): restore it, or use --overwrite to start '
                          'the run over') from None
      diffs = config_differences(old, json.loads(config.to_json()))
      if diffs:
        raise ConfigError(f'--workdir {workdir} holds a run of another config ({"; ".join(diffs)})'
                          ': use another workdir, or --overwrite to start it over')
