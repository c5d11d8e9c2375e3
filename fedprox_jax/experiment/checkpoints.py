"""Checkpoints of the server state, verified when restored.

A checkpoint (orbax, one directory per round) holds two items: `state`, the state of every run as
host arrays named by their place in it ('server.params.Dense_0.kernel', 'server.optimizer.0.m...',
'client_states...', 'adaptive.mu': models, server optimizer and algorithm states, clients' states,
adaptive mu), and `meta`, a JSON record of the format version, the round, a fingerprint of the
config that made it, what the run had done so far (`progress`: program totals and round times, so a
resumed run's summary covers all its rounds) and a SHA-256 digest of all of it. orbax finalises a
checkpoint directory atomically, so the digest is there exactly when the rest is.

Restoring tries checkpoints newest first. One whose content is damaged (incomplete, unparsable,
or not matching its digest) is reported by name and moved aside (to CHECKPOINTS-rejected/), and the
next older one is tried; with none left the run starts from round 0. One that cannot be read right
now (permissions, an I/O error of the file system, too many open files, memory) stops the run with
the file and the OS's error, and is left where it is: nothing is known to be wrong with it. One that
verifies but was made by another config stops the run too: the workdir's config.json no longer
describes its checkpoints. Every random draw of a round derives from (seed, round), so resuming
from any checkpoint repeats what an uninterrupted run did.
"""
import dataclasses
import errno
import logging
import os
import pathlib
import re
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp

from fedprox_jax.errors import CheckpointError
from fedprox_jax.experiment.checkpoint_state import FORMAT_VERSION
from fedprox_jax.experiment.checkpoint_state import digest
from fedprox_jax.experiment.checkpoint_state import flat_state

# Version 1 (checkpoint_state.FORMAT_VERSION): items `state` (flat, named arrays) and `meta`.
# Checkpoints from before versioning hold one item, `default` (the models as {'params': ...,
# 'mu': ..., ...}), and no digest: they are restored with a warning that they cannot be verified.
# Checkpoints are the leader's alone (in a run of several processes, process 0 saves and restores,
# and hands the others what it restored): orbax then waits on no other process.
_LEADER = ocp.options.MultiprocessingOptions(primary_host=0, active_processes={0})
_ROUND_NAME = re.compile(r'0|[1-9][0-9]*')  # Only canonical names: '030' is not round 30.


class _Unusable(Exception):
  """This checkpoint cannot be restored (unreadable, incomplete, altered or foreign)."""


# OS errors that say a file cannot be read now, not that it is damaged.
_UNAVAILABLE = frozenset((errno.EACCES, errno.EPERM, errno.EIO, errno.EMFILE, errno.ENFILE,
                          errno.ENOMEM, errno.EAGAIN, errno.ETIMEDOUT, errno.ESTALE, errno.EBUSY,
                          errno.EINTR, errno.ENOLINK, errno.EREMOTEIO, errno.EHOSTDOWN))
# What a progress record holds (rounds.new_progress).
_PROGRESS = {
    'executed_steps': int,
    'real_steps': int,
    'wall_s': (int, float),
    'round_times': list,
    'num_lanes': int,
    'data': dict
}


def _os_error_code(e: BaseException) -> int | None:
  """The OS error code of `e` or of what it wraps (orbax and tensorstore wrap the OS's errors)."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno:
      return e.errno
    code = re.search(r"os_error_code='?(\d+)", str(e))
    if code:
      return int(code.group(1))
    e = e.__cause__ or e.__context__
  return None


def _unavailable(e: BaseException) -> bool:
  """Whether `e` says that the checkpoint cannot be read now, rather than that it is damaged."""
  return isinstance(e, MemoryError) or _os_error_code(e) in _UNAVAILABLE


def _why(e: Exception) -> str:
  """The reason in a few words: the OS's, if the error carries an OS error code."""
  code = _os_error_code(e)
  if code:
    return os.strerror(code)
  if isinstance(e, MemoryError):
    return 'out of memory'
  return getattr(e, 'strerror', None) or f'{type(e).__name__}: {" ".join(str(e).split())[:100]}'


@dataclasses.dataclass(frozen=True)
class Restored:
  round: int
  state: dict  # Named host (NumPy) arrays: see flat_state; nested for a legacy checkpoint.
  progress: dict | None  # None for a checkpoint from before versioning.
  legacy: bool = False  # From before versioning: one item, `default`, of nested models.


def _as_host_arrays(path: pathlib.Path) -> dict:
  """An orbax PyTree item as NumPy arrays, whatever devices saved it."""
  checkpointer = ocp.PyTreeCheckpointer()
  metadata = checkpointer.metadata(path).item_metadata
  args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata.tree)
  return checkpointer.restore(path, restore_args=args)


class Checkpoints:
  """The latest `keep` states of a run (or of a chunk of a sweep's runs), made by the config whose
  fingerprint is `config`; checkpoints that carry one of `also_accepted` (the same config's
  fingerprint as earlier releases computed it) are taken as made by it too."""

  def __init__(self,
               directory: pathlib.Path,
               every: int,
               keep: int,
               config: str = '',
               also_accepted: tuple[str, ...] = ()):
    self.directory = directory.absolute()
    self.every, self.keep, self.config = every, keep, config
    self._accepted = {config, *also_accepted}
    self._manager = None  # Made at the first save, after restore() has set rejects aside.
    self.last_saved: int | None = None
    if self.directory.exists() and not self.directory.is_dir():
      raise CheckpointError(f'{self.directory} is not a directory: move it away (or use '
                            '--overwrite to start the run over)')

  def rounds(self) -> list[int]:
    """Rounds of the checkpoint directories on disk, oldest first (complete or not, valid or
    not)."""
    try:
      if not self.directory.is_dir():
        return []
      names = [p.name for p in self.directory.iterdir()]
    except OSError as e:
      raise CheckpointError(f'{self.directory} cannot be listed ({e.strerror}): make it readable, '
                            'then rerun the same command') from None
    return sorted(int(name) for name in names if _ROUND_NAME.fullmatch(name))

  def restore(self) -> Restored | None:
    """The newest checkpoint that verifies; damaged ones are reported and moved aside."""
    rejected = 0
    for round_index in reversed(self.rounds()):
      try:
        restored = self._read(round_index)
      except _Unusable as e:
        rejected += 1
        logging.warning('%s; skipped (moved to %s)', e, self._reject(round_index))
        continue
      if rejected:
        logging.warning(
            'Resuming from the older checkpoint of round %d; the records after it '
            'are computed again', round_index)
      self.last_saved = round_index
      return restored
    if rejected:
      logging.warning('No checkpoint in %s could be verified: starting from round 0',
                      self.directory)
    return None

  def _unreadable(self, where: str, e: BaseException) -> Exception:
    """The error for a failed read: damage (the checkpoint goes aside) or, for a checkpoint that
    cannot be read now, a stop that leaves it where it is."""
    if _unavailable(e):
      return CheckpointError(f'{where} cannot be read now ({_why(e)}): fix what stops it (its '
                             'permissions, the file system, memory), then rerun the same command '
                             '(the checkpoint was left as it is)')
    return _Unusable(f'{where} cannot be read ({_why(e)})')

  def _read(self, round_index: int) -> Restored:
    path = self.directory / str(round_index)
    where = f'checkpoint {path}'
    if (path / 'default').is_dir() and not (path / 'meta').exists():
      try:
        state = _as_host_arrays(path / 'default')
      except Exception as e:  # orbax, tensorstore and JSON each raise their own kinds.
        raise self._unreadable(where, e) from None
      logging.warning(
          '%s predates checkpoint digests and cannot be verified; restoring it '
          'anyway', where)
      return Restored(round_index, state, None, legacy=True)
    try:
      meta = ocp.Checkpointer(ocp.JsonCheckpointHandler(),
                              multiprocessing_options=_LEADER).restore(path / 'meta',
                                                                       args=ocp.args.JsonRestore())
      version = meta['format']
    except Exception as e:
      error = self._unreadable(where, e)
      if isinstance(error, _Unusable):
        error = _Unusable(f'{where} has no readable digest ({_why(e)})')
      raise error from None
    if not isinstance(version, int) or isinstance(version, bool):
      raise _Unusable(f'{where} has a malformed format field ({version!r})')
    if version > FORMAT_VERSION:
      raise CheckpointError(f'{where} has format version {version}, newer than this '
                            f'fedprox_jax reads ({FORMAT_VERSION}): upgrade fedprox_jax, or use '
                            'another workdir')
    try:
      state = ocp.StandardCheckpointer(multiprocessing_options=_LEADER).restore(path / 'state')
    except Exception as e:
      raise self._unreadable(where, e) from None
    try:
      intact = (meta['round'] == round_index and meta['sha256'] == digest(
          round_index, state, meta['progress'], meta.get('config', '')))
    except (KeyError, TypeError, ValueError):
      intact = False
    if not intact:
      raise _Unusable(f'{where} does not match its digest (altered or damaged)')
    progress = meta['progress']
    if not (isinstance(progress, dict) and
            all(isinstance(progress.get(k), kinds) for k, kinds in _PROGRESS.items())):
      raise _Unusable(f'{where} has a malformed progress record')
    if meta.get('config', '') not in self._accepted:
      raise CheckpointError(
          f'{where} was made by another config than the one in the workdir\'s config.json (was '
          'config.json edited, or the checkpoint copied in from another run?): restore '
          'config.json, use another workdir, or --overwrite to start the run over')
    return Restored(round_index, state, progress)

  def _reject(self, round_index: int) -> pathlib.Path:
    aside = self.directory.with_name(self.directory.name + '-rejected')
    try:
      aside.mkdir(exist_ok=True)
      target, n = aside / str(round_index), 1
      while target.exists():
        target, n = aside / f'{round_index}.{n}', n + 1
      shutil.move(str(self.directory / str(round_index)), str(target))
    except OSError as e:
      raise CheckpointError(f'the unusable checkpoint {self.directory / str(round_index)} could '
                            f'not be moved to {aside} ({e.strerror}): move it away yourself, '
                            'then rerun the same command') from None
    return target

  def due(self, round_index: int, last: bool) -> bool:
    return round_index % self.every == 0 or last

  def save(self, round_index: int, state, progress: dict) -> None:
    """Saves `state` (a pytree of device or host arrays) as the checkpoint of `round_index`."""
    host = flat_state(state)
    meta = {
        'format': FORMAT_VERSION,
        'round': round_index,
        'config': self.config,
        'progress': progress,
        'sha256': digest(round_index, host, progress, self.config)
    }
    try:
      if self._manager is None:
        self.directory.mkdir(parents=True, exist_ok=True)  # (orbax's create=True is not for
        #                                                    one process of several.)
        self._manager = ocp.CheckpointManager(self.directory,
                                              options=ocp.CheckpointManagerOptions(
                                                  max_to_keep=self.keep,
                                                  enable_async_checkpointing=False,
                                                  multiprocessing_options=_LEADER,
                                                  create=False))
      saved = self._manager.save(round_index,
                                 args=ocp.args.Composite(state=ocp.args.StandardSave(host),
                                                         meta=ocp.args.JsonSave(meta)))
    except Exception as e:  # orbax wraps the OS's errors in its own kinds.
      for partial in self.directory.glob(f'{round_index}.orbax-checkpoint-tmp*'):
        shutil.rmtree(partial, ignore_errors=True)  # Nothing half-written stays.
      resume = (f'resume from the last checkpoint (round {self.last_saved})'
                if self.last_saved is not None else 'start again (no checkpoint yet)')
      raise CheckpointError(
          f'the checkpoint of round {round_index} could not be written to {self.directory} '
          f'({_why(e)}): free disk space or fix the directory, then rerun the same command to '
          f'{resume}') from None
    if not saved or round_index not in self._manager.all_steps():
      raise CheckpointError(
          f'the checkpoint of round {round_index} was not written to {self.directory} (orbax '
          f'declined it; it holds the rounds {self._manager.all_steps()}): move that directory '
          'away, or rerun with --overwrite to start the run over')
    self.last_saved = round_index

  def close(self) -> None:
    if self._manager is not None:
      self._manager.close()
