"""Checkpoints of the server state, verified when restored.

A checkpoint (orbax, one directory per round) holds two items: `state`, the state of every run as
host arrays named by their place in it ('server.params.Dense_0.kernel', 'server.optimizer.0.m...',
'client_states...', 'adaptive.mu': models, server optimizer and algorithm states, clients' states,
adaptive mu), and `meta`, a JSON record of the format version, the round, a fingerprint of the
config that made it, what the run had done so far (`progress`: program totals and round times, so a
resumed run's summary covers all its rounds) and a SHA-256 digest of all of it. orbax finalises a
checkpoint directory atomically, so the digest is there exactly when the rest is.

Restoring tries checkpoints newest first. One that cannot be read, does not match its digest or
was made by another config is reported by name and moved aside (to CHECKPOINTS-rejected/), and the
next older one is tried; with none left the run starts from round 0. Every random draw of a round
derives from (seed, round), so resuming from any checkpoint repeats what an uninterrupted run did.
"""
import dataclasses
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


def _why(e: Exception) -> str:
  """The reason in a few words: the OS's, if the error carries an OS error code."""
  code = re.search(r"os_error_code='?(\d+)", str(e))
  if code:
    return os.strerror(int(code.group(1)))
  return getattr(e, 'strerror', None) or f'{type(e).__name__}: {" ".join(str(e).split())[:100]}'


@dataclasses.dataclass(frozen=True)
class Restored:
  round: int
  state: dict  # Named host (NumPy) arrays: see flat_state; nested for a legacy checkpoint.
  progress: dict | None  # None for a checkpoint from before versioning.


def _as_host_arrays(path: pathlib.Path) -> dict:
  """An orbax PyTree item as NumPy arrays, whatever devices saved it."""
  checkpointer = ocp.PyTreeCheckpointer()
  metadata = checkpointer.metadata(path).item_metadata
  args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata.tree)
  return checkpointer.restore(path, restore_args=args)


class Checkpoints:
  """The latest `keep` states of a run (or of a chunk of a sweep's runs), made by the config whose
  fingerprint is `config`."""

  def __init__(self, directory: pathlib.Path, every: int, keep: int, config: str = ''):
    self.directory = directory.absolute()
    self.every, self.keep, self.config = every, keep, config
    self._manager = None  # Made at the first save, after restore() has set rejects aside.
    self.last_saved: int | None = None
    if self.directory.exists() and not self.directory.is_dir():
      raise CheckpointError(f'{self.directory} is not a directory: move it away (or use '
                            '--overwrite to start the run over)')

  def rounds(self) -> list[int]:
    """Rounds of the checkpoint directories on disk, oldest first (complete or not, valid or
    not)."""
    if not self.directory.is_dir():
      return []
    return sorted(int(p.name) for p in self.directory.iterdir() if _ROUND_NAME.fullmatch(p.name))

  def restore(self) -> Restored | None:
    """The newest checkpoint that verifies; unusable ones are reported and moved aside."""
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

  def _read(self, round_index: int) -> Restored:
    path = self.directory / str(round_index)
    where = f'checkpoint {path}'
    if (path / 'default').is_dir() and not (path / 'meta').exists():
      try:
        state = _as_host_arrays(path / 'default')
      except Exception as e:  # orbax, tensorstore and JSON each raise their own kinds.
        raise _Unusable(f'{where} cannot be read ({_why(e)})') from None
      logging.warning(
          '%s predates checkpoint digests and cannot be verified; restoring it '
          'anyway', where)
      return Restored(round_index, state, None)
    try:
      meta = ocp.Checkpointer(ocp.JsonCheckpointHandler(),
                              multiprocessing_options=_LEADER).restore(path / 'meta',
                                                                       args=ocp.args.JsonRestore())
      version = meta['format']
    except Exception as e:
      raise _Unusable(f'{where} has no readable digest ({_why(e)})') from None
    if not isinstance(version, int) or isinstance(version, bool):
      raise _Unusable(f'{where} has a malformed format field ({version!r})')
    if version > FORMAT_VERSION:
      raise CheckpointError(f'{where} has format version {version}, newer than this '
                            f'fedprox_jax reads ({FORMAT_VERSION}): upgrade fedprox_jax, or use '
                            'another workdir')
    try:
      state = ocp.StandardCheckpointer(multiprocessing_options=_LEADER).restore(path / 'state')
    except Exception as e:
      raise _Unusable(f'{where} cannot be read ({_why(e)})') from None
    try:
      intact = (meta['round'] == round_index and meta['sha256'] == digest(
          round_index, state, meta['progress'], meta.get('config', '')))
    except (KeyError, TypeError, ValueError):
      intact = False
    if not intact:
      raise _Unusable(f'{where} does not match its digest (altered or damaged)')
    if meta.get('config', '') != self.config:
      raise _Unusable(f'{where} was made by another config')
    return Restored(round_index, state, meta['progress'])

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
      self._manager.save(round_index,
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
    self.last_saved = round_index

  def close(self) -> None:
    if self._manager is not None:
      self._manager.close()
